"""A fragmented MP4 written by hand, for media that arrives encoded (H.264, Opus).

An encoded session needs no encoder, only a container: each frame or packet the client sent is
appended to ``temp/`` as a fragment of its own (a ``moof`` and an ``mdat``) as soon as its
duration is known, so a daemon killed mid-session leaves a file whole up to its last complete
fragment, exactly like an encoder's (:mod:`livestream.recording.fragments` cuts it back, the
faststart stream copy publishes it). The boxes are those of ISO/IEC 14496-12 (the file format),
14496-15 (``avcC``) and the Opus mapping (``dOps``).

Written in Python on purpose: no native code parses untrusted media in the daemon's process,
so a hostile stream can cost an exception, never the process of every live session. Per frame
the work is a few small ``struct.pack`` calls and one write, bounded by the frame's size.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from livestream.wire.h264 import SequenceParameters
from livestream.wire.opus import RATE, OpusHead

VIDEO_TIMESCALE = 90000
# The longest a sample lasts: its duration in a trun entry is 32 bits.
MAX_DURATION = 2**32 - 1
# Sample flags (14496-12 §8.8.3.1): a sync sample depends on nothing; any other is not one.
SYNC = 0x02000000
NON_SYNC = 0x01010000
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
# Data offset, then per sample: duration, size, flags.
_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200 | 0x000400
_DEFAULT_BASE_IS_MOOF = 0x020000


@dataclass(frozen=True)
class Sample:
    data: bytes
    duration: int
    sync: bool


@dataclass(frozen=True)
class VideoTrack:
    """An H.264 track, described by the parameter sets of its first keyframe."""

    params: SequenceParameters
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    timescale: int = VIDEO_TIMESCALE


@dataclass(frozen=True)
class OpusTrack:
    head: OpusHead
    timescale: int = RATE


Track = VideoTrack | OpusTrack
TRACK_ID = 1


def box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def avcc(sample_nals: Iterable[bytes]) -> bytes:
    """An access unit's NAL units with 4-byte lengths in place of start codes (14496-15)."""
    out = io.BytesIO()
    for nal in sample_nals:
        out.write(struct.pack(">I", len(nal)))
        out.write(nal)
    return out.getvalue()


def _avc_config(track: VideoTrack) -> bytes:
    p = track.params
    parts = [
        struct.pack(">BBBBBB", 1, p.profile, p.constraints, p.level, 0xFF, 0xE0 | len(track.sps))
    ]
    parts += [struct.pack(">H", len(s)) + s for s in track.sps]
    parts.append(struct.pack(">B", len(track.pps)))
    parts += [struct.pack(">H", len(s)) + s for s in track.pps]
    if p.profile in (100, 110, 122, 144):
        # 4:2:0, 8 bits (the only kind admitted), no SPS extensions.
        parts.append(bytes((0xFC | 1, 0xF8, 0xF8, 0)))
    return box(b"avcC", *parts)


def _video_entry(track: VideoTrack) -> bytes:
    p = track.params
    return box(
        b"avc1",
        bytes(6), struct.pack(">H", 1), bytes(16),
        struct.pack(">HHIIIH", p.width, p.height, 0x480000, 0x480000, 0, 1),
        bytes(32), struct.pack(">Hh", 0x18, -1),
        _avc_config(track),
    )  # fmt: skip


def _opus_entry(track: OpusTrack) -> bytes:
    head = track.head
    dops = box(
        b"dOps",
        struct.pack(">BBHIhB", 0, head.channels, head.pre_skip, head.input_rate, head.gain, 0),
    )
    return box(
        b"Opus",
        bytes(6), struct.pack(">H", 1), bytes(8),
        struct.pack(">HHHHI", head.channels, 16, 0, 0, RATE << 16),
        dops,
    )  # fmt: skip


def init_segment(track: Track) -> bytes:
    """``ftyp`` and a ``moov`` with one track and no samples (they come in fragments)."""
    video = isinstance(track, VideoTrack)
    if isinstance(track, VideoTrack):
        entry = _video_entry(track)
        width, height = track.params.width << 16, track.params.height << 16
        handler, header = b"vide", full_box(b"vmhd", 0, 1, bytes(8))
    else:
        entry = _opus_entry(track)
        width = height = 0
        handler, header = b"soun", full_box(b"smhd", 0, 0, bytes(4))
    empty_table = struct.pack(">I", 0)
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry),
        full_box(b"stts", 0, 0, empty_table),
        full_box(b"stsc", 0, 0, empty_table),
        full_box(b"stsz", 0, 0, bytes(8)),
        full_box(b"stco", 0, 0, empty_table),
    )
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    mdia = box(
        b"mdia",
        full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timescale, 0, 0x55C4, 0)),
        full_box(b"hdlr", 0, 0, bytes(4), handler, bytes(12), b"livestream\0"),
        box(b"minf", header, dinf, stbl),
    )
    tkhd = full_box(
        b"tkhd", 0, 3,
        struct.pack(">IIIII", 0, 0, TRACK_ID, 0, 0), bytes(8),
        struct.pack(">hhHH", 0, 0, 0 if video else 0x100, 0), _MATRIX,
        struct.pack(">II", width, height),
    )  # fmt: skip
    mvhd = full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIIIIH", 0, 0, 1000, 0, 0x10000, 0x100), bytes(10), _MATRIX, bytes(24),
        struct.pack(">I", TRACK_ID + 1),
    )  # fmt: skip
    mvex = box(b"mvex", full_box(b"trex", 0, 0, struct.pack(">IIIII", TRACK_ID, 1, 0, 0, 0)))
    ftyp = box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso6mp41")
    return ftyp + box(b"moov", mvhd, box(b"trak", tkhd, mdia), mvex)


def fragment(sequence: int, base_time: int, samples: Sequence[Sample]) -> bytes:
    """One ``moof`` and its ``mdat``: ``samples`` from ``base_time`` (in the track's timescale)."""
    entries = b"".join(
        struct.pack(">III", s.duration, len(s.data), SYNC if s.sync else NON_SYNC) for s in samples
    )
    # The trun's data offset counts from the moof's first byte to the mdat's payload.
    trun_size = 12 + 8 + len(entries)
    traf_size = 8 + 16 + 20 + trun_size
    moof_size = 8 + 16 + traf_size
    moof = box(
        b"moof",
        full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)),
        box(
            b"traf",
            full_box(b"tfhd", 0, _DEFAULT_BASE_IS_MOOF, struct.pack(">I", TRACK_ID)),
            full_box(b"tfdt", 1, 0, struct.pack(">Q", base_time)),
            full_box(
                b"trun", 0, _TRUN_FLAGS, struct.pack(">Ii", len(samples), moof_size + 8), entries
            ),
        ),
    )
    data = b"".join(s.data for s in samples)
    return moof + struct.pack(">I4s", 8 + len(data), b"mdat") + data
