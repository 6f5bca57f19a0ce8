"""How a receiver knows a webhook request is the daemon's and fresh: its headers, and the
HMAC-SHA256 signature over the timestamp and the body (the README's Webhooks section shows a
receiver checking it)."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Livestream-Signature"
TIMESTAMP_HEADER = "X-Livestream-Timestamp"
EVENT_HEADER = "X-Livestream-Event"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 over ``<timestamp>.<body>``, so a captured
    request cannot be replayed later with a fresh timestamp."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: bytes, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one attempt to deliver event ``event_id`` with ``body``."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "livestream-webhook",
        EVENT_HEADER: event_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
