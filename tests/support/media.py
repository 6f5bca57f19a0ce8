"""Real media for the tests to send, and checks of what the daemon wrote, decoded with PyAV.

Frames are made by the same ffmpeg the daemon runs; recordings are judged by what a player sees
(decoded frames, codec, rate, where the moov box sits) and WAVs by their bytes, never by the
daemon's own replies.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import av

from livestream.library import bmff
from livestream.recording import ffmpeg


@cache
def ffmpeg_exe() -> str:
    return ffmpeg.find(None)


@cache
def jpeg_frames(count: int, size: str = "320x240", source: str = "testsrc") -> tuple[bytes, ...]:
    """``count`` distinct JPEG frames of a moving test picture, made by real ffmpeg."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
             "-i", f"{source}=size={size}:rate=15", "-frames:v", str(count), "-q:v", "5",
             os.path.join(tmp, "f_%05d.jpg")],
            check=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return tuple(p.read_bytes() for p in sorted(Path(tmp).iterdir()))


def pcm(samples: int, seed: int = 0) -> bytes:
    """Deterministic s16le samples, different for each seed, so byte-identity is checkable."""
    return bytes((i * 7 + seed * 13 + (i >> 8)) & 0xFF for i in range(samples * 2))


def wav_bytes(data: bytes) -> bytes:
    """A whole PCM s16le 44.1 kHz mono WAV around ``data``."""
    header = b"RIFF" + (36 + len(data)).to_bytes(4, "little") + b"WAVEfmt "
    header += (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
    header += (44100).to_bytes(4, "little") + (88200).to_bytes(4, "little")
    header += (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    return header + b"data" + len(data).to_bytes(4, "little") + data


@dataclass(frozen=True)
class VideoFacts:
    codec: str
    pix_fmt: str
    rate: Fraction
    frames: int
    width: int
    height: int
    duration: float
    faststart: bool


def video_facts(path: Path) -> VideoFacts:
    """What a player sees: decoded frame count, codec, pixel format, rate, size, moov placement."""
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        facts = VideoFacts(
            codec=stream.codec_context.name,
            pix_fmt=stream.codec_context.pix_fmt,
            rate=stream.average_rate,
            frames=frames,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            duration=float(container.duration or 0) / 1e6,
            faststart=_moov_before_mdat(path),
        )
    return facts


def brightness(path: Path) -> list[tuple[float, float]]:
    """Each decoded frame's time and mean luma (0-255), for tests that mark frames by light."""
    levels = []
    with av.open(os.fspath(path)) as container:
        for frame in container.decode(video=0):
            plane = frame.planes[0]
            rows = bytes(plane)
            # Rows are padded to line_size; only the first width bytes are picture.
            luma = b"".join(
                rows[y * plane.line_size : y * plane.line_size + plane.width]
                for y in range(plane.height)
            )
            levels.append((float(frame.time), sum(luma) / len(luma)))
    return levels


def _moov_before_mdat(path: Path) -> bool:
    with open(path, "rb") as f:
        for box in bmff.file_boxes(f):
            if box.type in (b"moov", b"mdat"):
                return box.type == b"moov"
    return False


@dataclass(frozen=True)
class WavFacts:
    rate: int
    channels: int
    sample_width: int
    samples: int
    data: bytes
    riff_size_ok: bool


def wav_facts(path: Path) -> WavFacts:
    """Parse the WAV by hand so a wrong RIFF or data size cannot be papered over."""
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE", raw[:16]
    riff = int.from_bytes(raw[4:8], "little")
    channels = int.from_bytes(raw[22:24], "little")
    rate = int.from_bytes(raw[24:28], "little")
    bits = int.from_bytes(raw[34:36], "little")
    assert raw[36:40] == b"data", raw[36:40]
    size = int.from_bytes(raw[40:44], "little")
    data = raw[44 : 44 + size]
    assert len(data) == size, (len(data), size)
    return WavFacts(rate, channels, bits // 8, size // 2, data, riff == len(raw) - 8)


@cache
def h264_access_units(
    count: int, size: str = "320x240", gop: int = 15, profile: str = "baseline"
) -> tuple[bytes, ...]:
    """``count`` H.264 access units (Annex B, one frame each) as a real encoder makes them:
    libx264 at 15 fps, a keyframe with SPS and PPS every ``gop`` frames, no B-frames."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "v.h264")
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
             "-i", f"testsrc2=size={size}:rate=15", "-frames:v", str(count),
             "-c:v", "libx264", "-profile:v", profile, "-pix_fmt", "yuv420p",
             "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(gop),
             "-bsf:v", "h264_metadata=aud=insert", "-f", "h264", out],
            check=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        data = Path(out).read_bytes()
    delimiter = b"\x00\x00\x00\x01\x09"
    units = tuple(delimiter + unit for unit in data.split(delimiter)[1:])
    assert len(units) == count, (len(units), count)
    return units


def is_keyframe(unit: bytes) -> bool:
    return any(nal[0] & 0x1F == 5 for nal in unit.split(b"\x00\x00\x01")[1:] if nal)


@cache
def opus_packets(seconds: float, frequency: int = 440) -> tuple[bytes, tuple[bytes, ...]]:
    """(OpusHead, packets) of a sine tone encoded by libopus: 48 kHz mono, 20 ms packets."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "a.ogg")
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
             "-i", f"sine=frequency={frequency}:sample_rate=48000", "-t", str(seconds),
             "-c:a", "libopus", "-b:a", "48k", "-frame_duration", "20", "-ac", "1", out],
            check=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        packets = list(_ogg_packets(Path(out).read_bytes()))
    return packets[0], tuple(packets[2:])


def _ogg_packets(data: bytes):
    """The packets of an Ogg stream (RFC 3533), for test media only."""
    pos, packet = 0, b""
    while pos < len(data):
        assert data[pos : pos + 4] == b"OggS"
        lacing = data[pos + 27 : pos + 27 + data[pos + 26]]
        pos += 27 + len(lacing)
        for segment in lacing:
            packet += data[pos : pos + segment]
            pos += segment
            if segment < 255:
                yield packet
                packet = b""
