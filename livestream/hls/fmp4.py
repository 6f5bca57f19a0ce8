"""What an HLS playlist needs to know of a fragmented MP4: the track of its init segment, and of
each fragment where it starts, how long it lasts and whether it starts with a sync sample.

The files read are the daemon's own (its encoders' and its hand-written fragments), but they
carry what clients sent, so nothing here trusts a size or a count: a box that does not fit, a
count past its box, a missing ``tfdt`` raise :class:`BadFragment`, never an IndexError. Read per
ISO/IEC 14496-12: ``trex`` (§8.8.3), ``tfhd`` (§8.8.7), ``trun`` (§8.8.8), ``tfdt`` (§8.8.12).
Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from livestream.library import bmff

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
# tfhd flags: which optional fields follow the track id.
_BASE_DATA_OFFSET = 0x000001
_DESCRIPTION_INDEX = 0x000002
_DEFAULT_DURATION = 0x000008
_DEFAULT_SIZE = 0x000010
_DEFAULT_FLAGS = 0x000020
# trun flags.
_DATA_OFFSET = 0x000001
_FIRST_FLAGS = 0x000004
_SAMPLE_DURATION = 0x000100
_SAMPLE_SIZE = 0x000200
_SAMPLE_FLAGS = 0x000400
_SAMPLE_CTO = 0x000800
# sample_is_non_sync_sample (§8.8.3.1).
_NON_SYNC = 0x00010000
# Past this many samples in one fragment, its runs are not believed (a live fragment holds a
# fraction of a second: tens of samples).
MAX_SAMPLES = 1 << 16


class BadFragment(ValueError):
    """An init segment or a ``moof`` that cannot be read as one."""


@dataclass(frozen=True)
class TrackInfo:
    """The one track of an init segment."""

    timescale: int
    # "vide" or "soun".
    handler: str
    # The RFC 6381 string for CODECS: "avc1.64001f", "mp4a.40.2", "opus".
    codec: str
    width: int = 0
    height: int = 0
    # From trex: what a fragment's samples have unless their tfhd or trun say otherwise.
    default_duration: int = 0
    default_flags: int = 0

    @property
    def video(self) -> bool:
        return self.handler == "vide"


@dataclass(frozen=True)
class FragmentInfo:
    """One ``moof``: its first sample's decode time and the duration of its samples (in the
    track's timescale), whether its first sample is a sync sample, the samples, and where in the
    ``moof`` the ``tfdt``'s time is (``tfdt_at``, ``tfdt_size`` 4 or 8 bytes) so a copy can be
    moved on the timeline."""

    decode_time: int
    duration: int
    key: bool
    samples: int
    tfdt_at: int
    tfdt_size: int


def _u32(data: bytes, at: int, end: int) -> int:
    if at + 4 > end:
        raise BadFragment("a box ends inside its fields")
    return int(_U32.unpack_from(data, at)[0])


def _need(box: bmff.Box | None, what: str) -> bmff.Box:
    if box is None:
        raise BadFragment(f"no {what}")
    return box


def read_init(data: bytes) -> TrackInfo:
    """The first track of ``data`` (``ftyp`` and ``moov``, as an init segment holds)."""
    moov = _need(bmff.child(data, 0, len(data), b"moov"), "moov")
    trak = _need(bmff.child(data, moov.payload, moov.end, b"trak"), "trak")
    mdhd = _need(bmff.descend(data, trak.payload, trak.end, b"mdia", b"mdhd"), "mdhd")
    version = data[mdhd.payload] if mdhd.payload < mdhd.end else 0
    timescale = _u32(data, mdhd.payload + (20 if version == 1 else 12), mdhd.end)
    if timescale <= 0:
        raise BadFragment("a timescale of 0")
    hdlr = _need(bmff.descend(data, trak.payload, trak.end, b"mdia", b"hdlr"), "hdlr")
    if hdlr.payload + 12 > hdlr.end:
        raise BadFragment("a hdlr too short")
    handler = data[hdlr.payload + 8 : hdlr.payload + 12].decode("latin-1")
    stsd = _need(
        bmff.descend(data, trak.payload, trak.end, b"mdia", b"minf", b"stbl", b"stsd"), "stsd"
    )
    # stsd: version and flags, an entry count, then the entries (boxes).
    entry = _need(next(bmff.boxes(data, stsd.payload + 8, stsd.end), None), "sample entry")
    codec, width, height = _codec(data, entry)
    duration = flags = 0
    trex = bmff.descend(data, moov.payload, moov.end, b"mvex", b"trex")
    if trex is not None:
        # version/flags, track id, description index, duration, size, flags.
        duration = _u32(data, trex.payload + 12, trex.end)
        flags = _u32(data, trex.payload + 20, trex.end)
    return TrackInfo(timescale, handler, codec, width, height, duration, flags)


def _codec(data: bytes, entry: bmff.Box) -> tuple[str, int, int]:
    """The codec string of a sample entry, and a visual one's size."""
    kind = entry.type
    if kind in (b"avc1", b"avc3"):
        # A visual sample entry: 8 bytes of SampleEntry, 16 reserved, width and height (16 bits
        # each), then 50 more bytes before its child boxes (14496-12 §12.1.3).
        if entry.payload + 78 > entry.end:
            raise BadFragment("a visual sample entry too short")
        width, height = struct.unpack_from(">HH", data, entry.payload + 24)
        avcc = _need(bmff.child(data, entry.payload + 78, entry.end, b"avcC"), "avcC")
        if avcc.payload + 4 > avcc.end:
            raise BadFragment("an avcC too short")
        profile = data[avcc.payload + 1 : avcc.payload + 4].hex()
        return f"{kind.decode()}.{profile}", width, height
    if kind == b"mp4a":
        # AAC as ffmpeg's encoder writes it: the low-complexity profile.
        return "mp4a.40.2", 0, 0
    if kind == b"Opus":
        return "opus", 0, 0
    raise BadFragment(f"a sample entry of {kind!r}")


def read_moof(moof: bytes, track: TrackInfo) -> FragmentInfo:
    """The first ``traf`` of one whole ``moof`` box (``moof`` holds the box, header included)."""
    top = _need(next(bmff.boxes(moof), None), "moof")
    if top.type != b"moof":
        raise BadFragment("not a moof")
    traf = _need(bmff.child(moof, top.payload, top.end, b"traf"), "traf")
    tfhd = _need(bmff.child(moof, traf.payload, traf.end, b"tfhd"), "tfhd")
    tf_flags = _u32(moof, tfhd.payload, tfhd.end) & 0xFFFFFF
    at = tfhd.payload + 8  # past version/flags and the track id
    duration, flags = track.default_duration, track.default_flags
    for flag, size in ((_BASE_DATA_OFFSET, 8), (_DESCRIPTION_INDEX, 4)):
        if tf_flags & flag:
            at += size
    if tf_flags & _DEFAULT_DURATION:
        duration = _u32(moof, at, tfhd.end)
        at += 4
    if tf_flags & _DEFAULT_SIZE:
        at += 4
    if tf_flags & _DEFAULT_FLAGS:
        flags = _u32(moof, at, tfhd.end)
    tfdt = _need(bmff.child(moof, traf.payload, traf.end, b"tfdt"), "tfdt")
    version = moof[tfdt.payload] if tfdt.payload < tfdt.end else 0
    size = 8 if version == 1 else 4
    tfdt_at = tfdt.payload + 4
    if tfdt_at + size > tfdt.end:
        raise BadFragment("a tfdt too short")
    decode_time = (_U64 if size == 8 else _U32).unpack_from(moof, tfdt_at)[0]
    total = samples = 0
    key: bool | None = None
    for run in bmff.boxes(moof, traf.payload, traf.end):
        if run.type != b"trun":
            continue
        r_flags = _u32(moof, run.payload, run.end) & 0xFFFFFF
        count = _u32(moof, run.payload + 4, run.end)
        at = run.payload + 8
        first = None
        if r_flags & _DATA_OFFSET:
            at += 4
        if r_flags & _FIRST_FLAGS:
            first = _u32(moof, at, run.end)
            at += 4
        fields = [f for f in (_SAMPLE_DURATION, _SAMPLE_SIZE, _SAMPLE_FLAGS, _SAMPLE_CTO)
                  if r_flags & f]  # fmt: skip
        stride = 4 * len(fields)
        if samples + count > MAX_SAMPLES or at + stride * count > run.end:
            raise BadFragment("a trun's samples run past it")
        for i in range(count):
            entry = at + i * stride
            d = duration
            f = flags
            for field in fields:
                if field == _SAMPLE_DURATION:
                    d = _u32(moof, entry, run.end)
                elif field == _SAMPLE_FLAGS:
                    f = _u32(moof, entry, run.end)
                entry += 4
            if i == 0 and first is not None:
                f = first
            if key is None:
                key = not f & _NON_SYNC
            total += d
        samples += count
    if not samples:
        raise BadFragment("a fragment without samples")
    if not track.video:
        key = True  # every audio sample of these codecs can be decoded alone
    return FragmentInfo(decode_time, total, bool(key), samples, tfdt_at, size)


def moved(moof: bytes, info: FragmentInfo, shift: int) -> bytes:
    """``moof`` with its decode time moved ``shift`` ticks later (a replaced encoder's piece
    starts again at 0, though it is later on the session's timeline)."""
    if not shift:
        return moof
    time = info.decode_time + shift
    if info.tfdt_size == 4 and time >= 1 << 32:
        raise BadFragment("a decode time past a 32-bit tfdt")
    out = bytearray(moof)
    (_U64 if info.tfdt_size == 8 else _U32).pack_into(out, info.tfdt_at, time)
    return bytes(out)
