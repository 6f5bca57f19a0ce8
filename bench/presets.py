"""Which x264 settings record the most real-time 640x480 streams on this machine, at what quality.

For each candidate it pipes the same JPEG frames through the daemon's own encoder arguments
(``encoder_args``), measures the encoder's CPU seconds per recorded minute, the bitrate, and the
SSIM of the result against the frames sent, and estimates how many 15 fps streams the cores can
encode in real time (cores x 60 / CPU seconds per minute). One JSON line per candidate.

    .venv/bin/python -m bench.presets [--frames 300] [--size 640x480]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import tempfile
from pathlib import Path

from livestream.recording import ffmpeg
from livestream.recording.video import EncoderSettings, encoder_args

FPS = 15
CANDIDATES = [
    # (preset, extra x264 arguments)
    ("ultrafast", []),
    ("superfast", []),
    ("veryfast", []),
    ("faster", []),
    ("ultrafast", ["-threads", "1"]),
    ("superfast", ["-threads", "1"]),
    ("veryfast", ["-threads", "1"]),
]


def make_frames(
    exe: str, directory: Path, count: int, size: str, source: str, *, fps: int = FPS
) -> list[Path]:
    """Camera-like JPEGs: a moving test picture with sensor noise, at webcam JPEG quality, as
    ``fps`` frames a second of it (the motion from one frame to the next)."""
    subprocess.run(
        [exe, "-hide_banner", "-loglevel", "error", "-f", "lavfi",
         "-i", f"{source}=size={size}:rate={fps}", "-vf", "noise=alls=6:allf=t",
         "-frames:v", str(count), "-q:v", "4", os.fspath(directory / "f_%05d.jpg")],
        check=True,
    )  # fmt: skip
    return sorted(directory.glob("f_*.jpg"))


def encode(exe: str, frames: list[Path], preset: str, extra: list[str], out: Path) -> float:
    """CPU seconds (user + system) the encoder spent on ``frames``."""
    width, height = (int(v) for v in re.findall(r"\d+", frames_size(exe, frames[0])))
    args = encoder_args(EncoderSettings(exe, FPS, preset), width, height, os.fspath(out))
    args[-3:-3] = extra  # before "-f mp4 OUT"
    return encoder_cpu(exe, args, frames)


def encoder_cpu(exe: str, args: list[str], frames: list[Path]) -> float:
    """CPU seconds (user + system) an ffmpeg run with ``args`` spent on ``frames`` (its stdin)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([exe, *ffmpeg.COMMON_ARGS, *args], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for frame in frames:
        proc.stdin.write(frame.read_bytes())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"encoder failed: {args}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def frames_size(exe: str, frame: Path) -> str:
    from livestream.wire import jpeg

    width, height = jpeg.frame_size(frame.read_bytes())
    return f"{width}x{height}"


def ssim(exe: str, out: Path, frames_dir: Path, *, fps: int = FPS) -> float:
    """Mean SSIM of the recording against the JPEGs it was made from (at ``fps``, the rate the
    recording was encoded at, so that frame *i* meets JPEG *i*)."""
    done = subprocess.run(
        [exe, "-hide_banner", "-nostats", "-i", os.fspath(out), "-framerate", str(fps),
         "-i", os.fspath(frames_dir / "f_%05d.jpg"),
         "-lavfi", "[1:v]scale=out_range=tv,format=yuv420p[ref];[0:v][ref]ssim", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    match = re.search(r"All:([0-9.]+)", done.stderr)
    if match is None:
        raise RuntimeError(done.stderr[-500:])
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--source", default="testsrc2")
    options = parser.parse_args()
    exe = ffmpeg.find(None)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        frames_dir = Path(tmp)
        frames = make_frames(exe, frames_dir, options.frames, options.size, options.source)
        minutes = len(frames) / FPS / 60
        for preset, extra in CANDIDATES:
            out = frames_dir / "out.mp4"
            cpu = encode(exe, frames, preset, extra, out)
            print(json.dumps({
                "preset": preset,
                "x264": " ".join(extra) or "default threads",
                "cpu_s_per_min": round(cpu / minutes, 2),
                "realtime_streams": round(cores * 60 / (cpu / minutes), 1),
                "kbit_s": round(out.stat().st_size * 8 / (len(frames) / FPS) / 1000),
                "ssim": round(ssim(exe, out, frames_dir), 4),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
