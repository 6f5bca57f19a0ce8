"""The SHA-256 of a file, read in blocks so a recording of any length costs little memory.

Webhooks tell receivers each recording's digest; the uploader stores it in the object's
metadata to know its own object again after a crash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20


def sha256_of(path: Path) -> tuple[int, str]:
    """``(bytes read, hex SHA-256)`` of the file at ``path``; OSError if it cannot be read."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()
