"""Capacity: how many real-time 640x480 15 fps sessions one daemon records, by path, side by side.

Three searches in one run, each on fresh daemons (one per step):

``jpeg+pcm``
    the seed's path: 97 KB mandelbrot JPEGs and PCM (binary kinds 0x01/0x02), an x264 encoder
    per session on the server;
``h264+pcm``
    the passthrough path: H.264 access units the client encoded (0x21, testsrc2, libx264
    baseline zerolatency, a keyframe every 2 s) and PCM in the timed form (0x12);
``h264+opus``
    the same with Opus packets (0x22, 32 kbit/s, 20 ms).

Each step runs N paced sessions of ``--seconds`` (20) for every N of its steps, then goes on by
the last increment until a step backs up: a session's sends fell more than 1 s behind its
schedule, a recording was not ready within 1 s of its CLOSE (the ``CLOSED`` reply), a session
failed, or anything sent is missing when every MP4 is decoded and every WAV counted. The largest
N that held is the capacity; if the last step tried held too, it is a lower bound and the
report says so. If the first step backs up, it is halved until one holds.

All N sessions start together and, by default, CLOSE together too: the daemon finishes N
recordings at once (for a passthrough session, one short ffmpeg for the faststart copy and one
for the poster, a third for an Opus session's WAV). ``--spread-ends 10`` makes session i of N
last i/N x 10 s longer, so the CLOSEs come evenly over 10 s while all N still record together
for the first 20 s: the capacity for streaming, apart from that burst.

Per step (one JSON line each on stdout, and a table at the end): sessions that kept up (each
judged alone by the rule above), CLOSE-to-ready median and max, the daemon's own CPU and its
children's per recorded minute (/proc), the daemon's RSS before the load and at its peak, and
their difference per session, the longest reactor stall (``livestream_reactor_lateness_*``
read before and after the step), frames and samples lost, and the load generator's own CPU: it
runs in this process on the same 2 cores, so a step where it needs a whole core says more about
the generator than about the daemon.

    .venv/bin/python -m bench.capacity                    # the three searches, 15-30 minutes
    .venv/bin/python -m bench.capacity --quick            # two tiny steps each: a smoke run
    .venv/bin/python -m bench.capacity --spread-ends 10   # CLOSEs over 10 s, not all at once
    .venv/bin/python -m bench.capacity --paths h264+pcm --steps 100,200 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench import encoded, load, run

FPS = 15
SIZE = "640x480"
MAX_LAG_S = 1.0
MAX_CLOSE_TO_READY_S = 1.0
TEMPLATE = (
    "{bin}/twistd -n --pidfile= livestream "
    "--listen tcp:{port}:interface=127.0.0.1:backlog=1024 --media {media} "
    "--max-sessions 100000"
)
LATENESS = "livestream_reactor_lateness_seconds"
LATENESS_MAX = "livestream_reactor_lateness_max_seconds"

PATHS = ("jpeg+pcm", "h264+pcm", "h264+opus")
DEFAULT_STEPS = {
    "jpeg+pcm": "8,12,16,20",
    "h264+pcm": "25,50,100,150,200,300,400",
    "h264+opus": "25,50,100,150,200,300,400",
}
QUICK_STEPS = {"jpeg+pcm": "1,2", "h264+pcm": "2,4", "h264+opus": "2,4"}


def progress(message: str) -> None:
    run.progress(message)


# --------------------------------------------------------------------------------------------
# The reactor's lateness, from /metrics


@dataclass(frozen=True)
class Lateness:
    """One scrape of the stall monitor: the histogram's cumulative counts and the maximum."""

    buckets: dict[float, float]  # upper bound (inf for +Inf) -> ticks late by at most that
    maximum: float

    @classmethod
    def parse(cls, text: str) -> Lateness:
        buckets: dict[float, float] = {}
        maximum = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{LATENESS}_bucket":
                    buckets[float(sample.labels["le"])] = sample.value
                elif sample.name == LATENESS_MAX:
                    maximum = sample.value
        if not buckets:
            raise ValueError(f"no {LATENESS} in /metrics: a daemon without the stall monitor")
        return cls(buckets, maximum)


def step_stall(before: Lateness, after: Lateness) -> tuple[float, bool]:
    """The longest stall between two scrapes, and whether it is exact.

    The gauge is the maximum since the daemon started: if it grew, the new value is this step's.
    If not, the step's longest is at most the old maximum, and at most the smallest bucket bound
    that holds every tick of the step (the histogram's difference): the lesser of the two, given
    as a bound.
    """
    if after.maximum > before.maximum:
        return after.maximum, True
    total = after.buckets[float("inf")] - before.buckets.get(float("inf"), 0)
    bound = min(
        (le for le, n in after.buckets.items() if n - before.buckets.get(le, 0) >= total),
        default=float("inf"),
    )
    return min(bound, before.maximum), False


async def scrape_lateness(port: int) -> Lateness:
    return Lateness.parse((await load.http_get(port, "/metrics")).decode("utf-8"))


# --------------------------------------------------------------------------------------------
# One step


@dataclass
class Step:
    path: str
    clients: int
    held: bool
    why: str | None
    kept_up: int
    close_to_ready_median_s: float | None
    close_to_ready_max_s: float | None
    max_send_lag_s: float | None
    recorded_minutes: float
    cpu_daemon_s_per_min: float
    cpu_children_s_per_min: float
    cpu_loadgen_s_per_min: float
    loadgen_cores: float
    background_cores: float
    rss_idle_mb: float
    rss_peak_mb: float
    rss_per_session_mb: float
    stall_max_s: float
    stall_exact: bool
    lost_frames: int
    lost_samples: int
    extra_frames: int
    wire_mb_per_min: float
    keyframe_requests: int
    errors: list[str]
    failures: list[str]
    wall_s: float


def spread_ends(plans: Sequence[load.ClientPlan], seconds: float) -> list[load.ClientPlan]:
    """Session i of N sends ``i/N * seconds`` longer: all start together and record together
    for the whole base length, and their CLOSEs come evenly over ``seconds`` rather than at
    once (0: at once)."""
    n = len(plans)
    return [
        dataclasses.replace(p, frames=p.frames + round(i * seconds * FPS / n))
        for i, p in enumerate(plans)
    ]


def session_trouble(
    r: load.ClientResult, loss: load.Loss, ready_limit: float = MAX_CLOSE_TO_READY_S
) -> str | None:
    """Why one session did not keep up, or None."""
    if r.failure:
        return f"failed: {r.failure}"
    if r.t_ready is None:
        return "not ready"
    if loss.frames or loss.samples:
        return f"lost {loss.frames} frames, {loss.samples} samples"
    if r.max_lag is not None and r.max_lag > MAX_LAG_S:
        return f"sends fell {r.max_lag:.2f} s behind (> {MAX_LAG_S} s)"
    ready = r.close_to_ready
    if ready is not None and ready > ready_limit:
        return f"CLOSE-to-ready {ready:.2f} s (> {ready_limit:g} s)"
    return None


def _check(r: load.ClientResult, media: Path) -> load.Loss:
    return load.check_output(r, media)


async def wait_quiet(limit: float, longest: float, window: float = 2.0) -> float:
    """Wait (at most ``longest`` s) until the machine's busy cores over ``window`` s are under
    ``limit``: other work on a shared machine (a test suite) would be measured as the daemon's
    slowness. Returns the busy cores of the last window."""
    deadline = time.monotonic() + longest
    while True:
        busy = run.machine_busy_s()
        await asyncio.sleep(window)
        cores = (run.machine_busy_s() - busy) / window
        if cores < limit or time.monotonic() >= deadline:
            return cores


async def run_step(
    path: str, clients: int, media: load.Source, seconds: float, opts: argparse.Namespace
) -> Step:
    """A fresh daemon, ``clients`` paced sessions at once, then every recording decoded."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-capacity-", dir=opts.tmp))
    media_dir = tmp / "media"
    template = f"{TEMPLATE} {opts.livestream_args}".strip()
    spec = run.ServerSpec(run.LIVESTREAM, template, "reply", values={"bin": opts.bin})
    server = run.RunningServer(spec, run.free_port(), media_dir, tmp / "server.log")
    frames = max(1, round(seconds * FPS))
    started = time.monotonic()
    try:
        await server.wait_listening()
        before = await scrape_lateness(server.port)
        idle = run.read_stat(server.proc.pid)
        rss_idle = idle.rss if idle else 0
        plans = spread_ends(
            load.make_plans(f"cap-{path.replace('+', '-')}-{clients}", clients, frames, FPS,
                            True),
            opts.spread_ends,
        )  # fmt: skip
        sampler = run.Sampler(server.proc.pid)
        own_cpu, busy, t = time.process_time(), run.machine_busy_s(), time.monotonic()
        sampler.start()
        try:
            timeout = opts.ready_timeout + seconds + opts.spread_ends
            results = await load.run_clients(server.port, plans, media, load.ReplyReadiness(),
                                              timeout)  # fmt: skip
            await run.children_gone(sampler, 60.0)
        finally:
            usage = sampler.stop()
        wall_load = max(time.monotonic() - t, 1e-9)
        loadgen = time.process_time() - own_cpu
        others = run.machine_busy_s() - busy - loadgen - usage.cpu_server_s - usage.cpu_children_s
        after = await scrape_lateness(server.port)
    finally:
        server.stop()
    progress(f"    decoding {len(results)} recordings")
    with ProcessPoolExecutor(max_workers=2) as pool:
        losses = list(pool.map(_check, results, [media_dir] * len(results)))
    if not opts.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    troubles = [
        session_trouble(r, x, opts.max_close_to_ready) for r, x in zip(results, losses, strict=True)
    ]
    summary = load.summarize(results, FPS)
    minutes = summary["recorded_minutes"] or 1e-9
    stall, exact = step_stall(before, after)
    first = next((w for w in troubles if w), None)
    failing = sum(1 for w in troubles if w)
    return Step(
        path=path,
        clients=clients,
        held=failing == 0,
        why=f"{failing} of {clients}: {first}" if first else None,
        kept_up=clients - failing,
        close_to_ready_median_s=summary["close_to_ready_median_s"],
        close_to_ready_max_s=summary["close_to_ready_max_s"],
        max_send_lag_s=summary["max_send_lag_s"],
        recorded_minutes=minutes,
        cpu_daemon_s_per_min=usage.cpu_server_s / minutes,
        cpu_children_s_per_min=usage.cpu_children_s / minutes,
        cpu_loadgen_s_per_min=loadgen / minutes,
        loadgen_cores=loadgen / wall_load,
        background_cores=max(0.0, others) / wall_load,
        rss_idle_mb=rss_idle / run.MB,
        rss_peak_mb=usage.peak_rss_server / run.MB,
        rss_per_session_mb=(usage.peak_rss_server - rss_idle) / run.MB / clients,
        stall_max_s=stall,
        stall_exact=exact,
        lost_frames=sum(x.frames for x in losses),
        lost_samples=sum(x.samples for x in losses),
        extra_frames=sum(x.extra_frames for x in losses),
        wire_mb_per_min=summary["bytes_sent"] / run.MB / minutes,
        keyframe_requests=summary["keyframe_requests"],
        errors=sorted(set(summary["errors"])),
        failures=summary["failures"][:5],
        wall_s=time.monotonic() - started,
    )


# --------------------------------------------------------------------------------------------
# The searches


def source_for(path: str, enc: encoded.Encoder, ffmpeg: str, quick: bool) -> load.Source:
    if path == "jpeg+pcm":
        progress("making 150 mandelbrot JPEG frames (97 KB each)")
        jpegs = load.make_jpegs(ffmpeg, 15 if quick else 150, SIZE, "mandelbrot", 3)
        return load.Media.prepare(jpegs, FPS, load.Wire("binary"))
    clip = enc.h264(SIZE, FPS, 150, "testsrc2")
    opus = enc.opus(10) if path == "h264+opus" else None
    return load.EncodedMedia.prepare(clip, opus, FPS, "binary")


async def search(
    path: str, media: load.Source, steps: Sequence[int], limit: int, opts: argparse.Namespace
) -> list[Step]:
    """Steps up from ``steps`` (then by their last increment, up to ``limit``) until one backs
    up; if the very first backs up, halves it until one holds (or 1 did not). Every step tried,
    in order."""
    done: list[Step] = []

    async def one(clients: int) -> Step:
        if opts.wait_quiet:
            cores = await wait_quiet(opts.quiet_cores, opts.wait_quiet)
            progress(f"{path}: machine at {cores:.2f} busy cores before the step")
        progress(f"{path}: {clients} sessions of {opts.seconds:g} s")
        step = await run_step(path, clients, media, opts.seconds, opts)
        progress(
            f"  {step.why or 'held'} (stall {step.stall_max_s:.3f} s, loadgen "
            f"{step.loadgen_cores:.2f} cores, others {step.background_cores:.2f})"
        )
        print(json.dumps({"step": asdict(step)}), flush=True)
        done.append(step)
        return step

    for clients in run.step_counts(steps, limit):
        if not (await one(clients)).held:
            break
    clients = done[0].clients
    while not any(s.held for s in done) and clients > 1:
        clients //= 2
        await one(clients)
    return done


def capacity_of(steps: Sequence[Step]) -> tuple[int, bool]:
    """The largest count that held, and whether it is only a lower bound (no larger count
    was tried and backed up)."""
    best = max((s.clients for s in steps if s.held), default=0)
    return best, bool(steps) and not any(s.clients > best and not s.held for s in steps)


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, list[Step]]) -> str:
    head = (
        "path", "sessions", "kept up", "ready median s", "max s", "daemon CPU s/min",
        "children CPU s/min", "loadgen CPU s/min (cores)", "daemon RSS MB idle/peak",
        "RSS/session MB", "longest stall s", "lost frames/samples", "other load (cores)",
        "backed up because",
    )  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path, steps in results.items():
        for s in steps:
            stall = f"{s.stall_max_s:.3f}" if s.stall_exact else f"<= {s.stall_max_s:.3f}"
            rows.append("| " + " | ".join([
                path, str(s.clients), str(s.kept_up), _f(s.close_to_ready_median_s),
                _f(s.close_to_ready_max_s), _f(s.cpu_daemon_s_per_min),
                _f(s.cpu_children_s_per_min, 1),
                f"{_f(s.cpu_loadgen_s_per_min)} ({s.loadgen_cores:.2f})",
                f"{s.rss_idle_mb:.0f} / {s.rss_peak_mb:.0f}", _f(s.rss_per_session_mb, 3),
                stall, f"{s.lost_frames} / {s.lost_samples}", f"{s.background_cores:.2f}",
                s.why or "",
            ]) + " |")  # fmt: skip
    return "\n".join(rows)


def summary_lines(results: dict[str, list[Step]], spread: float) -> list[str]:
    when = f"CLOSEs spread over {spread:g} s" if spread else "all CLOSE at once"
    out = []
    for path, steps in results.items():
        best, lower = capacity_of(steps)
        note = " (a lower bound: the last step tried still held)" if lower else ""
        background = statistics.fmean(s.background_cores for s in steps) if steps else 0.0
        out.append(f"capacity {path} ({when}): {best}{note}; other processes used "
                   f"{background:.2f} cores on average meanwhile")  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paths", default=",".join(PATHS), help="of: " + ", ".join(PATHS))
    for path in PATHS:
        p.add_argument(f"--steps-{path.replace('+', '-')}", dest=f"steps_{path}",
                       help=f"first session counts of {path} (default {DEFAULT_STEPS[path]}); "
                            "then on by the last increment")  # fmt: skip
    p.add_argument("--steps", help="first session counts for every path chosen")
    p.add_argument("--max-clients", type=int, default=1000,
                   help="no step above this: past it, the capacity is a lower bound")  # fmt: skip
    p.add_argument("--jpeg-max-clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20, help="length of each session")
    p.add_argument(
        "--spread-ends",
        type=float,
        default=0.0,
        metavar="S",
        help="session i of N goes on i/N*S s longer: the CLOSEs come over S s instead of all "
        "at once (streaming apart from the finalize burst)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=120,
        metavar="S",
        help="before each step wait up to S s for the machine to be quiet (0: not)",
    )
    p.add_argument(
        "--quiet-cores", type=float, default=0.15, help="quiet: fewer busy cores than this over 2 s"
    )
    p.add_argument("--max-close-to-ready", type=float, default=MAX_CLOSE_TO_READY_S,
                   help="the rule's bound on CLOSE-to-ready, s; a large one measures streaming "
                        "alone (sends on time, nothing lost)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="two tiny steps per path of 3 s")
    p.add_argument("--ready-timeout", type=float, default=120)
    p.add_argument("--livestream-args", default="", help="appended to the daemon's command")
    p.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--keep", action="store_true", help="keep media directories and logs")
    p.add_argument("--json-out", type=Path, help="also write the steps as JSON lines here")
    args = p.parse_args(argv)
    args.paths = [x.strip() for x in args.paths.split(",") if x.strip()]
    if bad := [x for x in args.paths if x not in PATHS]:
        p.error(f"unknown paths {bad}; choose from {', '.join(PATHS)}")
    args.bin = str(Path(sys.executable).parent)
    defaults = QUICK_STEPS if args.quick else DEFAULT_STEPS
    args.plan = {}
    for path in args.paths:
        text = getattr(args, f"steps_{path}") or args.steps or defaults[path]
        steps = [int(x) for x in text.split(",")]
        limit = args.jpeg_max_clients if path == "jpeg+pcm" else args.max_clients
        args.plan[path] = (steps, steps[-1] if args.quick else limit)
    if args.quick:
        args.seconds = min(args.seconds, 3)
    return args


async def main_async(args: argparse.Namespace) -> None:
    ffmpeg = load.find_ffmpeg()
    results: dict[str, list[Step]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-encoded-", dir=args.tmp) as cache:
        enc = encoded.Encoder(ffmpeg, Path(cache))
        for path in args.paths:
            media = source_for(path, enc, ffmpeg, args.quick)
            steps, limit = args.plan[path]
            results[path] = await search(path, media, steps, limit, args)
            if args.json_out:
                with open(args.json_out, "a") as out:
                    for step in results[path]:
                        out.write(json.dumps(asdict(step)) + "\n")
    print()
    print(table(results))
    print()
    for line in summary_lines(results, args.spread_ends):
        print(line)
    progress(f"done in {time.monotonic() - started:.0f} s")


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    main()
