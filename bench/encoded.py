"""Encoded media for the load generator: H.264 access units and Opus packets from real encoders.

A client of the encoded-media extension (README, "Recording what the client encoded") sends what
its own encoder gave: one H.264 access unit per video message (Annex B, SPS and PPS in-band on
every keyframe, as WebCodecs gives with ``avc: {format: "annexb"}``) and one Opus packet per
audio message. The benchmark needs the same, made by a real encoder, so each clip is encoded
once, up front, with the daemon's own ffmpeg, and split:

- H.264: libx264 baseline, ``-tune zerolatency`` (no B-frames, no lookahead: each frame comes
  out as it goes in, as from a live encoder), a keyframe every ``gop`` frames, written raw
  (``-f h264``) with an access unit delimiter before every frame (``h264_metadata=aud=insert``);
  the stream is cut at each delimiter (NAL type 9), and an access unit is a keyframe when it holds
  an IDR slice (NAL type 5). The clip's length is a whole number of GOPs, so a client that
  cycles through it starts each lap on a keyframe.
- Opus: libopus at 48 kHz mono, 20 ms frames, in Ogg; the pages are cut into packets, the first
  two (OpusHead, OpusTags) kept apart: the OpusHead goes in ``CONNECT``'s ``opusHead``.

Encoded files are cached in a directory the caller gives (a temp dir per run), keyed by their
settings, so a run encodes each clip once however many scenarios use it.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

NAL_AUD = 9
NAL_IDR = 5
OPUS_RATE = 48000
OPUS_FRAME_US = 20000
OPUS_FRAME_SAMPLES = OPUS_RATE * OPUS_FRAME_US // 1_000_000  # 960


@dataclass(frozen=True)
class AccessUnit:
    """One frame of H.264: its NAL units with their start codes, and whether it is a keyframe."""

    data: bytes
    key: bool


@dataclass(frozen=True)
class H264Clip:
    units: tuple[AccessUnit, ...]
    size: str
    fps: float
    source: str
    file: Path | None = None  # the raw H.264 it was cut from

    @property
    def mean_bytes(self) -> float:
        return sum(len(u.data) for u in self.units) / len(self.units)


@dataclass(frozen=True)
class OpusClip:
    head: bytes  # the OpusHead packet (RFC 7845 5.1)
    packets: tuple[bytes, ...]  # 20 ms each

    @property
    def pre_skip(self) -> int:
        """Samples at 48 kHz a decoder drops from the start (OpusHead bytes 10-11, LE)."""
        return struct.unpack_from("<H", self.head, 10)[0]

    @property
    def channels(self) -> int:
        return self.head[9]


# --------------------------------------------------------------------------------------------
# Annex B


def nal_units(stream: bytes) -> Iterator[tuple[int, int, int]]:
    """(start, payload start, NAL type) of every NAL unit; ``start`` includes its start code
    (the 4-byte form's leading zero too), so ``stream[start:next start]`` is the whole unit."""
    pos = stream.find(b"\0\0\1")
    while pos != -1:
        start = pos - 1 if pos > 0 and stream[pos - 1] == 0 else pos
        payload = pos + 3
        if payload < len(stream):
            yield start, payload, stream[payload] & 0x1F
        pos = stream.find(b"\0\0\1", payload)


def access_units(stream: bytes) -> list[AccessUnit]:
    """Cut an Annex B stream at its access unit delimiters (each unit starts with one)."""
    units = list(nal_units(stream))
    cuts = [start for start, _, kind in units if kind == NAL_AUD]
    if not cuts:
        raise ValueError("no access unit delimiters (NAL type 9) in the stream")
    bounds = [*cuts, len(stream)]
    out = []
    for begin, end in zip(bounds, bounds[1:], strict=False):
        kinds = {kind for start, _, kind in units if begin <= start < end}
        out.append(AccessUnit(stream[begin:end], NAL_IDR in kinds))
    return out


# --------------------------------------------------------------------------------------------
# Ogg


def ogg_packets(data: bytes) -> list[bytes]:
    """The packets of a single-stream Ogg file, in order (RFC 3533: lacing values of 255
    continue a packet, into the next page if need be)."""
    packets: list[bytes] = []
    partial = b""
    pos = 0
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS":
            raise ValueError(f"no Ogg page at byte {pos}")
        count = data[pos + 26]
        lacing = data[pos + 27 : pos + 27 + count]
        body = pos + 27 + count
        for value in lacing:
            partial += data[body : body + value]
            body += value
            if value < 255:
                packets.append(partial)
                partial = b""
        pos = body
    if partial:
        packets.append(partial)
    return packets


def split_opus(ogg: bytes) -> OpusClip:
    packets = ogg_packets(ogg)
    if len(packets) < 3 or not packets[0].startswith(b"OpusHead"):
        raise ValueError("not an Ogg Opus stream")
    if not packets[1].startswith(b"OpusTags"):
        raise ValueError("no OpusTags packet after the OpusHead")
    return OpusClip(packets[0], tuple(packets[2:]))


# --------------------------------------------------------------------------------------------
# Encoding, once per setting


class Encoder:
    """Makes each clip once into ``cache`` (a directory of the caller's, a temp dir per run)."""

    def __init__(self, ffmpeg: str, cache: Path) -> None:
        self.ffmpeg = ffmpeg
        self.cache = cache
        cache.mkdir(parents=True, exist_ok=True)

    def _run(self, args: Sequence[str], out: Path) -> Path:
        if not out.exists():
            part = out.with_name(out.name + ".part")
            subprocess.run(
                [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *args, str(part)],
                check=True, stdin=subprocess.DEVNULL, timeout=600,
            )  # fmt: skip
            part.rename(out)
        return out

    def _name(self, stem: str, settings: Sequence[object], suffix: str) -> Path:
        digest = hashlib.sha256(repr(tuple(settings)).encode()).hexdigest()[:12]
        return self.cache / f"{stem}-{digest}{suffix}"

    def source(self, size: str, fps: float, frames: int, source: str, vf: str = "") -> Path:
        """The source frames themselves, lossless (FFV1): what a recording's SSIM is taken
        against, and what every encoding of the same clip is made from."""
        out = self._name("source", (size, fps, frames, source, vf), ".mkv")
        filters = ["-vf", f"{vf},format=yuv420p" if vf else "format=yuv420p"]
        return self._run(
            ["-f", "lavfi", "-i", f"{source}=size={size}:rate={fps:g}", *filters,
             "-frames:v", str(frames), "-c:v", "ffv1", "-f", "matroska"],
            out,
        )  # fmt: skip

    def h264(
        self,
        size: str = "640x480",
        fps: float = 15,
        frames: int = 150,
        source: str = "testsrc2",
        vf: str = "",
        gop: int = 30,
        preset: str = "veryfast",
        x264: Sequence[str] = (),
    ) -> H264Clip:
        """``frames`` (rounded up to whole GOPs) of ``source`` as a live baseline encoder gives
        them; ``x264`` adds rate control (``-crf``, ``-b:v``) or other x264 arguments."""
        frames = -(-frames // gop) * gop
        src = self.source(size, fps, frames, source, vf)
        settings = (src.name, gop, preset, tuple(x264))
        out = self._run(
            ["-i", str(src), "-c:v", "libx264", "-profile:v", "baseline", "-preset", preset,
             "-tune", "zerolatency", "-g", str(gop), "-pix_fmt", "yuv420p", *x264,
             "-bsf:v", "h264_metadata=aud=insert", "-f", "h264"],
            self._name("video", settings, ".h264"),
        )  # fmt: skip
        units = access_units(out.read_bytes())
        if len(units) != frames or not units[0].key:
            raise ValueError(f"{out}: {len(units)} access units for {frames} frames")
        return H264Clip(tuple(units), size, fps, source, out)

    def jpeg_directory(
        self, size: str, fps: float, frames: int, source: str, vf: str = "", quality: int = 3
    ) -> Path:
        """A directory of the same source frames as JPEGs (the seed's wire), ``-q:v quality``,
        named ``f_00001.jpg`` on."""
        src = self.source(size, fps, frames, source, vf)
        directory = self._name("jpeg", (src.name, quality), "")
        if not directory.exists():
            part = directory.with_name(directory.name + ".part")
            part.mkdir(exist_ok=True)
            subprocess.run(
                [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src),
                 "-q:v", str(quality), str(part / "f_%05d.jpg")],
                check=True, stdin=subprocess.DEVNULL, timeout=600,
            )  # fmt: skip
            part.rename(directory)
        return directory

    def jpegs(
        self, size: str, fps: float, frames: int, source: str, vf: str = "", quality: int = 3
    ) -> tuple[bytes, ...]:
        directory = self.jpeg_directory(size, fps, frames, source, vf, quality)
        return tuple(p.read_bytes() for p in sorted(directory.glob("f_*.jpg")))

    def opus(self, seconds: float = 10.0, bitrate: str = "32k", source: str = "") -> OpusClip:
        """``seconds`` of mono 48 kHz Opus in 20 ms packets; by default a tone with a little
        noise (speech-like content would do as well: the bench counts, it does not listen)."""
        source = source or (
            f"sine=frequency=440:sample_rate={OPUS_RATE}:duration={seconds:g}[a];"
            f"anoisesrc=color=pink:amplitude=0.05:sample_rate={OPUS_RATE}:duration={seconds:g}[b];"
            "[a][b]amix=inputs=2"
        )
        out = self._run(
            ["-f", "lavfi", "-i", source, "-t", f"{seconds:g}", "-c:a", "libopus",
             "-b:a", bitrate, "-frame_duration", "20", "-ac", "1", "-ar", str(OPUS_RATE),
             "-f", "ogg"],
            self._name("audio", (seconds, bitrate, source), ".ogg"),
        )  # fmt: skip
        return split_opus(out.read_bytes())
