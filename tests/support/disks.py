"""Disks that fail: a write that fails where the recorder makes it."""

from __future__ import annotations

import os


class FailingWrites:
    """A recorder's file whose next write fails with ``code`` (say EIO) and whose later writes
    go through: no real device can be made to fail on demand here, so the fault is injected
    where the recorder writes, with the error the kernel would give. Everything else is the
    real file's."""

    def __init__(self, real, code: int) -> None:
        self._real = real
        self._code: int | None = code

    def write(self, data) -> int:
        if self._code is not None:
            code, self._code = self._code, None
            raise OSError(code, os.strerror(code), self._real.name)
        return self._real.write(data)

    def __getattr__(self, name: str):
        return getattr(self._real, name)
