"""Standard Webhooks signatures (https://www.standardwebhooks.com), both directions.

A signed request carries three headers: ``webhook-id``, ``webhook-timestamp``
(Unix seconds) and ``webhook-signature``, a space-separated list of
``v1,<base64>`` entries (several during key rotation). Each signature is
HMAC-SHA256 over ``"{id}.{timestamp}.{raw body}"``, keyed with the
base64-decoded secret that follows ``whsec_``. Receivers reject timestamps more
than five minutes from their clock, in either direction, against replays.

:func:`sign_webhook` and :func:`webhook_headers` let tests send signed requests;
:func:`verify_webhook` is what the emulator's routes run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping

__all__ = [
    "SIGNATURE_HEADERS",
    "WebhookSignatureError",
    "sign_webhook",
    "verify_webhook",
    "webhook_headers",
]

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
TOLERANCE_SECONDS = 5 * 60


class WebhookSignatureError(ValueError):
    """A signed request that does not verify; the message says why, without secrets."""


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign_webhook(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``v1,<base64>`` signature of ``body`` for ``msg_id`` at ``timestamp``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(
    secret: str, body: bytes, *, msg_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """The three headers signing ``body`` (a fresh id and the current time by default)."""
    msg_id = msg_id if msg_id is not None else f"msg_{uuid.uuid4().hex}"
    timestamp = timestamp if timestamp is not None else int(time.time())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_webhook(secret, msg_id, timestamp, body),
    }


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE_SECONDS,
) -> None:
    """Raise :class:`WebhookSignatureError` unless ``headers`` sign ``body`` with ``secret``.

    ``headers`` must look names up case-insensitively (aiohttp's do).
    """
    msg_id, timestamp, signatures = (headers.get(name) for name in SIGNATURE_HEADERS)
    if not msg_id or not timestamp or not signatures:
        raise WebhookSignatureError(
            "Webhook signature headers are incomplete: webhook-id, webhook-timestamp "
            "and webhook-signature are all required"
        )
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise WebhookSignatureError("The webhook-timestamp header is not a Unix timestamp")
    sent_at = int(timestamp)
    now = time.time() if now is None else now
    if abs(now - sent_at) > tolerance:
        raise WebhookSignatureError(
            "The webhook-timestamp header is more than 5 minutes from the current time"
        )
    expected = sign_webhook(secret, msg_id, timestamp, body).encode()
    for candidate in signatures.split():
        # Entries of other versions ("v1a,...") are skipped, as the spec says.
        if candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected):
            return
    raise WebhookSignatureError(
        "The webhook signature does not match: no v1 signature verifies with the signing secret"
    )
