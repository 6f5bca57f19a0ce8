"""Just enough H.264 to check an access unit from a client and describe its stream, without
decoding it.

An access unit (one frame) arrives in Annex B form: NAL units after start codes. Before it
reaches a file it is split, every NAL unit's header is checked, and the sequence parameter
sets are parsed for the picture size (a hostile SPS claiming 65535x65535 would make a player
or the poster's decoder allocate gigabytes). Nothing here decodes a slice: what the daemon does
with the stream is copy it, and the one decoder that reads it (the poster's) runs in a child.

Pure: no I/O, no Twisted. Every refusal is an :class:`InvalidH264` with a message for the
client.
"""

from __future__ import annotations

from dataclasses import dataclass

# The largest picture side accepted, as for JPEG frames.
MAX_DIMENSION = 8192

NON_IDR = 1
IDR = 5
SEI = 6
SPS = 7
PPS = 8
AUD = 9
SLICES = frozenset((NON_IDR, IDR))
# 0 and 24-31 are unspecified (RTP uses them for its aggregation and fragmentation units, which
# never belong in an access unit); 16-18 and 21-23 are reserved.
ALLOWED_TYPES = frozenset(range(1, 16)) | {19, 20}

# Profiles whose SPS carries chroma format, bit depths and scaling matrices (7.3.2.1.1).
_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))
# Bounds from 7.4.2.1.1: anything beyond is malformed, and bounds what parsing may loop over.
_MAX_SPS_ID = 31
_MAX_LOG2 = 12
_MAX_REF_FRAMES = 16
_MAX_POC_CYCLE = 255
# What an MP4's avcC holds (ISO/IEC 14496-15 5.3.3.1): 5 bits count the SPS, 8 bits the PPS,
# 16 bits give each one's length.
MAX_SPS_COUNT = 31
MAX_PPS_COUNT = 255
MAX_SET_BYTES = 0xFFFF
# The most NAL units an access unit may hold: far over what encoders write (a slice per row of
# macroblocks of an 8192-pixel picture is 512), and what bounds the cost of a unit of tiny ones
# (a megabyte of 5-byte units took 0.1 s to check and write).
MAX_NAL_UNITS = 8192


class InvalidH264(ValueError):
    """An access unit, NAL unit or parameter set the daemon refuses; the message says why."""


@dataclass(frozen=True)
class SequenceParameters:
    """What a recording needs to know of an SPS: the codec string and the picture size."""

    profile: int
    constraints: int
    level: int
    width: int
    height: int

    @property
    def codec(self) -> str:
        """The RFC 6381 codec string, as WebCodecs and MSE take it: ``avc1.42e01f``."""
        return f"avc1.{self.profile:02x}{self.constraints:02x}{self.level:02x}"


@dataclass(frozen=True)
class AccessUnit:
    """One frame's NAL units (without start codes), in order, and what they say of it."""

    nals: tuple[bytes, ...]
    # An IDR picture: it and the frames after it decode without anything before it.
    key: bool
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    # What each SPS says (parsed once, here).
    params: tuple[SequenceParameters, ...]


def nal_units(data: bytes) -> list[bytes]:
    """Split Annex B bytes at their start codes (``00 00 01``, or ``00 00 00 01``).

    Zero bytes before a start code are trailing padding of the unit before it (7.4.1.4), not
    part of it. Bytes before the first start code are refused: no part of a unit goes missing
    silently."""
    if data.count(b"\x00\x00\x01") > MAX_NAL_UNITS:
        raise InvalidH264(f"an access unit holds over {MAX_NAL_UNITS} NAL units")
    # One split in C: a loop of find() in Python took 0.1 s over a megabyte of start codes.
    before, *parts = data.split(b"\x00\x00\x01")
    if not parts or before.strip(b"\x00"):
        raise InvalidH264("an access unit must start with a start code (00 00 01)")
    return [unit for part in parts if (unit := part.rstrip(b"\x00"))]


def check_access_unit(data: bytes) -> AccessUnit:
    """Split and check one access unit: the NAL headers, the slices, and any SPS in it."""
    nals = nal_units(data)
    sps: list[bytes] = []
    pps: list[bytes] = []
    slice_types: set[int] = set()
    for nal in nals:
        header = nal[0]
        if header & 0x80:
            raise InvalidH264("a NAL unit has its forbidden_zero_bit set: not H.264")
        kind = header & 0x1F
        if kind not in ALLOWED_TYPES:
            raise InvalidH264(f"NAL unit type {kind} is reserved or unspecified in H.264")
        if kind in SLICES:
            if len(nal) < 2:
                raise InvalidH264("a slice NAL unit has no slice header")
            slice_types.add(kind)
        elif kind == SPS:
            sps.append(nal)
        elif kind == PPS:
            if len(nal) < 2:
                raise InvalidH264("a PPS NAL unit is empty")
            pps.append(nal)
    if len(sps) > MAX_SPS_COUNT or len(pps) > MAX_PPS_COUNT:
        raise InvalidH264(
            f"an access unit carries {len(sps)} SPS and {len(pps)} PPS; an MP4 holds at most "
            f"{MAX_SPS_COUNT} and {MAX_PPS_COUNT}"
        )
    if any(len(nal) > MAX_SET_BYTES for nal in (*sps, *pps)):
        raise InvalidH264(f"a parameter set is over {MAX_SET_BYTES} bytes, more than an MP4 holds")
    parsed = {nal: parse_sps(nal) for nal in dict.fromkeys(sps)}
    if not slice_types:
        raise InvalidH264("an access unit must hold a picture (a slice NAL unit)")
    if len(slice_types) > 1:
        raise InvalidH264("an access unit mixes IDR and non-IDR slices")
    return AccessUnit(
        tuple(nals), IDR in slice_types, tuple(sps), tuple(pps), tuple(parsed[n] for n in sps)
    )


def unescape(nal: bytes) -> bytes:
    """The RBSP of a NAL unit: every ``00 00 03`` emulation prevention byte removed."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


class _Bits:
    """An RBSP read bit by bit, with exp-Golomb codes bounded so a hostile one cannot loop."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._left = len(data) * 8

    def u(self, n: int) -> int:
        if n > self._left:
            raise InvalidH264("an SPS ends before its fields do")
        self._left -= n
        return (self._value >> self._left) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def ue(self, limit: int = 2**32 - 2) -> int:
        # The leading zeros counted at once in the next 32 bits: read one by one, they made an
        # SPS of long codes (255 picture order offsets, full scaling lists) cost milliseconds.
        window = min(self._left, 32)
        head = (self._value >> (self._left - window)) & ((1 << window) - 1)
        zeros = window - head.bit_length()
        if zeros > 31:
            raise InvalidH264("an SPS has an exp-Golomb code over 32 bits")
        # The zeros, a one and as many bits again: value + 1.
        value = self.u(2 * zeros + 1) - 1
        if value > limit:
            raise InvalidH264(f"an SPS field is {value}, over its bound of {limit}")
        return value

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            delta = bits.se()
            if not -128 <= delta <= 127:
                raise InvalidH264("an SPS scaling list is out of range")
            nxt = (last + delta + 256) % 256
        last = nxt or last


def parse_sps(nal: bytes) -> SequenceParameters:
    """The codec string and the cropped picture size of an SPS NAL unit (7.3.2.1.1).

    Only 4:2:0 8-bit streams are taken: what every browser encoder and player handles, and the
    only kind the MP4 and its poster are made for."""
    if len(nal) < 4 or nal[0] & 0x1F != SPS:
        raise InvalidH264("an SPS is too short")
    bits = _Bits(unescape(nal[1:]))
    profile, constraints, level = bits.u(8), bits.u(8), bits.u(8)
    bits.ue(_MAX_SPS_ID)
    frame_mbs_only = True
    if profile in _HIGH_PROFILES:
        chroma = bits.ue(3)
        if chroma == 3:
            bits.flag()
        if bits.ue(6) or bits.ue(6):
            raise InvalidH264("only 8-bit H.264 is recorded")
        if chroma != 1:
            raise InvalidH264("only 4:2:0 H.264 is recorded")
        bits.flag()  # qpprime_y_zero_transform_bypass
        if bits.flag():
            for i in range(8):
                if bits.flag():
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    bits.ue(_MAX_LOG2)  # log2_max_frame_num_minus4
    poc_type = bits.ue(2)
    if poc_type == 0:
        bits.ue(_MAX_LOG2)
    elif poc_type == 1:
        bits.flag()
        bits.se()
        bits.se()
        for _ in range(bits.ue(_MAX_POC_CYCLE)):
            bits.se()
    bits.ue(_MAX_REF_FRAMES)
    bits.flag()  # gaps_in_frame_num_value_allowed
    max_mbs = MAX_DIMENSION // 16
    width_mbs = bits.ue(max_mbs - 1) + 1
    height_units = bits.ue(max_mbs - 1) + 1
    frame_mbs_only = bits.flag()
    if not frame_mbs_only:
        bits.flag()  # mb_adaptive_frame_field
    bits.flag()  # direct_8x8_inference
    width, height = width_mbs * 16, height_units * 16 * (1 if frame_mbs_only else 2)
    if bits.flag():
        left, right, top, bottom = (bits.ue(MAX_DIMENSION) for _ in range(4))
        width -= 2 * (left + right)
        height -= 2 * (1 if frame_mbs_only else 2) * (top + bottom)
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise InvalidH264(f"an SPS claims {width}x{height}: not 1 to {MAX_DIMENSION} a side")
    return SequenceParameters(profile, constraints, level, width, height)
