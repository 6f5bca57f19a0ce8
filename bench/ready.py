"""CLOSE-to-ready of a long recording: the passthrough path beside the JPEG path.

One client sends ``--frames`` (4,500: five minutes at 15 fps) as fast as the daemon reads them,
then ``CLOSE``, and the figure is the time from ``CLOSE`` handed to the kernel to the ``CLOSED``
reply (the files complete and listed), on a fresh daemon per run, runs of the two paths
interleaved (``--repeat``, medians; losses: the worst run):

``jpeg``
    97 KB mandelbrot JPEGs, binary kind 0x01 (``long-1x4500`` of ``bench.run``, binary wire):
    an x264 encoder on the server, so the sender is held to the encoder's pace;
``h264``
    H.264 access units (0x21; testsrc2, libx264 baseline zerolatency, cycled in whole GOPs),
    recorded as sent.

The timestamps are frame i at i/15 s, so an unpaced sender runs ahead of the daemon's clock
(five minutes of timestamps in under a second); the daemon's default ``--timing frames`` does
not look at them, but with ``--livestream-args '--timing capture'`` it answers
``timestamp_discontinuity``: ``ERROR`` replies are listed, not hidden. Recordings are decoded
and counted as ``bench.run`` does.

    .venv/bin/python -m bench.ready [--frames 4500] [--repeat 3] [--audio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench import encoded, load, run

PATHS = ("jpeg", "h264")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=4500)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--paths", default=",".join(PATHS))
    p.add_argument("--audio", action="store_true", help="PCM with every frame (0x02 / 0x12)")
    p.add_argument("--quick", action="store_true", help="450 frames, one run")
    p.add_argument("--livestream-args", default="")
    p.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    args.paths = [x for x in args.paths.split(",") if x]
    if args.quick:
        args.frames, args.repeat = 450, 1
    return args


def _media(path: str, enc: encoded.Encoder, ffmpeg: str) -> load.Source:
    if path == "jpeg":
        jpegs = load.make_jpegs(ffmpeg, 150, "640x480", "mandelbrot", 3)
        return load.Media.prepare(jpegs, run.RECORD_FPS, load.Wire("binary"))
    clip = enc.h264("640x480", run.RECORD_FPS, 150, "testsrc2")
    return load.EncodedMedia.prepare(clip, None, run.RECORD_FPS, "binary")


async def main_async(args: argparse.Namespace) -> None:
    ffmpeg = load.find_ffmpeg()
    template = f"{run.TEMPLATES[run.LIVESTREAM]} {args.livestream_args}".strip()
    spec = run.ServerSpec(
        run.LIVESTREAM, template, "reply", values={"bin": str(Path(sys.executable).parent)}
    )
    opts = run.Options(args.tmp, 120, args.keep)
    name = f"long-1x{args.frames}"
    scenario = run.Scenario(name, 1, args.frames, None, args.audio, "640x480")
    runs: dict[str, list[run.Figures]] = {p: [] for p in args.paths}
    errors: dict[str, Counter[str]] = {p: Counter() for p in args.paths}  # and failures
    with tempfile.TemporaryDirectory(prefix="bench-encoded-", dir=args.tmp) as cache:
        enc = encoded.Encoder(ffmpeg, Path(cache))
        media = {p: _media(p, enc, ffmpeg) for p in args.paths}
        for n in range(args.repeat):
            for path in args.paths:
                run.progress(f"{name} {path}, run {n + 1}/{args.repeat}")
                figures = await run.run_once(spec, scenario, 1, media[path], opts)
                run.progress(
                    f"  CLOSE-to-ready {run._round(figures.close_to_ready_max_s)} s, "
                    f"ingest {run._round(figures.ingest_fps)} fps, lost "
                    f"{figures.lost_frames}/{figures.lost_samples}, errors {figures.errors}"
                )
                runs[path].append(figures)
                errors[path].update(figures.errors + figures.failures)
                print(json.dumps({"path": path, "run": n + 1, **asdict(figures)}), flush=True)
    print()
    print("| path | runs | CLOSE-to-ready s (median) | each run | ingest fps | daemon CPU s/min "
          "| children CPU s/min | lost frames / samples | errors, failures |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for path, figs in runs.items():
        line = run.median_figures(figs)
        each = ", ".join(f"{f.close_to_ready_max_s:.3f}" for f in figs if f.close_to_ready_max_s)
        print(f"| {path} | {len(figs)} | {_f(line['close_to_ready_median_s'], 3)} | {each} | "
              f"{_f(line['ingest_fps'], 0)} | {_f(line['cpu_server_s_per_min'])} | "
              f"{_f(line['cpu_children_s_per_min'], 1)} | {line['lost_frames']} / "
              f"{line['lost_samples']} | {', '.join(sorted(errors[path])) or '-'} |")  # fmt: skip


def _f(value: object, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    main()
