"""Where the daemon's own CPU goes per frame, under one unpaced client (cProfile).

Two passes on fresh daemons: a plain one, whose CPU per frame (daemon and ffmpeg, from /proc) is
the real figure, and one under twistd's ``--profile`` (cProfile), whose table says which functions
spend the daemon's share. cProfile slows Python code down, so read its column as shares of the
daemon's time, and the plain pass for the absolute cost.

    .venv/bin/python -m bench.profile_daemon [--frames 900] [--wire json|binary] [--top 25]
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import load, run

PROFILED = (
    "{bin}/twistd -n --pidfile= --profile={prof} --profiler=cprofile --savestats livestream "
    "--listen tcp:{port}:interface=127.0.0.1 --media {media}"
)


@dataclass(frozen=True)
class Pass:
    frames: int
    cpu_server_s: float
    cpu_children_s: float
    seconds: float


async def one_pass(template: str, values: dict[str, str], media: load.Media, frames: int) -> Pass:
    """One daemon, one unpaced client of ``frames`` frames; CPU from /proc, as run samples it."""
    spec = run.ServerSpec(run.LIVESTREAM, template, "reply", values=values)
    tmp = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    server = run.RunningServer(spec, run.free_port(), tmp / "media", tmp / "server.log")
    try:
        await server.wait_listening()
        sampler = run.Sampler(server.proc.pid)
        sampler.start()
        started = time.monotonic()
        plans = load.make_plans("profile", 1, frames, None, False)
        results = await load.run_clients(
            server.port, plans, media, load.ReplyReadiness(), timeout=600
        )
        usage = sampler.stop()
        if results[0].failure:
            raise RuntimeError(f"the client failed: {results[0].failure}")
        elapsed = time.monotonic() - started
        return Pass(results[0].frames_sent, usage.cpu_server_s, usage.cpu_children_s, elapsed)
    finally:
        server.stop(timeout=120)  # the profiler writes its file after the reactor stops
        shutil.rmtree(tmp, ignore_errors=True)


def report(plain: Pass, stats: pstats.Stats, frames: int, top: int) -> str:
    """A plain-text table: the real per-frame costs first, then the profile's top functions."""
    us = 1e6 / plain.frames
    lines = [
        f"plain pass: {plain.frames} frames in {plain.seconds:.1f} s; per frame: daemon "
        f"{plain.cpu_server_s * us:.0f} us CPU, ffmpeg {plain.cpu_children_s * us:.0f} us CPU "
        f"(daemon/ffmpeg = {plain.cpu_server_s / max(plain.cpu_children_s, 1e-9):.1%})",
        "",
        f"cProfile pass, per frame ({frames} frames), by own time:",
        f"{'own us':>8} {'cum us':>8} {'share':>6} {'calls/fr':>8}  function",
    ]
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in entries.values()) or 1e-9
    ranked = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    for (file, line, name), (_, calls, tt, ct, _) in ranked:
        where = f"{Path(file).name}:{line}" if line else file
        lines.append(
            f"{tt * 1e6 / frames:8.0f} {ct * 1e6 / frames:8.0f} {tt / total:6.1%} "
            f"{calls / frames:8.1f}  {name} ({where})"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=900)
    p.add_argument("--wire", choices=("json", "binary"), default="json")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--size", default="640x480")
    p.add_argument("--source", default="mandelbrot")
    p.add_argument("--quality", type=int, default=3)
    p.add_argument("--save", type=Path, help="keep the cProfile stats in this file")
    return p.parse_args(argv)


async def main_async(args: argparse.Namespace) -> str:
    ffmpeg = load.find_ffmpeg()
    jpegs = load.make_jpegs(ffmpeg, 150, args.size, args.source, args.quality)
    media = load.Media.prepare(jpegs, run.RECORD_FPS, load.Wire(args.wire))
    values = {"bin": str(Path(sys.executable).parent)}
    plain = await one_pass(run.TEMPLATES[run.LIVESTREAM], values, media, args.frames)
    with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp:
        prof = Path(tmp) / "daemon.prof"
        profiled = await one_pass(PROFILED, {**values, "prof": str(prof)}, media, args.frames)
        stats = pstats.Stats(str(prof))
        if args.save:
            shutil.copyfile(prof, args.save)
    return report(plain, stats, profiled.frames, args.top)


def main(argv: Sequence[str] | None = None) -> None:
    print(asyncio.run(main_async(parse_args(argv))))


if __name__ == "__main__":
    main()
