"""Find where a fragmented MP4 stops being whole, so a cut-off file can still be published.

The encoder's output ends mid-box when the disk fills or the daemon is killed while ffmpeg
writes. Players and stream copies choke on a half-written fragment (a truncated ``mdat`` decodes
as invalid data), so before publishing, the file is cut back to the end of its last complete
fragment. Cutting in place needs no free space, which matters because a full disk is one of the
ways to get here.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from livestream.library import bmff

_COUNT = struct.Struct(">I")
# A moof is a few hundred bytes (one run of at most a few hundred samples); one larger than
# this is read only this far, its runs beyond it uncounted.
MAX_MOOF = 1 << 20


@dataclass(frozen=True)
class Whole:
    """The complete part of a fragmented MP4: its length in bytes, its fragments, and the
    samples (frames, or audio packets) those fragments hold."""

    length: int = 0
    fragments: int = 0
    samples: int = 0


def measure(path: Path) -> Whole:
    """The bytes up to the end of the last complete fragment, and what they hold.

    A fragment is a ``moof`` followed by its ``mdat``. Complete boxes between or after fragments
    (the ``mfra`` index a finished encoder appends) belong to the whole; a ``moof`` without its
    ``mdat``, or a box cut short, does not. The samples are counted from each ``moof``'s track
    runs, read as the walk passes them: what a replaced encoder's file holds tells where its
    successor takes over (:mod:`livestream.recording.encoder`).
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return Whole()
    with f:
        whole = fragments = samples = pending = 0
        in_fragment = False
        for box in bmff.file_boxes(f):
            if box.open_ended:
                break  # size 0, "to the end": a live encoder never writes it, so it is cut short
            if box.type == b"moof":
                in_fragment = True
                f.seek(box.payload)
                pending = _run_samples(f.read(min(box.end - box.payload, MAX_MOOF)))
            elif box.type == b"mdat" and in_fragment:
                in_fragment = False
                fragments += 1
                samples += pending
            if not in_fragment:
                whole = box.end
        return Whole(whole, fragments, samples)


def _run_samples(moof: bytes) -> int:
    """The samples of a ``moof``'s payload: the sample counts of every ``trun`` of every
    ``traf`` (14496-12 §8.8.8: version and flags, then a 32-bit count)."""
    count = 0
    for traf in bmff.boxes(moof):
        if traf.type != b"traf":
            continue
        for run in bmff.boxes(moof, traf.payload, traf.end):
            if run.type == b"trun" and run.end - run.payload >= 8:
                count += _COUNT.unpack_from(moof, run.payload + 4)[0]
    return count


def whole_length(path: Path) -> tuple[int, int]:
    """``(length, fragments)`` of :func:`measure`."""
    whole = measure(path)
    return whole.length, whole.fragments


def trim_measured(path: Path) -> tuple[Whole, int]:
    """Cut ``path`` back to its last complete fragment; return what is kept and the bytes cut.

    A file without a complete fragment is left as it is, for the caller to discard.
    """
    whole = measure(path)
    if not whole.fragments:
        return whole, 0
    cut = os.path.getsize(path) - whole.length
    if cut:
        os.truncate(path, whole.length)
    return whole, cut


def trim(path: Path) -> tuple[int, int]:
    """:func:`trim_measured` as ``(fragments kept, bytes cut)``."""
    whole, cut = trim_measured(path)
    return whole.fragments, cut
