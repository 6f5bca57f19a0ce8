"""Bytes on the wire per recorded minute, and the picture the recording keeps, by path.

For one source clip (``testsrc2`` 640x480 at 15 fps, and the same with sensor-like temporal
noise, which is closer to what a camera gives and much harder to compress), each path sends the
same frames to a fresh daemon in one session, and the table gives what went on the wire per
recorded minute (every WebSocket frame, headers included: video, audio, total) and the SSIM of
the recorded MP4, decoded, against the source frames themselves (ffmpeg's ``ssim`` filter, frame
by frame, both taken to limited-range yuv420p first):

``jpeg+pcm``
    JPEGs of the frames (``-q:v`` 3, the bench's default), PCM; the daemon encodes with x264.
    The row also gives the JPEGs' own SSIM: the JPEG path loses twice, on the client and on the
    server; on the H.264 rows the two columns should agree (the daemon copies the stream).
``h264+pcm``, ``h264+opus``
    the client's H.264 (libx264 baseline, ``-preset veryfast -tune zerolatency``, a keyframe
    every 2 s, CRF 23 unless ``--x264`` says otherwise), recorded as sent; PCM in the timed form
    or Opus at 32 kbit/s. The SSIM is the client encoder's: the daemon copies the stream.

    .venv/bin/python -m bench.bandwidth [--frames 300] [--sources testsrc2,noisy]
        [--x264 '-b:v 1M -maxrate 1M -bufsize 1M']
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import encoded, load, run

FPS = 15
GOP = 30
SIZE = "640x480"
SOURCES = {
    "testsrc2": ("testsrc2", ""),
    # Sensor-like noise, changing every frame (as bench/presets.py makes its "camera" frames).
    "noisy": ("testsrc2", "noise=alls=6:allf=t"),
}
PATHS = ("jpeg+pcm", "h264+pcm", "h264+opus")
TEMPLATE = (
    "{bin}/twistd -n --pidfile= livestream --listen tcp:{port}:interface=127.0.0.1 --media {media}"  # noqa: E501
)
# Both sides to the same pixels before comparing (a JPEG-sourced recording is full range), and
# to frame numbers as timestamps: setpts=N/(15*TB) rounds differently in a 1/1000 time base
# (Matroska) than in 1/90000 (MP4), and the ssim filter then paired every third frame wrongly.
NORMALIZE = "scale=out_range=tv,format=yuv420p,settb=1/15,setpts=N"


@dataclass(frozen=True)
class Row:
    source: str
    path: str
    frames: int
    video_mb_per_min: float
    audio_mb_per_min: float
    wire_mb_per_min: float
    recording_mb_per_min: float
    ssim_recording: float | None
    ssim_sent: float | None  # what the client sent (JPEGs, or its H.264) against the source
    lost_frames: int
    lost_samples: int
    errors: list[str]
    failure: str | None


def ssim(ffmpeg: str, distorted: Path, reference: Path, image2: bool = False) -> float | None:
    """ffmpeg's mean SSIM (All) of ``distorted`` against ``reference``, frame by frame;
    ``image2``: ``distorted`` is a numbered-file pattern."""
    pattern = ["-f", "image2", "-framerate", str(FPS)] if image2 else []
    done = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostats", *pattern, "-i", str(distorted),
         "-i", str(reference),
         "-lavfi", f"[0:v]{NORMALIZE}[a];[1:v]{NORMALIZE}[b];[a][b]ssim", "-f", "null", "-"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip
    found = re.findall(r"SSIM .* All:([0-9.]+)", done.stderr)
    return float(found[-1]) if found else None


def split_bytes(media: load.Source, frames: int) -> tuple[int, int]:
    """The video and the audio bytes of the messages a client sends for ``frames`` frames."""
    video = audio = 0
    for i in range(frames):
        sent = media.frame(i, 0, True)
        video += len(sent.messages[0])
        audio += sum(len(m) for m in sent.messages[1:])
    return video, audio


async def record(media: load.Source, frames: int, tmp: Path, bin_dir: str):
    """One unpaced session on a fresh daemon: its result, and where its media went."""
    spec = run.ServerSpec(run.LIVESTREAM, TEMPLATE, "reply", values={"bin": bin_dir})
    media_dir = tmp / "media"
    server = run.RunningServer(spec, run.free_port(), media_dir, tmp / "server.log")
    try:
        await server.wait_listening()
        plans = load.make_plans("bw", 1, frames, None, True)
        [result] = await load.run_clients(server.port, plans, media, load.ReplyReadiness(), 300)
    finally:
        server.stop()
    return result, media_dir


async def measure(
    source: str, path: str, frames: int, enc: encoded.Encoder, args: argparse.Namespace
) -> Row:
    lavfi, vf = SOURCES[source]
    frames = -(-frames // GOP) * GOP  # whole GOPs, so every path sends the same frames
    reference = enc.source(SIZE, FPS, frames, lavfi, vf)
    sent_ssim = None
    if path == "jpeg+pcm":
        directory = enc.jpeg_directory(SIZE, FPS, frames, lavfi, vf, args.quality)
        jpegs = tuple(p.read_bytes() for p in sorted(directory.glob("f_*.jpg")))
        media: load.Source = load.Media.prepare(jpegs, FPS, load.Wire("binary"))
        sent_ssim = ssim(enc.ffmpeg, directory / "f_%05d.jpg", reference, image2=True)
    else:
        clip = enc.h264(SIZE, FPS, frames, lavfi, vf, gop=GOP, x264=args.x264.split())
        opus = enc.opus(frames / FPS + 1) if path == "h264+opus" else None
        media = load.EncodedMedia.prepare(clip, opus, FPS, "binary")
        assert clip.file is not None
        sent_ssim = ssim(enc.ffmpeg, clip.file, reference)
    tmp = Path(tempfile.mkdtemp(prefix="bench-bandwidth-", dir=args.tmp))
    try:
        result, media_dir = await record(media, frames, tmp, args.bin)
        loss = load.check_output(result, media_dir)
        mp4 = media_dir / "video" / result.video if result.video else None
        got = ssim(enc.ffmpeg, mp4, reference) if mp4 and mp4.exists() else None
        size = mp4.stat().st_size if mp4 and mp4.exists() else 0
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    minutes = frames / FPS / 60
    video, audio = split_bytes(media, frames)
    return Row(
        source=source, path=path, frames=frames,
        video_mb_per_min=video / run.MB / minutes, audio_mb_per_min=audio / run.MB / minutes,
        wire_mb_per_min=result.bytes_sent / run.MB / minutes,
        recording_mb_per_min=size / run.MB / minutes,
        ssim_recording=got, ssim_sent=sent_ssim,
        lost_frames=loss.frames, lost_samples=loss.samples,
        errors=sorted(set(result.errors)), failure=result.failure,
    )  # fmt: skip


def table(rows: Sequence[Row]) -> str:
    head = (
        "source", "path", "video MB/min", "audio MB/min", "wire MB/min (kbit/s)",
        "recording MB/min", "SSIM of the recording", "SSIM of what was sent", "lost",
    )  # fmt: skip
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        kbit = r.wire_mb_per_min * 8e3 / 60
        cells = [
            r.source, r.path, f"{r.video_mb_per_min:.2f}", f"{r.audio_mb_per_min:.2f}",
            f"{r.wire_mb_per_min:.2f} ({kbit:.0f})", f"{r.recording_mb_per_min:.2f}",
            "-" if r.ssim_recording is None else f"{r.ssim_recording:.4f}",
            "-" if r.ssim_sent is None else f"{r.ssim_sent:.4f}",
            f"{r.lost_frames} / {r.lost_samples}" + (f" ({r.failure})" if r.failure else ""),
        ]  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=300, help="frames per session (whole GOPs)")
    p.add_argument("--sources", default=",".join(SOURCES), help="of: " + ", ".join(SOURCES))
    p.add_argument("--paths", default=",".join(PATHS))
    p.add_argument("--quality", type=int, default=3, help="JPEG -q:v")
    p.add_argument("--x264", default="", help="the client encoder's rate control, e.g. '-crf 28'")
    p.add_argument("--quick", action="store_true", help="60 frames of testsrc2")
    p.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    args.sources = [s for s in args.sources.split(",") if s]
    args.paths = [s for s in args.paths.split(",") if s]
    if args.quick:
        args.frames, args.sources = 60, ["testsrc2"]
    args.bin = str(Path(sys.executable).parent)
    return args


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-encoded-", dir=args.tmp) as cache:
        enc = encoded.Encoder(load.find_ffmpeg(), Path(cache))
        for source in args.sources:
            for path in args.paths:
                run.progress(f"{source}: {path}, {args.frames} frames")
                row = await measure(source, path, args.frames, enc, args)
                print(json.dumps(asdict(row)), flush=True)
                rows.append(row)
    print()
    print(table(rows))


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    main()
