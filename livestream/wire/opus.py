"""Just enough Opus to check a packet from a client and know how long it plays, without
decoding it; and the identification header (OpusHead) that describes a stream.

A packet's first byte (its TOC) gives the duration of its frames and how they are framed
(RFC 6716 §3.1-3.2); a packet that breaks the framing rules of §3.4 is refused before it is
stored, so the decoder that makes the WAV (in a child process) only sees well-framed packets,
and the MP4's timeline is the sum of durations that are true.

Pure: no I/O, no Twisted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Opus always runs at 48 kHz: durations and pre-skip are counted in its samples.
RATE = 48000
MAX_FRAME_BYTES = 1275
# A packet plays at most 120 ms (R5).
MAX_PACKET_SAMPLES = RATE * 120 // 1000
# What libopus (and so Chromium's encoder and ffmpeg's libopus) puts before the first sample.
DEFAULT_PRE_SKIP = 312

_SILK = (480, 960, 1920, 2880)
_HYBRID = (480, 960)
_CELT = (120, 240, 480, 960)

_HEAD = struct.Struct("<8sBBHIhB")
MAGIC = b"OpusHead"


class InvalidOpus(ValueError):
    """A packet or header the daemon refuses; the message says why."""


def frame_samples(toc: int) -> int:
    """The duration of each frame of a packet, in 48 kHz samples, from its TOC byte."""
    config = toc >> 3
    if config < 12:
        return _SILK[config % 4]
    if config < 16:
        return _HYBRID[config % 2]
    return _CELT[config % 4]


def _length(packet: bytes, pos: int) -> tuple[int, int]:
    """A frame length coded in one or two bytes at ``pos`` (§3.2.1): (length, next position)."""
    if pos >= len(packet):
        raise InvalidOpus("an Opus packet ends inside a frame length")
    first = packet[pos]
    if first < 252:
        return first, pos + 1
    if pos + 1 >= len(packet):
        raise InvalidOpus("an Opus packet ends inside a frame length")
    return first + 4 * packet[pos + 1], pos + 2


def packet_samples(packet: bytes) -> int:
    """The duration of a packet in 48 kHz samples; refuses one that §3.4 calls malformed."""
    if not packet:
        raise InvalidOpus("an Opus packet needs at least its TOC byte")  # R1
    toc = packet[0]
    per_frame = frame_samples(toc)
    code = toc & 3
    size = len(packet)
    if code == 0:
        frames, sizes = 1, [size - 1]
    elif code == 1:
        if (size - 1) % 2:
            raise InvalidOpus("an Opus packet of two equal frames has an odd length")  # R3
        frames, sizes = 2, [(size - 1) // 2] * 2
    elif code == 2:
        first, pos = _length(packet, 1)
        if first > size - pos:
            raise InvalidOpus("an Opus packet's first frame is longer than the packet")  # R4
        frames, sizes = 2, [first, size - pos - first]
    else:
        frames, sizes = _code3(packet)
    if frames * per_frame > MAX_PACKET_SAMPLES:
        raise InvalidOpus("an Opus packet plays over 120 ms")  # R5
    if any(n > MAX_FRAME_BYTES for n in sizes):
        raise InvalidOpus(f"an Opus frame is over {MAX_FRAME_BYTES} bytes")  # R2
    return frames * per_frame


def _code3(packet: bytes) -> tuple[int, list[int]]:
    """Frame count and sizes of a packet with an arbitrary number of frames (§3.2.5)."""
    if len(packet) < 2:
        raise InvalidOpus("an Opus packet of code 3 needs its frame count byte")  # R6
    vbr, padded, frames = packet[1] & 0x80, packet[1] & 0x40, packet[1] & 0x3F
    if frames == 0:
        raise InvalidOpus("an Opus packet of code 3 holds no frame")  # R5
    pos, padding = 2, 0
    if padded:
        # Each 255 is 254 bytes of padding and another length byte: a run of them counted in C
        # (a loop per byte took 0.1 s over a megabyte of them).
        run = len(packet) - pos - len(packet[pos:].lstrip(b"\xff"))
        pos += run
        if pos >= len(packet):
            raise InvalidOpus("an Opus packet ends inside its padding length")  # R6/R7
        padding = 254 * run + packet[pos]
        pos += 1
    if vbr:
        sizes = []
        for _ in range(frames - 1):
            n, pos = _length(packet, pos)
            sizes.append(n)
        rest = len(packet) - pos - padding - sum(sizes)
        if rest < 0:
            raise InvalidOpus("an Opus packet's frames are longer than the packet")  # R7
        return frames, [*sizes, rest]
    rest = len(packet) - pos - padding
    if rest < 0 or rest % frames:
        raise InvalidOpus("an Opus packet's equal frames do not divide its length")  # R6
    return frames, [rest // frames] * frames


@dataclass(frozen=True)
class OpusHead:
    """The identification header (RFC 7845 §5.1) of a mono or stereo stream."""

    channels: int = 1
    pre_skip: int = DEFAULT_PRE_SKIP
    input_rate: int = RATE
    gain: int = 0

    def encode(self) -> bytes:
        return _HEAD.pack(MAGIC, 1, self.channels, self.pre_skip, self.input_rate, self.gain, 0)


def parse_opus_head(data: bytes) -> OpusHead:
    """Parse an OpusHead; only mapping family 0 (mono or stereo) is taken, as WAV and MP4 need
    nothing more and every browser encoder gives it."""
    if len(data) < _HEAD.size or not data.startswith(MAGIC):
        raise InvalidOpus(f"opusHead must be an OpusHead of at least {_HEAD.size} bytes")
    _, version, channels, pre_skip, rate, gain, family = _HEAD.unpack_from(data)
    if version >> 4:
        raise InvalidOpus(f"OpusHead version {version} is not one this server reads")
    if family != 0 or not 1 <= channels <= 2:
        raise InvalidOpus("only mono or stereo Opus (channel mapping family 0) is recorded")
    return OpusHead(channels, pre_skip, rate, gain)
