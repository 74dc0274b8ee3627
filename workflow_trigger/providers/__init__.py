"""One module per platform; each turns intents into requests and answers into models."""

from .awaitstep import AwaitStep
from .awaitstep_function import AwaitStepFunction
from .base import Provider, ProviderBase, Request, Response
from .codika import Codika
from .pinkfish import Pinkfish
from .runs_api import RunsApi

__all__ = [
    "AwaitStep",
    "AwaitStepFunction",
    "Codika",
    "Pinkfish",
    "Provider",
    "ProviderBase",
    "Request",
    "Response",
    "RunsApi",
]
