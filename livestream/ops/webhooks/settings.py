"""What ``--webhook`` and ``--webhook-secret-file`` give the webhooks: where to POST, and the
key that signs every request."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path

from livestream.auth.tokens import MIN_SECRET_BYTES, KeyFileError

# Standard Webhooks' mark of a signing secret: the key follows in base64.
SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class WebhookSettings:
    urls: tuple[str, ...] = ()
    secret: bytes = field(default=b"", repr=False)


def read_signing_key(path: str | Path) -> bytes:
    """The HMAC key in ``--webhook-secret-file``, written as Standard Webhooks write a secret:
    ``whsec_`` and the key in base64. A receiver then gives the file's very text to its
    library (``standardwebhooks.Webhook``), which decodes it to the same key.

    Anything else is refused rather than taken as the key itself: a file made for the old
    ``X-Livestream-Signature`` (whose raw text was the key) would otherwise start the daemon
    signing with a key no Standard Webhooks receiver derives from that file."""
    make = f"make one: echo {SECRET_PREFIX}$(head -c 32 /dev/urandom | base64) > {path}"
    try:
        text = Path(path).read_bytes().strip()
    except OSError as e:
        raise KeyFileError(f"cannot read the secret file {path}: {e.strerror or e}") from None
    if not text.startswith(SECRET_PREFIX.encode("ascii")):
        raise KeyFileError(f"the secret file {path} does not start with {SECRET_PREFIX}; {make}")
    encoded = text[len(SECRET_PREFIX) :]
    try:
        # Padding may be left off, as the receivers' libraries allow.
        key = base64.b64decode(encoded + b"=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise KeyFileError(
            f"the secret file {path} holds no base64 after {SECRET_PREFIX}; {make}"
        ) from None
    if len(key) < MIN_SECRET_BYTES:
        raise KeyFileError(
            f"the secret file {path} holds a {len(key)}-byte key; it needs at least "
            f"{MIN_SECRET_BYTES} ({make})"
        )
    return key
