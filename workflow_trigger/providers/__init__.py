"""One module per platform; each turns intents into requests and answers into models."""

from .base import Provider, ProviderBase, Request, Response
from .codika import Codika

__all__ = ["Codika", "Provider", "ProviderBase", "Request", "Response"]
