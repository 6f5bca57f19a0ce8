"""Duration and frame or sample counts of finished recordings, read from their headers.

The details route answers for every recording at once, so this must cost a few small reads per
file and never a process: a WAV's sizes are in its header, and an MP4's in its ``moov`` box (the
track's ``mdhd`` timescale and duration, the ``stsz`` sample count). A fragmented MP4 (published
as it is when the faststart copy fails) keeps its counts in each fragment's ``trun`` instead.
Results are cached by (path, mtime, size): published files do not change.

Pure: no Twisted. Anything malformed gives ``None`` for what cannot be read, never an exception.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_HEADER = struct.Struct(">I4s")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
# A moov larger than this is not one of ours (4 h at 120 fps needs about 10 MB).
MAX_MOOV = 64 << 20
# Bigger than any moof this daemon's encoder writes; a bogus size ends the walk.
MAX_MOOF = 1 << 20


@dataclass(frozen=True)
class Info:
    """``count`` is video frames or audio samples; either field is None when unknown."""

    duration: float | None
    count: int | None


UNKNOWN = Info(None, None)


def wav_info(path: Path) -> Info:
    """Samples from the ``fmt `` block size and the ``data`` chunk (bounded by the file)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return UNKNOWN
            rate = block = None
            offset = 12
            while offset + 8 <= size:
                f.seek(offset)
                kind, length = struct.unpack("<4sI", f.read(8))
                if kind == b"fmt ":
                    fmt = f.read(16)
                    if len(fmt) < 16:
                        return UNKNOWN
                    _, _, rate, _, block = struct.unpack("<HHIIH", fmt[:14])
                elif kind == b"data":
                    if not rate or not block:
                        return UNKNOWN
                    samples = min(length, size - offset - 8) // block
                    return Info(samples / rate, samples)
                offset += 8 + length + (length & 1)
    except (OSError, struct.error):
        pass
    return UNKNOWN


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = _HEADER.unpack_from(data, offset)
        head = 8
        if size == 1:
            if offset + 16 > end:
                return
            (size,) = _U64.unpack_from(data, offset + 8)
            head = 16
        elif size == 0:
            size = end - offset
        if size < head or offset + size > end:
            return
        yield kind, offset + head, offset + size
        offset += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    return next(((s, e) for k, s, e in _boxes(data, start, end) if k == kind), None)


def _path(data: bytes, start: int, end: int, *kinds: bytes) -> tuple[int, int] | None:
    span: tuple[int, int] | None = (start, end)
    for kind in kinds:
        span = _child(data, span[0], span[1], kind) if span else None
    return span


@dataclass(frozen=True)
class _Track:
    track_id: int | None
    timescale: int
    duration: int
    samples: int
    # From mvex/trex, for fragments whose tfhd/trun do not say.
    default_duration: int | None


def _video_track(moov: bytes) -> _Track | None:
    """The first track whose handler is ``vide``."""
    defaults: dict[int, int] = {}
    mvex = _child(moov, 0, len(moov), b"mvex")
    if mvex:
        for kind, s, e in _boxes(moov, *mvex):
            if kind == b"trex" and e - s >= 24:
                track_id, _, duration = struct.unpack_from(">III", moov, s + 4)
                defaults[track_id] = duration
    for kind, s, e in _boxes(moov):
        if kind != b"trak":
            continue
        hdlr = _path(moov, s, e, b"mdia", b"hdlr")
        if not hdlr or moov[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
            continue
        mdhd = _path(moov, s, e, b"mdia", b"mdhd")
        if not mdhd:
            return None
        m = mdhd[0]
        if moov[m] == 1 and mdhd[1] - m >= 32:
            timescale, duration = struct.unpack_from(">IQ", moov, m + 20)
        elif mdhd[1] - m >= 20:
            timescale, duration = struct.unpack_from(">II", moov, m + 12)
        else:
            return None
        tkhd = _path(moov, s, e, b"tkhd")
        track_id = None
        if tkhd:
            at = tkhd[0] + (20 if moov[tkhd[0]] == 1 else 12)
            if at + 4 <= tkhd[1]:
                (track_id,) = _U32.unpack_from(moov, at)
        samples = 0
        stbl = _path(moov, s, e, b"mdia", b"minf", b"stbl")
        if stbl:
            for sk, ss, se in _boxes(moov, *stbl):
                if sk in (b"stsz", b"stz2") and se - ss >= 12:
                    (samples,) = _U32.unpack_from(moov, ss + 8)
        return _Track(track_id, timescale, duration, samples, defaults.get(track_id))
    return None


def _header(f, offset: int, size: int) -> tuple[int, bytes, int] | None:
    """(box size, type, header length) of the box at ``offset``; None if it does not fit."""
    f.seek(offset)
    raw = f.read(16)
    if len(raw) < 8:
        return None
    box_size, kind = _HEADER.unpack_from(raw)
    head = 8
    if box_size == 1:
        if len(raw) < 16:
            return None
        (box_size,) = _U64.unpack_from(raw, 8)
        head = 16
    elif box_size == 0:
        box_size = size - offset
    if box_size < head or offset + box_size > size:
        return None
    return box_size, kind, head


def _fragments(f, size: int, start: int, track: _Track) -> tuple[int, int | None]:
    """Samples and total duration (None if some sample's duration is not given) of ``track`` in
    the ``moof`` boxes from ``start`` on."""
    samples, total = 0, 0
    known = True
    offset = start
    while (found := _header(f, offset, size)) is not None:
        box_size, kind, _ = found
        if kind == b"moof" and box_size <= MAX_MOOF:
            f.seek(offset)
            moof = f.read(box_size)
            for tk, ts, te in _boxes(moof, 8):
                if tk != b"traf":
                    continue
                n, d = _traf(moof, ts, te, track)
                samples += n
                if d is None:
                    known = False
                else:
                    total += d
        offset += box_size
    return samples, total if known else None


def _traf(moof: bytes, start: int, end: int, track: _Track) -> tuple[int, int | None]:
    default = track.default_duration
    samples, total = 0, 0
    known = True
    for kind, s, e in _boxes(moof, start, end):
        if kind == b"tfhd" and e - s >= 8:
            flags = int.from_bytes(moof[s + 1 : s + 4], "big")
            (track_id,) = _U32.unpack_from(moof, s + 4)
            if track.track_id is not None and track_id != track.track_id:
                return 0, 0
            at = s + 8 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
            if flags & 0x8 and at + 4 <= e:
                (default,) = _U32.unpack_from(moof, at)
        elif kind == b"trun" and e - s >= 8:
            flags = int.from_bytes(moof[s + 1 : s + 4], "big")
            (count,) = _U32.unpack_from(moof, s + 4)
            samples += count
            at = s + 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
            stride = 4 * bin(flags & 0xF00).count("1")
            if flags & 0x100:
                if at + count * stride > e:
                    known = False
                    continue
                total += sum(
                    _U32.unpack_from(moof, at + i * stride)[0] for i in range(count)
                )
            elif default is not None:
                total += count * default
            else:
                known = False
    return samples, total if known else None


def mp4_info(path: Path) -> Info:
    """Frames and duration of the video track: from ``moov`` for a whole MP4, from the
    fragments for a fragmented one."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            offset = 0
            moov_end = None
            track = None
            while (found := _header(f, offset, size)) is not None:
                box_size, kind, head = found
                if kind == b"moov":
                    if box_size > MAX_MOOV:
                        return UNKNOWN
                    f.seek(offset + head)
                    track = _video_track(f.read(box_size - head))
                    moov_end = offset + box_size
                    break
                offset += box_size
            if track is None or moov_end is None or not track.timescale:
                return UNKNOWN
            if track.samples:
                return Info(track.duration / track.timescale, track.samples)
            samples, duration = _fragments(f, size, moov_end, track)
    except (OSError, struct.error):
        return UNKNOWN
    return Info(None if duration is None else duration / track.timescale, samples)


class InfoCache:
    """What :func:`mp4_info`/:func:`wav_info` said about each file, while it is unchanged.

    :meth:`prune` keeps only the files of the last listing, so the cache never outgrows the
    media tree.
    """

    def __init__(self) -> None:
        self._known: dict[Path, tuple[int, int, Info]] = {}

    def get(self, path: Path, mtime_ns: int, size: int) -> Info:
        cached = self._known.get(path)
        if cached is not None and cached[:2] == (mtime_ns, size):
            return cached[2]
        info = wav_info(path) if path.suffix == ".wav" else mp4_info(path)
        self._known[path] = (mtime_ns, size, info)
        return info

    def prune(self, keep: set[Path]) -> None:
        for path in self._known.keys() - keep:
            del self._known[path]
