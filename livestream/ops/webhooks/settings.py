"""What ``--webhook`` and ``--webhook-secret-file`` give the webhooks: where to POST, and the
key that signs every request."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WebhookSettings:
    urls: tuple[str, ...] = ()
    secret: bytes = field(default=b"", repr=False)
