"""Frames that say which they are: each frame's number drawn as a row of wide bars, light for a 1
bit and dark for a 0, most significant first, so a player's picture tells which frame it shows.

Wide flat bars survive any lossy encode (x264 at its fastest, a JPEG at low quality): the
number is read back from the middle of each bar of one row, in the encoder's output, in ffmpeg's
decode of a live playlist, or from a browser's canvas (the same rule, in JavaScript, in the
tests' and the benchmark's pages: :data:`JS_READER`).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

BITS = 12
LIGHT, DARK = 220, 30
WIDTH, HEIGHT = 320, 240


def gray_frame(number: int, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """One 8-bit gray picture of ``number`` (modulo 2**BITS)."""
    row = bytearray(width)
    for x in range(width):
        bit = BITS - 1 - min(BITS - 1, x * BITS // width)
        row[x] = LIGHT if number >> bit & 1 else DARK
    return bytes(row) * height


def jpeg_frames(ffmpeg: str, count: int, start: int = 0) -> list[bytes]:
    """JPEGs of frames ``start`` to ``start + count - 1``, encoded by real ffmpeg."""
    raw = b"".join(gray_frame(n) for n in range(start, start + count))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray",
             "-s", f"{WIDTH}x{HEIGHT}", "-i", "pipe:0", "-q:v", "4", "-pix_fmt", "yuvj420p",
             os.path.join(tmp, "f_%06d.jpg")],
            input=raw, check=True,
        )  # fmt: skip
        return [p.read_bytes() for p in sorted(Path(tmp).iterdir())]


def h264_units(ffmpeg: str, count: int, start: int = 0, gop: int = 15) -> list[bytes]:
    """H.264 access units (Annex B, an access unit delimiter each) of frames ``start`` to
    ``start + count - 1``, as a live encoder makes them: libx264 constrained baseline, no
    B-frames, a keyframe with SPS and PPS every ``gop`` frames."""
    raw = b"".join(gray_frame(n) for n in range(start, start + count))
    data = subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray",
         "-s", f"{WIDTH}x{HEIGHT}", "-r", "15", "-i", "pipe:0", "-c:v", "libx264",
         "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-preset", "ultrafast",
         "-tune", "zerolatency", "-g", str(gop), "-bsf:v", "h264_metadata=aud=insert",
         "-f", "h264", "pipe:1"],
        input=raw, capture_output=True, check=True,
    ).stdout  # fmt: skip
    delimiter = b"\x00\x00\x00\x01\x09"
    return [delimiter + unit for unit in data.split(delimiter)[1:]]


def read_number(gray: bytes, width: int, height: int) -> int:
    """The number a decoded gray (or Y plane) picture shows, read at its middle row."""
    row = (height // 2) * width
    number = 0
    for i in range(BITS):
        x = (2 * i + 1) * width // (2 * BITS)
        number = number << 1 | (gray[row + x] > 128)
    return number


def decoded_numbers(ffmpeg: str, source: str, *args: str, timeout: float = 120) -> list[int]:
    """The number of every frame ffmpeg decodes from ``source`` (a file or URL, read with the
    input options ``args``), in order: each decoded frame once, none repeated or dropped."""
    out = subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", *args, "-i", source, "-map", "0:v:0",
         "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray",
         "-s", f"{WIDTH}x{HEIGHT}", "pipe:1"],
        capture_output=True, timeout=timeout,
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"ffmpeg failed ({out.returncode}): {out.stderr.decode()[-800:]}")
    return numbers(out.stdout)


def numbers(out: bytes) -> list[int]:
    """The numbers of pictures decoded as 8-bit gray at :data:`WIDTH` x :data:`HEIGHT`."""
    size = WIDTH * HEIGHT
    return [read_number(out[i : i + size], WIDTH, HEIGHT) for i in range(0, len(out), size)]


# The reader for a page: ``readNumber(canvasContext, width, height)`` -> the frame's number.
JS_READER = f"""
function readNumber(context, width, height) {{
  const row = context.getImageData(0, Math.floor(height / 2), width, 1).data;
  let number = 0;
  for (let i = 0; i < {BITS}; i++) {{
    const x = Math.floor((2 * i + 1) * width / {2 * BITS});
    const luma = 0.299 * row[4 * x] + 0.587 * row[4 * x + 1] + 0.114 * row[4 * x + 2];
    number = (number << 1) | (luma > 128 ? 1 : 0);
  }}
  return number;
}}
"""
