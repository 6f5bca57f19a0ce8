"""A growing fragmented MP4 read from where the last read stopped: its init segment, then each
fragment once its ``mdat`` is whole.

The writer (an encoder, or the daemon itself) only appends, so what was read stays true; a box
not yet whole is read again at the next call. The file is held open, so a file renamed or
removed under it (the publish removes the temp file) is still read to its end and served.
Each call reads at most :data:`MAX_BOXES` box headers, so a long recording met for the first
time is caught up over several calls instead of in one long one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from livestream.hls import fmp4
from livestream.library import bmff

MAX_BOXES = 2048
# The init segment (ftyp and moov) and a moof are small; larger ones are not a live fragment.
MAX_INIT = 1 << 20
MAX_MOOF = 1 << 20


@dataclass(frozen=True)
class Fragment:
    """A whole ``moof`` and ``mdat``: where they lie in the file, and what the ``moof`` says."""

    offset: int
    length: int
    info: fmp4.FragmentInfo


class FileTail:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._offset = 0
        self.init: bytes | None = None
        self.track: fmp4.TrackInfo | None = None

    def read(self) -> list[Fragment]:
        """The fragments made whole since the last call. Raises :class:`fmp4.BadFragment` for a
        file that is not the fragmented MP4 it should be."""
        if self._file is None:
            try:
                # Unbuffered: each read is of the file as it is now, not of a buffer of before.
                self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 (held open)
            except FileNotFoundError:
                return []
        found: list[Fragment] = []
        offset, moof = self._offset, None
        for count, box in enumerate(bmff.file_boxes(self._file, offset)):
            if box.open_ended or count >= MAX_BOXES:
                break
            if box.type == b"moof":
                if box.end - box.start > MAX_MOOF:
                    raise fmp4.BadFragment("a moof too large for a live fragment")
                if self.track is None:
                    self._read_init(box.start)
                assert self.track is not None
                moof = (box, fmp4.read_moof(self.pread(box.start, box.end - box.start), self.track))
                continue
            if box.type == b"mdat" and moof is not None:
                start, info = moof[0].start, moof[1]
                found.append(Fragment(start, box.end - start, info))
                moof = None
            elif moof is not None:
                raise fmp4.BadFragment(f"a {box.type!r} between a moof and its mdat")
            offset = box.end
        self._offset = offset
        return found

    def _read_init(self, end: int) -> None:
        if end > MAX_INIT:
            raise fmp4.BadFragment("an init segment too large")
        self.init = self.pread(0, end)
        self.track = fmp4.read_init(self.init)

    def pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (of what :meth:`read` has found whole)."""
        if self._file is None:
            raise ValueError("read from a file not opened")
        data = os.pread(self._file.fileno(), length, offset)
        if len(data) != length:
            raise fmp4.BadFragment("the file is shorter than what was read of it")
        return data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
