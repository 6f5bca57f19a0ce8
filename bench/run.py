"""Benchmark runner: livestream against the old Node.js server, side by side, one JSON line each.

For every scenario and server it starts the server from a command template on a free port with a
fresh media directory, drives it with the load generator (``load``), samples the server and all
its descendants from /proc every 0.1 s, decodes what was recorded, stops the server, and prints one
JSON line of figures; with ``--repeat N`` each figure is the median of N runs. When both servers
ran a scenario, the livestream line also carries each figure as a ratio livestream/seed.

Run it with the project's venv: ``.venv/bin/python -m bench.run`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import load

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_SEED = REPO.parent / "shared" / "seed-node"
DEFAULT_CACHE = BENCH / ".cache"
RECORD_FPS = 15
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1e6

LIVESTREAM = "livestream"
SEED = "seed"
TEMPLATES = {
    LIVESTREAM: "{bin}/twistd -n --pidfile= livestream "
    "--listen tcp:{port}:interface=127.0.0.1 --media {media}",
    SEED: "node {seed}/index.js",
}

CAPACITY = "capacity-640x480-15fps-audio"
CAPACITY_SIZE = "640x480"
# A capacity step "backs up" when any client's sends fall more than MAX_LAG_S behind its 15 fps
# schedule, any recording is not ready within MAX_CLOSE_TO_READY_S of its CLOSE, or anything sent
# is missing from the decoded recordings.
MAX_LAG_S = 1.0
MAX_CLOSE_TO_READY_S = 2.0

RATIO_KEYS = (
    "ingest_fps", "close_to_ready_median_s", "close_to_ready_max_s", "cpu_server_s_per_min",
    "cpu_children_s_per_min", "peak_rss_server_mb", "peak_rss_children_mb",
)  # fmt: skip
# A capacity line's other figures are of different client counts on the two servers; only the
# count itself and the per-recorded-minute figures compare.
CAPACITY_RATIO_KEYS = (
    "capacity", "close_to_ready_median_s", "close_to_ready_max_s", "cpu_server_s_per_min",
    "cpu_children_s_per_min",
)  # fmt: skip


def progress(message: str) -> None:
    """Progress goes to stderr, so stdout holds nothing but the JSON lines."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    clients: int
    frames: int
    pace_fps: float | None
    audio: bool
    size: str
    steps: tuple[int, ...] = ()  # capacity: the client counts tried first, in order
    step_limit: int = 0  # capacity: past ``steps`` go on by their last increment up to this


def step_counts(steps: Sequence[int], limit: int) -> Iterator[int]:
    """The counts a capacity search tries: ``steps``, then on by the last increment (16, 20,
    24, ...) while the count is at most ``limit``, so that a search ends where the server backs
    up and not where a list ran out."""
    yield from steps
    if len(steps) < 2 or steps[-1] <= steps[-2]:
        return
    count, increment = steps[-1], steps[-1] - steps[-2]
    while count + increment <= limit:
        count += increment
        yield count


def scenarios(
    quick: bool, size: str, steps: Sequence[int], seconds: float, limit: int = 0
) -> list[Scenario]:
    """The fixed scenario names; ``quick`` shrinks every count for a smoke run."""
    k = 10 if quick else 1
    capacity_frames = max(1, round(seconds * RECORD_FPS))
    return [
        Scenario("paced-1x15fps-audio", 1, 300 // k, RECORD_FPS, True, size),
        Scenario("unpaced-1x900", 1, 900 // k, None, False, size),
        Scenario("unpaced-8x300", 8, 300 // k, None, False, size),
        Scenario("long-1x4500", 1, 4500 // k, None, False, size),
        Scenario(CAPACITY, steps[0], capacity_frames, RECORD_FPS, True, CAPACITY_SIZE,
                 tuple(steps), limit),
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Sampling the server and its children from /proc


@dataclass(frozen=True)
class Stat:
    ppid: int
    comm: str
    cpu: float  # utime + stime of the process itself, seconds
    reaped: float  # cutime + cstime: children it has waited for, seconds
    rss: int  # bytes


def read_stat(pid: int) -> Stat | None:
    """One process's /proc/<pid>/stat, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    f = raw[raw.rindex(")") + 2 :].split()  # f[0] is field 3 of proc(5)
    return Stat(
        ppid=int(f[1]),
        comm=comm,
        cpu=(int(f[11]) + int(f[12])) / CLK_TCK,
        reaped=(int(f[13]) + int(f[14])) / CLK_TCK,
        rss=int(f[21]) * PAGE,
    )


def children(pid: int) -> list[int]:
    """Direct children, from /proc/<pid>/task/*/children (every thread can fork)."""
    kids: list[int] = []
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                kids.extend(int(x) for x in Path(task.path, "children").read_text().split())
            except FileNotFoundError:
                continue
    except FileNotFoundError:
        pass
    return kids


def descendants(pid: int, limit: int = 1000) -> list[int]:
    found: list[int] = []
    todo = children(pid)
    while todo and len(found) < limit:
        child = todo.pop()
        found.append(child)
        todo.extend(children(child))
    return found


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat), to see who else ran."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def peak_rss(pid: int) -> int:
    """The kernel's own high-water mark of a process's RSS (VmHWM): exact, not sampled."""
    return status_bytes(pid, "VmHWM")


def status_bytes(pid: int, key: str) -> int:
    """A size of /proc/<pid>/status (``VmRSS``, ``VmHWM``...) in bytes; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


@dataclass(frozen=True)
class CpuTotals:
    server: float
    children: float


@dataclass
class Usage:
    cpu_server_s: float = 0.0
    cpu_children_s: float = 0.0
    peak_rss_server: int = 0
    peak_rss_children: int = 0
    cpu_loadgen_s: float = 0.0  # this process: the clients, the readiness polls, the sampler
    # Busy cores of everything else on the machine meanwhile: a run to distrust if well above 0.
    background_cores: float = 0.0


class Sampler:
    """Samples a server process tree every ``interval`` s in a thread of its own.

    Children's CPU is what the server has reaped (cutime + cstime) plus what its live descendants
    have used so far; a child counts in exactly one of the two, so nothing is counted twice. CPU
    figures are the difference between the first and the last sample. Children's RSS is summed
    per sample, leaving out forks that have not yet exec'd (they share the server's pages).
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._start: CpuTotals | None = None
        self._last: CpuTotals | None = None
        self.usage = Usage()

    def start(self) -> None:
        self._start = self.sample()
        self._thread.start()

    def stop(self) -> Usage:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()
        if self._start is not None and self._last is not None:
            self.usage.cpu_server_s = self._last.server - self._start.server
            self.usage.cpu_children_s = self._last.children - self._start.children
        self.usage.peak_rss_server = max(self.usage.peak_rss_server, peak_rss(self._pid))
        return self.usage

    def live_children(self) -> int:
        return len(descendants(self._pid))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def sample(self) -> CpuTotals | None:
        own = read_stat(self._pid)
        if own is None:
            return None
        live = [s for s in map(read_stat, descendants(self._pid)) if s is not None]
        totals = CpuTotals(own.cpu, own.reaped + sum(s.cpu for s in live))
        rss = sum(s.rss for s in live if s.comm != own.comm)
        self.usage.peak_rss_server = max(self.usage.peak_rss_server, own.rss)
        self.usage.peak_rss_children = max(self.usage.peak_rss_children, rss)
        self._last = totals
        return totals


# --------------------------------------------------------------------------------------------
# Servers


class Unavailable(Exception):
    """A server cannot be run here; the message says why, and the run goes on without it."""


@dataclass(frozen=True)
class ServerSpec:
    kind: str
    template: str
    readiness: str  # "reply" or "listing"
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    values: dict[str, str] = field(default_factory=dict)

    def argv(self, port: int, media: Path) -> list[str]:
        values = {k: shlex.quote(v) for k, v in self.values.items()}
        text = self.template.format(port=port, media=shlex.quote(str(media)), **values)
        return shlex.split(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((load.HOST, 0))
        return s.getsockname()[1]


def prepare_seed(source: Path, cache: Path) -> Path:
    """A scratch copy of the seed with its node_modules, made once per version of its files."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise Unavailable("node and npm are needed for the seed server; they are not on PATH")
    files = ("index.js", "package.json", "package-lock.json")
    if not all((source / f).is_file() for f in files[:2]):
        raise Unavailable(f"no seed server at {source} (pass --seed-dir)")
    digest = hashlib.sha256()
    for name in files:
        if (source / name).is_file():
            digest.update((source / name).read_bytes())
    dest = cache / f"seed-node-{digest.hexdigest()[:12]}"
    if (dest / ".installed").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in files:
        if (source / name).is_file():
            shutil.copyfile(source / name, dest / name)  # not copy2: the source is read-only
    progress(f"npm install in {dest}")
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=dest, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise Unavailable(f"npm install of the seed failed: {done.stderr.strip()[-500:]}")
    (dest / ".installed").touch()
    return dest


def ffmpeg_bin_dir(ffmpeg: str, cache: Path) -> Path:
    """A directory whose ``ffmpeg`` is the daemon's: the seed runs whatever ffmpeg is on PATH."""
    bin_dir = cache / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "ffmpeg"
    if not link.exists() or os.path.realpath(link) != os.path.realpath(ffmpeg):
        link.unlink(missing_ok=True)
        link.symlink_to(ffmpeg)
    return bin_dir


def server_specs(args: argparse.Namespace, ffmpeg: str) -> dict[str, ServerSpec]:
    specs: dict[str, ServerSpec] = {}
    for kind in args.servers:
        template = args.template.get(kind, TEMPLATES[kind])
        if kind == LIVESTREAM:
            if args.livestream_args:
                template = f"{template} {args.livestream_args}"
            specs[kind] = ServerSpec(kind, template, "reply", values={"bin": args.bin})
            continue
        try:
            seed = prepare_seed(args.seed_dir, args.cache)
        except (Unavailable, OSError, subprocess.TimeoutExpired) as e:
            progress(f"skipping the seed server: {e}")
            continue
        bin_dir = ffmpeg_bin_dir(ffmpeg, args.cache)
        env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "FFMPEG_PATH": ffmpeg}
        specs[kind] = ServerSpec(kind, template, "listing", env, seed, {"seed": str(seed)})
    return specs


class RunningServer:
    """A server process of ours: started in its own session, stopped by its pid only."""

    def __init__(self, spec: ServerSpec, port: int, media: Path, log: Path) -> None:
        env = {**os.environ, **spec.env, "PORT": str(port), "MEDIA_DIR": str(media)}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                spec.argv(port, media), env=env, cwd=spec.cwd, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.port = port
        self.log = log

    async def wait_listening(
        self, timeout: float = 60.0, path: str = "/recordings", interval: float = 0.1
    ) -> None:
        """Until GET ``path`` answers 200 with JSON; ``path`` can be a cheap one (``/healthz``)
        where the listing is large, so the wait does not load what it waits for."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"server exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                await load.http_get_json(self.port, path, timeout=2)
                return
            except (OSError, TimeoutError, load.WebSocketError, ValueError):
                await asyncio.sleep(interval)
        raise Unavailable(f"server did not answer GET {path} in {timeout} s")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# --------------------------------------------------------------------------------------------
# One run of one scenario on one server


@dataclass
class Figures:
    """The figures of one run; the printed line holds medians of these over the repeats."""

    clients: int
    frames_per_client: int
    ingest_fps: float | None
    close_to_ready_median_s: float | None
    close_to_ready_max_s: float | None
    max_send_lag_s: float | None
    cpu_server_s_per_min: float
    cpu_children_s_per_min: float
    cpu_loadgen_s_per_min: float
    background_cores: float
    peak_rss_server_mb: float
    peak_rss_children_mb: float
    lost_frames: int
    lost_samples: int
    extra_frames: int
    not_ready: int
    unlisted: int
    wall_s: float
    failures: list[str]
    errors: list[str]

    def backed_up(self) -> str | None:
        """Why a capacity step did not keep up, or None if it did."""
        if self.failures or self.not_ready:
            return f"{self.not_ready} not ready: {'; '.join(self.failures)[:200]}"
        if self.lost_frames or self.lost_samples:
            return f"lost {self.lost_frames} frames, {self.lost_samples} samples"
        if self.max_send_lag_s is not None and self.max_send_lag_s > MAX_LAG_S:
            return f"sends fell {self.max_send_lag_s:.2f} s behind (> {MAX_LAG_S} s)"
        if (
            self.close_to_ready_max_s is not None
            and self.close_to_ready_max_s > MAX_CLOSE_TO_READY_S
        ):
            return f"CLOSE-to-ready {self.close_to_ready_max_s:.2f} s (> {MAX_CLOSE_TO_READY_S} s)"
        return None


@dataclass(frozen=True)
class Options:
    tmp: Path
    ready_timeout: float
    keep: bool


async def run_once(
    spec: ServerSpec, scenario: Scenario, clients: int, media: load.Media, opts: Options
) -> Figures:
    """Fresh media directory, fresh server, one load, then the decoded check of what it wrote."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{spec.kind}-", dir=opts.tmp))
    media_dir = tmp / "media"
    server = RunningServer(spec, free_port(), media_dir, tmp / "server.log")
    started = time.monotonic()
    try:
        await server.wait_listening()
        own_cpu, busy, t = time.process_time(), machine_busy_s(), time.monotonic()
        results, usage, unlisted = await _drive(
            server, spec, scenario, clients, media, media_dir, opts
        )
        usage.cpu_loadgen_s = time.process_time() - own_cpu
        others = machine_busy_s() - busy - usage.cpu_loadgen_s
        others -= usage.cpu_server_s + usage.cpu_children_s
        usage.background_cores = max(0.0, others) / max(time.monotonic() - t, 1e-9)
    finally:
        server.stop()
    wall = time.monotonic() - started
    loss = load.check_outputs(results, media_dir)
    if not opts.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return _figures(scenario, results, usage, loss, unlisted, wall)


async def _drive(
    server: RunningServer,
    spec: ServerSpec,
    scenario: Scenario,
    clients: int,
    media: load.Media,
    media_dir: Path,
    opts: Options,
) -> tuple[list[load.ClientResult], Usage, int]:
    readiness: load.Readiness = (
        load.ReplyReadiness()
        if spec.readiness == "reply"
        else load.ListingReadiness(server.port, media_dir)
    )
    plans = load.make_plans(
        f"bench-{spec.kind}-{int(time.time() * 1000) % 10**8}",
        clients, scenario.frames, scenario.pace_fps, scenario.audio,
    )  # fmt: skip
    sampler = Sampler(server.proc.pid)
    sampler.start()
    try:
        timeout = opts.ready_timeout + scenario.frames * clients * 0.05
        if scenario.pace_fps:
            timeout += scenario.frames / scenario.pace_fps
        results = await load.run_clients(server.port, plans, media, readiness, timeout)
        await children_gone(sampler, 60.0)
    finally:
        usage = sampler.stop()
    unlisted = await _unlisted(server.port, results)
    return results, usage, unlisted


async def children_gone(sampler: Sampler, timeout: float) -> None:
    """Wait for the server's encoders to exit, so their CPU is all counted (bounded)."""
    deadline = time.monotonic() + timeout
    while sampler.live_children() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def _unlisted(port: int, results: Sequence[load.ClientResult]) -> int:
    """Files a client was told about (or found) that GET /recordings does not list."""
    listing = await load.http_get_json(port, "/recordings")
    assert isinstance(listing, dict)
    named = [(k, getattr(r, k)) for r in results for k in ("video", "audio") if getattr(r, k)]
    return sum(1 for kind, name in named if name not in listing.get(kind, []))


def _figures(
    scenario: Scenario,
    results: list[load.ClientResult],
    usage: Usage,
    loss: load.Loss,
    unlisted: int,
    wall: float,
) -> Figures:
    s = load.summarize(results, RECORD_FPS)
    minutes = s["recorded_minutes"] or 1e-9
    return Figures(
        clients=len(results),
        frames_per_client=scenario.frames,
        ingest_fps=s["ingest_fps"],
        close_to_ready_median_s=s["close_to_ready_median_s"],
        close_to_ready_max_s=s["close_to_ready_max_s"],
        max_send_lag_s=s["max_send_lag_s"],
        cpu_server_s_per_min=usage.cpu_server_s / minutes,
        cpu_children_s_per_min=usage.cpu_children_s / minutes,
        cpu_loadgen_s_per_min=usage.cpu_loadgen_s / minutes,
        background_cores=usage.background_cores,
        peak_rss_server_mb=usage.peak_rss_server / MB,
        peak_rss_children_mb=usage.peak_rss_children / MB,
        lost_frames=loss.frames,
        lost_samples=loss.samples,
        extra_frames=loss.extra_frames,
        not_ready=s["not_ready"],
        unlisted=unlisted,
        wall_s=wall,
        failures=s["failures"],
        errors=s["errors"],
    )


# --------------------------------------------------------------------------------------------
# Scenarios over repeats, capacity search, medians and ratios


async def capacity_search(
    spec: ServerSpec, scenario: Scenario, media: load.Media, opts: Options
) -> tuple[int, Figures, list[dict[str, object]]]:
    """Add clients step by step until a step backs up; the largest count that kept up wins.

    Returns that count (0 if even the first step backed up), the figures of that step (of the
    first step if none kept up), and a short record of every step tried; if the last step
    tried kept up, the count is a lower bound (``steps[-1]["kept_up"]`` says so).
    """
    best = 0
    best_figures: Figures | None = None
    steps: list[dict[str, object]] = []
    for clients in step_counts(scenario.steps, scenario.step_limit):
        figures = await run_once(spec, scenario, clients, media, opts)
        why = figures.backed_up()
        steps.append({"clients": clients, "kept_up": why is None, "why": why,
                      "max_send_lag_s": _round(figures.max_send_lag_s),
                      "close_to_ready_max_s": _round(figures.close_to_ready_max_s)})  # fmt: skip
        progress(f"  {clients} clients: {why or 'kept up'}")
        if why is not None:
            best_figures = best_figures or figures
            break
        best, best_figures = clients, figures
    assert best_figures is not None
    return best, best_figures, steps


def median_figures(runs: Sequence[Figures]) -> dict[str, object]:
    """Medians of numeric figures; losses are the worst run's, so a median never hides one."""
    out: dict[str, object] = {}
    for key in asdict(runs[0]):
        values = [getattr(r, key) for r in runs]
        if key in ("lost_frames", "lost_samples", "extra_frames", "not_ready", "unlisted"):
            out[key] = max(values)
        elif key in ("failures", "errors"):
            out[key] = sorted({v for vs in values for v in vs})
        elif all(isinstance(v, int | float) for v in values):
            out[key] = _round(statistics.median(values))
        else:
            present = [v for v in values if v is not None]
            out[key] = _round(statistics.median(present)) if present else None
    return out


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def ratios(
    mine: dict[str, object], seed: dict[str, object], keys: Sequence[str]
) -> dict[str, float | None]:
    """Each figure as livestream/seed; None where either is missing or the seed's is zero."""
    out: dict[str, float | None] = {}
    for key in keys:
        a, b = mine.get(key), seed.get(key)
        ok = isinstance(a, int | float) and isinstance(b, int | float) and b != 0
        out[key] = round(a / b, 3) if ok else None
    return out


@dataclass(frozen=True)
class Variant:
    """One server spoken to one way: livestream over each wire asked for, the seed over JSON."""

    spec: ServerSpec
    wire: str

    @property
    def label(self) -> str:
        return f"{self.spec.kind} ({self.wire})"


def variants(specs: dict[str, ServerSpec], wires: Sequence[str]) -> list[Variant]:
    out: list[Variant] = []
    for kind, spec in specs.items():
        out.extend(Variant(spec, w) for w in (wires if kind == LIVESTREAM else ["json"]))
    return out


async def run_scenario(
    scenario: Scenario,
    chosen: Sequence[Variant],
    media_for: Callable[[str, str], load.Media],
    repeat: int,
    opts: Options,
) -> list[dict[str, object]]:
    """Every variant, ``repeat`` times (interleaved, so drift hits all alike); one line each."""
    runs: dict[str, list[Figures]] = {v.label: [] for v in chosen}
    capacities: dict[str, list[int]] = {v.label: [] for v in chosen}
    steps: dict[str, list[dict[str, object]]] = {}
    for n in range(repeat):
        for v in chosen:
            media = media_for(scenario.size, v.wire)
            progress(f"{scenario.name} on {v.label}, run {n + 1}/{repeat}")
            if scenario.steps:
                count, figures, steps[v.label] = await capacity_search(
                    v.spec, scenario, media, opts
                )
                capacities[v.label].append(count)
                progress(f"  {v.label}: capacity {count}")
            else:
                figures = await run_once(v.spec, scenario, scenario.clients, media, opts)
                progress(
                    f"  {v.label}: {figures.wall_s:.1f} s, "
                    f"CLOSE-to-ready max {_round(figures.close_to_ready_max_s)} s"
                )
            runs[v.label].append(figures)
    lines = [
        _line(scenario, v.spec.kind, runs[v.label], capacities[v.label], steps.get(v.label),
              media_for(scenario.size, v.wire))
        for v in chosen
    ]  # fmt: skip
    seed = next((line for line in lines if line["server"] == SEED), None)
    for line in lines:
        if seed is not None and line["server"] == LIVESTREAM:
            keys = CAPACITY_RATIO_KEYS if scenario.steps else RATIO_KEYS
            line["ratio_to_seed"] = ratios(line, seed, keys)
    return lines


def _line(
    scenario: Scenario,
    kind: str,
    runs: list[Figures],
    capacities: list[int],
    steps: list[dict[str, object]] | None,
    media: load.Media,
) -> dict[str, object]:
    line: dict[str, object] = {
        "scenario": scenario.name,
        "server": kind,
        "wire": media.wire,
        "runs": len(runs),
        "size": scenario.size,
        "jpeg_kb": round(media.jpeg_bytes / 1000, 1),
        "pace_fps": scenario.pace_fps,
        "audio": scenario.audio,
    }
    line.update(median_figures(runs))
    line["lost"] = {"frames": line.pop("lost_frames"), "samples": line.pop("lost_samples")}
    if scenario.steps:
        line["capacity"] = statistics.median_low(capacities)
        line["capacity_runs"] = capacities
        line["capacity_rule"] = (
            f"largest count of {RECORD_FPS} fps clients with audio whose sends never fell more "
            f"than {MAX_LAG_S} s behind schedule, each ready within {MAX_CLOSE_TO_READY_S} s "
            "of CLOSE, nothing lost"
        )
        line["steps"] = steps
        # The search ran out of steps (--capacity-max) before the server backed up.
        line["capacity_lower_bound"] = bool(steps and steps[-1]["kept_up"])
    return line


# --------------------------------------------------------------------------------------------
# Command line


def _kv(text: str) -> tuple[str, str]:
    kind, sep, template = text.partition("=")
    if not sep or kind not in TEMPLATES:
        raise argparse.ArgumentTypeError(f"expected KIND=TEMPLATE with KIND in {sorted(TEMPLATES)}")
    return kind, template


def _csv(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return items

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [s.name for s in scenarios(False, "640x480", [1], 1)]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", type=_csv((LIVESTREAM, SEED)), default=[LIVESTREAM, SEED])
    p.add_argument(
        "--scenarios",
        type=_csv(names),
        default=names,
        help="comma-separated, of: " + ", ".join(names),
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per figure; medians are printed")
    p.add_argument("--quick", action="store_true", help="a tenth of the frames: a smoke run")
    p.add_argument("--json-out", type=Path, help="also write the JSON lines to this file")
    p.add_argument(
        "--wires",
        type=_csv(("json", "binary")),
        default=["json", "binary"],
        help="how livestream's clients send chunks, each a line of its own: the seed's JSON "
        "text and/or the binary fast path (the seed always gets JSON)",
    )
    p.add_argument("--size", default="640x480", help="frame size (capacity is always 640x480)")
    p.add_argument("--source", default="mandelbrot", help="lavfi source of the JPEG frames")
    p.add_argument("--quality", type=int, default=3, help="JPEG -q:v of the frames")
    p.add_argument("--distinct", type=int, default=150, help="distinct frames, cycled")
    p.add_argument(
        "--capacity-steps",
        default="1,2,4,6,7,8,10,12,16",
        help="client counts the capacity search tries first, in order; then it goes on by the "
        "last increment (20, 24, 28, ...) until a step backs up",
    )
    p.add_argument(
        "--capacity-max",
        type=int,
        default=200,
        help="the capacity search stops here even if every step kept up (a lower bound)",
    )
    p.add_argument("--capacity-seconds", type=float, default=20, help="length of each client")
    p.add_argument(
        "--template",
        type=_kv,
        action="append",
        default=[],
        metavar="KIND=TEMPLATE",
        help="server command; {port} {media} {bin} (this venv's bin) {seed} "
        "(the seed's scratch copy) are filled in; defaults: "
        + "; ".join(f"{k}={v}" for k, v in TEMPLATES.items()),
    )
    p.add_argument("--livestream-args", default="", help="appended, e.g. '--preset faster'")
    p.add_argument("--seed-dir", type=Path, default=DEFAULT_SEED)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="npm install goes here")
    p.add_argument(
        "--tmp",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the fresh media directories are made",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=120,
        help="base bound on a recording's readiness, seconds (grows with frames)",
    )
    p.add_argument("--keep", action="store_true", help="keep media directories and server logs")
    p.add_argument(
        "--table", type=Path, metavar="JSONL", help="print a Markdown table of a --json-out file"
    )
    args = p.parse_args(argv)
    args.template = dict(args.template)
    args.bin = str(Path(sys.executable).parent)
    args.capacity_steps = [int(x) for x in args.capacity_steps.split(",")]
    if args.quick:
        args.capacity_steps = args.capacity_steps[:2]
        args.capacity_max = args.capacity_steps[-1]
        args.capacity_seconds = min(args.capacity_seconds, 3)
    return args


TABLE_COLUMNS = (
    ("ingest_fps", "ingest fps", 0),
    ("close_to_ready_median_s", "CLOSE-to-ready median s", 2),
    ("close_to_ready_max_s", "max s", 2),
    ("cpu_server_s_per_min", "server CPU s/min", 2),
    ("cpu_children_s_per_min", "ffmpeg CPU s/min", 1),
    ("peak_rss_server_mb", "server peak MB", 0),
    ("peak_rss_children_mb", "ffmpeg peak MB", 0),
)


def markdown_table(lines: Sequence[dict[str, object]]) -> str:
    """The README's table from JSON lines: one row per line, ratios to the seed in brackets."""
    head = ["scenario", "server", *(title for _, title, _ in TABLE_COLUMNS), "lost"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for line in lines:
        ratio = line.get("ratio_to_seed") or {}
        server = line["server"] if line["server"] == SEED else f"{line['server']} {line['wire']}"
        if "capacity" in line:
            plus = "+" if line.get("capacity_lower_bound") else ""
            server += f", capacity **{line['capacity']}{plus}**"
            if ratio.get("capacity") is not None:
                server += f" (x{ratio['capacity']})"
        cells = [str(line["scenario"]), server]
        for key, _, digits in TABLE_COLUMNS:
            value = line.get(key)
            cell = "-" if value is None else f"{value:.{digits}f}"
            if ratio.get(key) is not None:
                cell += f" (x{ratio[key]:.2g})"
            cells.append(cell)
        lost = line.get("lost") or {}
        cells.append(f"{lost.get('frames', '?')} / {lost.get('samples', '?')}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def media_cache(args: argparse.Namespace, ffmpeg: str) -> Callable[[str, str], load.Media]:
    """Frames are made once per size and framed once per wire format, then shared by all runs."""
    jpegs: dict[str, tuple[bytes, ...]] = {}
    framed: dict[tuple[str, str], load.Media] = {}

    def media_for(size: str, wire: str) -> load.Media:
        if size not in jpegs:
            progress(f"making {args.distinct} {size} JPEG frames ({args.source})")
            jpegs[size] = load.make_jpegs(ffmpeg, args.distinct, size, args.source, args.quality)
        if (size, wire) not in framed:
            framed[size, wire] = load.Media.prepare(jpegs[size], RECORD_FPS, load.Wire(wire))
        return framed[size, wire]

    return media_for


def cancel_on_signals() -> None:
    """SIGTERM (and SIGINT, where a shell did not ignore it) cancel the running task, which
    unwinds through every ``finally``: the servers this run started are stopped too."""
    main_task = asyncio.current_task()
    assert main_task is not None
    for signum in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(signum) is not signal.SIG_IGN or signum == signal.SIGTERM:
            asyncio.get_running_loop().add_signal_handler(signum, main_task.cancel)


async def main_async(args: argparse.Namespace) -> int:
    cancel_on_signals()
    ffmpeg = load.find_ffmpeg()
    specs = server_specs(args, ffmpeg)
    if not specs:
        progress("no server to run")
        return 1
    opts = Options(args.tmp, args.ready_timeout, args.keep)
    media_for = media_cache(args, ffmpeg)
    every = scenarios(
        args.quick, args.size, args.capacity_steps, args.capacity_seconds, args.capacity_max
    )
    chosen = [s for s in every if s.name in args.scenarios]
    out = open(args.json_out, "w") if args.json_out else None
    started = time.monotonic()
    try:
        for scenario in chosen:
            lines = await run_scenario(
                scenario, variants(specs, args.wires), media_for, args.repeat, opts
            )
            for line in lines:
                text = json.dumps(line)
                print(text, flush=True)
                if out:
                    out.write(text + "\n")
                    out.flush()
    finally:
        if out:
            out.close()
    progress(f"done in {time.monotonic() - started:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.table:
        lines = [json.loads(text) for text in args.table.read_text().splitlines() if text.strip()]
        print(markdown_table(lines))
        return
    try:
        sys.exit(asyncio.run(main_async(args)))
    except asyncio.CancelledError:
        progress("stopped; the servers it started are stopped too")
        sys.exit(130)


if __name__ == "__main__":
    main()
