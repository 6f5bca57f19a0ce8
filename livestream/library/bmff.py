"""ISO-BMFF (MP4) boxes: where each one starts and ends, in a buffer or in a file.

A box is a 32-bit size and a four-character type, then its payload. Size 1 means a 64-bit
``largesize`` follows the type; size 0 means the box runs to the end of the buffer or file,
which a writer that has not finished leaves (:attr:`Box.open_ended` says so, for the readers
to whom that is a box cut short). A walk ends at the first box that does not fit: one cut
short, or one whose size is smaller than its own header. Whatever follows it cannot be found.

Media info (``mediainfo``), the trimming of a cut-off recording (``recording.fragments``) and
the benchmarks read MP4s through this one walker. Pure: no Twisted.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

_HEADER = struct.Struct(">I4s")
_LARGE = struct.Struct(">Q")
_LONGEST_HEADER = _HEADER.size + _LARGE.size


@dataclass(frozen=True, slots=True)
class Box:
    """One box: ``start`` is where its header begins, ``payload`` where its payload begins,
    ``end`` where it ends (offsets into the buffer or file walked)."""

    type: bytes
    start: int
    payload: int
    end: int
    open_ended: bool = False


def _box(head: bytes, offset: int, limit: int) -> Box | None:
    """The box whose header begins ``head`` (up to 16 bytes read at ``offset``), in a buffer or
    file that ends at ``limit``; None if it does not fit."""
    if len(head) < _HEADER.size:
        return None
    size, kind = _HEADER.unpack_from(head)
    length = _HEADER.size
    if size == 1:
        if len(head) < _LONGEST_HEADER:
            return None
        (size,) = _LARGE.unpack_from(head, _HEADER.size)
        length = _LONGEST_HEADER
    elif size == 0:
        return Box(kind, offset, offset + length, limit, open_ended=True)
    if size < length or offset + size > limit:
        return None
    return Box(kind, offset, offset + length, offset + size)


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes one after another in ``data[start:end]``: the top level of a buffer, or the
    children of a box when given its payload's span."""
    end = len(data) if end is None else end
    offset = start
    while (box := _box(data[offset : min(offset + _LONGEST_HEADER, end)], offset, end)) is not None:
        yield box
        offset = box.end


def child(data: bytes, start: int, end: int, kind: bytes) -> Box | None:
    """The first box of type ``kind`` in ``data[start:end]``."""
    return next((box for box in boxes(data, start, end) if box.type == kind), None)


def descend(data: bytes, start: int, end: int, *kinds: bytes) -> Box | None:
    """The box found by taking the first child of each type in ``kinds`` in turn, from
    ``data[start:end]`` down: ``descend(moov, 0, len(moov), b"trak", b"mdia")``."""
    box = None
    for kind in kinds:
        if box is not None:
            start, end = box.payload, box.end
        box = child(data, start, end, kind)
        if box is None:
            return None
    return box


def file_boxes(f: BinaryIO, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes one after another in an open file, from ``start`` to ``end`` (its size, unless
    given), reading only their headers. The caller may read ``f`` between boxes."""
    end = os.fstat(f.fileno()).st_size if end is None else end
    offset = start
    while True:
        f.seek(offset)
        box = _box(f.read(min(_LONGEST_HEADER, max(0, end - offset))), offset, end)
        if box is None:
            return
        yield box
        offset = box.end
