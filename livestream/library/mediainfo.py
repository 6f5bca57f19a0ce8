"""Duration and frame or sample counts of finished recordings, read from their headers.

The details route answers for every recording at once, so this must cost a few small reads per
file and never a process: a WAV's sizes are in its header, and an MP4's in its ``moov`` box (the
track's ``mdhd`` timescale and duration, the ``stsz`` sample count). A fragmented MP4 (published
as it is when the faststart copy fails) keeps its counts in each fragment's ``trun`` instead.
The index reads each file once (published files do not change).

Pure: no Twisted. Anything malformed gives ``None`` for what cannot be read, never an exception.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from livestream.library.bmff import boxes, child, descend, file_boxes
from livestream.wire.kinds import VIDEO

_U32 = struct.Struct(">I")
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
    mvex = child(moov, 0, len(moov), b"mvex")
    if mvex:
        for trex in boxes(moov, mvex.payload, mvex.end):
            if trex.type == b"trex" and trex.end - trex.payload >= 24:
                track_id, _, duration = struct.unpack_from(">III", moov, trex.payload + 4)
                defaults[track_id] = duration
    for trak in boxes(moov):
        if trak.type != b"trak":
            continue
        s, e = trak.payload, trak.end
        hdlr = descend(moov, s, e, b"mdia", b"hdlr")
        if not hdlr or moov[hdlr.payload + 8 : hdlr.payload + 12] != b"vide":
            continue
        mdhd = descend(moov, s, e, b"mdia", b"mdhd")
        if not mdhd:
            return None
        m = mdhd.payload
        if moov[m] == 1 and mdhd.end - m >= 32:
            timescale, duration = struct.unpack_from(">IQ", moov, m + 20)
        elif mdhd.end - m >= 20:
            timescale, duration = struct.unpack_from(">II", moov, m + 12)
        else:
            return None
        tkhd = descend(moov, s, e, b"tkhd")
        track_id = None
        if tkhd:
            at = tkhd.payload + (20 if moov[tkhd.payload] == 1 else 12)
            if at + 4 <= tkhd.end:
                (track_id,) = _U32.unpack_from(moov, at)
        samples = 0
        stbl = descend(moov, s, e, b"mdia", b"minf", b"stbl")
        if stbl:
            for table in boxes(moov, stbl.payload, stbl.end):
                if table.type in (b"stsz", b"stz2") and table.end - table.payload >= 12:
                    (samples,) = _U32.unpack_from(moov, table.payload + 8)
        return _Track(track_id, timescale, duration, samples, defaults.get(track_id))
    return None


def _fragments(f: BinaryIO, size: int, start: int, track: _Track) -> tuple[int, int | None]:
    """Samples and total duration (None if some sample's duration is not given) of ``track`` in
    the ``moof`` boxes from ``start`` on."""
    samples, total = 0, 0
    known = True
    for box in file_boxes(f, start, size):
        if box.type == b"moof" and box.end - box.start <= MAX_MOOF:
            f.seek(box.start)
            moof = f.read(box.end - box.start)
            for traf in boxes(moof, box.payload - box.start):
                if traf.type != b"traf":
                    continue
                n, d = _traf(moof, traf.payload, traf.end, track)
                samples += n
                if d is None:
                    known = False
                else:
                    total += d
    return samples, total if known else None


def _traf(moof: bytes, start: int, end: int, track: _Track) -> tuple[int, int | None]:
    default = track.default_duration
    samples, total = 0, 0
    known = True
    for box in boxes(moof, start, end):
        s, e = box.payload, box.end
        if box.type == b"tfhd" and e - s >= 8:
            flags = int.from_bytes(moof[s + 1 : s + 4], "big")
            (track_id,) = _U32.unpack_from(moof, s + 4)
            if track.track_id is not None and track_id != track.track_id:
                return 0, 0
            at = s + 8 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
            if flags & 0x8 and at + 4 <= e:
                (default,) = _U32.unpack_from(moof, at)
        elif box.type == b"trun" and e - s >= 8:
            flags = int.from_bytes(moof[s + 1 : s + 4], "big")
            (count,) = _U32.unpack_from(moof, s + 4)
            samples += count
            at = s + 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
            stride = 4 * bin(flags & 0xF00).count("1")
            if flags & 0x100:
                if at + count * stride > e:
                    known = False
                    continue
                total += sum(_U32.unpack_from(moof, at + i * stride)[0] for i in range(count))
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
            moov_end = None
            track = None
            for box in file_boxes(f, 0, size):
                if box.type == b"moov":
                    if box.end - box.start > MAX_MOOV:
                        return UNKNOWN
                    f.seek(box.payload)
                    track = _video_track(f.read(box.end - box.payload))
                    moov_end = box.end
                    break
            if track is None or moov_end is None or not track.timescale:
                return UNKNOWN
            if track.samples:
                return Info(track.duration / track.timescale, track.samples)
            samples, duration = _fragments(f, size, moov_end, track)
    except (OSError, struct.error):
        return UNKNOWN
    return Info(None if duration is None else duration / track.timescale, samples)


def read_info(kind: str, path: Path) -> Info:
    """What the headers of a finished recording of ``kind`` say."""
    return mp4_info(path) if kind == VIDEO else wav_info(path)
