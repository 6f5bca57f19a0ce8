"""How a receiver knows a webhook request is the daemon's and fresh: the Standard Webhooks
headers (https://www.standardwebhooks.com/), so any of that convention's libraries verifies
them and nobody has to copy our code (the README's Webhooks section shows one doing it)."""

from __future__ import annotations

import base64
import hashlib
import hmac

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def sign(key: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``v1,`` and the base64 HMAC-SHA256 over
    ``<id>.<timestamp>.<body>``. With the time signed, a captured request cannot be replayed
    later; with the id signed, it cannot be passed off as another event."""
    mac = hmac.new(key, f"{event_id}.{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def signed_headers(key: bytes, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one attempt to deliver event ``event_id`` with ``body``. The id is the
    event's, the same on every retry and after a restart, so receivers deduplicate by it; the
    timestamp is the attempt's, so a retry days later is still fresh."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "livestream-webhook",
        ID_HEADER: event_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(key, event_id, timestamp, body),
    }
