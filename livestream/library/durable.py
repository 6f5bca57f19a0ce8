"""Writing a small file so that, after a crash or a power cut, it is whole or absent.

The bytes go to a dot-named temp file beside the target (listings and scans skip dot-names),
which is synced and renamed into place; the directory is synced last, so the rename itself
survives a power cut. The webhook queue and the uploader's markers are written this way: each
is a promise the daemon must still find at its next start.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` in full or not at all: temp file, fsync, rename, fsync of the
    directory. A crash before the rename leaves only the dot-named temp file."""
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
