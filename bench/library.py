"""The ``library`` benchmark of issue 13: a library of N recordings beside a live session.

For each size N (10,000, 100,000, 1,000,000 by default) it fills a media tree with N finished
recordings (N/2 names, each a video with its poster and an audio: what a session with audio
leaves), then on a real daemon measures:

- start: from spawning the daemon to ``/healthz`` answering, and on to ``checks.index.state``
  being ``ready``; once with no index (it is built) and again on the same tree (it exists), with
  the daemon's RSS (``VmRSS``, ``VmHWM``) and its longest reactor stall while starting;
- ``GET /api/recordings?limit=100``: the first page, a deep page (the page after following
  ``next`` ``--deep-pages`` times; the walk is timed too), three filtered queries (one client,
  a client prefix, one kind in a month), each total checked against what the fill made;
- the full ``GET /recordings``: the first fetch after the start and repeated ones, its size,
  and a conditional GET (``If-None-Match``) when the answer has an ETag;
- a live session's CLOSE-to-ready (JPEG at 15 fps with PCM, binary wire: ``bench.load``'s
  client), ``--live-runs`` times with no other load and as many times while ``--listers``
  clients fetch ``GET /recordings`` back to back, runs interleaved; the longest reactor stall of
  each kind of run (``livestream_reactor_lateness_*``, as ``bench.capacity`` reads it).

Why hard links: a library is many files, not many bytes. Every link of one source file has the
same content, so whatever the daemon reads of a recording (its header, for the duration and
counts) comes from the page cache; a real library of a million different files would be read
from the disk when first indexed. ext4 allows 65,000 links to one file, so the fill makes one
source copy per ``LINKS_PER_SOURCE`` names. The sources come from a short session recorded
through a real daemon, so each file has the shape the daemon writes.

Against a daemon without the index (``/api/recordings`` ignores its parameters and answers every
recording, without ``total`` or ``next``; ``/healthz`` has no ``checks.index``) the same run
measures what that daemon does, the line says ``"mode": "no index"``, and what needs the paged
API (the deep page, the totals) is null: the baseline.

    .venv/bin/python -m bench.library --quick                 # 10,000 only, fewer repetitions
    .venv/bin/python -m bench.library --sizes 10000,100000
    .venv/bin/python -m bench.library --keep                  # keep (and reuse) filled trees
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench import capacity, load, run

FPS = 15
SIZE = "640x480"
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
PAGE = 100

# ext4 refuses a link past 65,000 per inode: a round number below it.
LINKS_PER_SOURCE = 60_000
CLIENTS = 1000  # stems cam-0001 ... cam-1000
FIRST_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z: the names spread over the year after it
DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS
SEED = 13  # the same names in every run of a size

FILTER_CLIENT = "cam-0042"
FILTER_PREFIX = "cam-00"  # cam-0001 ... cam-0099: a tenth of the library
WINDOW = (FIRST_MS + 150 * DAY_MS, FIRST_MS + 180 * DAY_MS)  # audio of 30 days: 1/24 of it

LIVE_PREFIX = "bench-live"  # the live sessions' client ids: no fill name starts with it
SOURCE_FRAMES = 45  # the recording every fill links to: 3 s of 640x480 with audio
INDEX_DIR = ".index"  # api13.md: <media>/.index/library.sqlite3, rebuilt when removed
FILL_MARKER = "fill.json"
FILL_VERSION = 1  # bump when the names or the layout of a fill change: kept trees are refilled

PHASES = ("queries", "live")

# The aims, judged at every size (they are stated for 1,000,000).
AIM_PAGE_S = 0.020
AIM_LIVE_S = 0.5
AIM_START_S = 10.0


def progress(message: str) -> None:
    run.progress(f"library: {message}")


def iso(ms: int) -> str:
    """ISO 8601 UTC, the form ``since``/``until`` take: ``2025-05-31T00:00:00Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# Filling a tree


@dataclass(frozen=True)
class Expected:
    """What the filled tree holds, so every total the daemon answers can be checked."""

    recordings: int  # files listed: videos + audios
    client: int  # entries of FILTER_CLIENT (both kinds)
    client_prefix: int  # entries whose stem starts with FILTER_PREFIX (both kinds)
    audio_window: int  # audio entries created in WINDOW


def recording_names(size: int) -> Iterator[str]:
    """``size // 2`` names ``cam-NNNN_<epoch-ms>``: a random client of ``CLIENTS`` each, times
    in order over a year, one per step of ``YEAR_MS / names`` at a random point within it, so
    no two names are the same."""
    pairs = max(1, size // 2)
    step = max(1, YEAR_MS // pairs)
    rng = random.Random(SEED)
    for i in range(pairs):
        stem = f"cam-{rng.randrange(CLIENTS) + 1:04d}"
        yield f"{stem}_{FIRST_MS + i * step + rng.randrange(step)}"


@dataclass(frozen=True)
class Sources:
    """Copies of one recording's three files; name i links to copy ``i // LINKS_PER_SOURCE``."""

    video: tuple[Path, ...]
    poster: tuple[Path, ...]
    audio: tuple[Path, ...]


async def record_source(spec: run.ServerSpec, media: load.Media, work: Path) -> tuple[Path, ...]:
    """One short session through a real daemon: its MP4, its poster and its WAV."""
    media_dir = work / "media"
    work.mkdir(parents=True)
    server = run.RunningServer(spec, run.free_port(), media_dir, work / "server.log")
    try:
        await server.wait_listening(path="/healthz")
        plans = load.make_plans("bench-source", 1, SOURCE_FRAMES, None, True)
        [result] = await load.run_clients(server.port, plans, media, load.ReplyReadiness(), 120)
    finally:
        server.stop()
    if result.failure or not result.video or not result.audio:
        raise run.Unavailable(f"the source session failed: {result.failure or 'no files'}")
    name = result.video.rsplit(".", 1)[0]
    files = (media_dir / "video" / result.video, media_dir / "posters" / f"{name}.jpg",
             media_dir / "audio" / result.audio)  # fmt: skip
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise run.Unavailable(f"the source session left no {', '.join(missing)}")
    return files


def link_tree(media: Path, sources: Sources, size: int) -> Expected:
    """Hard-link every name's video, poster and audio into place; count what the filters see."""
    dirs = {kind: media / kind for kind in ("video", "posters", "audio", "temp")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    video, posters, audio = (str(dirs[k]) for k in ("video", "posters", "audio"))
    client = prefix = window = pairs = 0
    started = time.monotonic()
    for i, name in enumerate(recording_names(size)):
        j = i // LINKS_PER_SOURCE
        os.link(sources.video[j], f"{video}/{name}.mp4")
        os.link(sources.poster[j], f"{posters}/{name}.jpg")
        os.link(sources.audio[j], f"{audio}/{name}.wav")
        stem, _, ms = name.rpartition("_")
        client += stem == FILTER_CLIENT
        prefix += stem.startswith(FILTER_PREFIX)
        window += WINDOW[0] <= int(ms) < WINDOW[1]
        pairs += 1
        if pairs % 100_000 == 0:
            progress(f"  {pairs} of {size // 2} names linked ({time.monotonic() - started:.0f} s)")
    return Expected(2 * pairs, 2 * client, 2 * prefix, window)


@dataclass(frozen=True)
class Fill:
    size: int
    seconds: float  # the linking alone (for a kept tree, when it was made)
    reused: bool  # a tree a previous --keep run left
    sources: int  # copies of each source file
    links: int


@dataclass(frozen=True)
class Tree:
    root: Path
    media: Path
    fill: Fill
    expected: Expected


async def filled_tree(
    size: int, root: Path, spec: run.ServerSpec, media: load.Media, reuse: bool
) -> Tree:
    """The tree of ``size`` recordings under ``root``: the one a previous ``--keep`` run left
    there if its marker says it is whole and of this fill's version, else made afresh."""
    marker = root / FILL_MARKER
    media_dir = root / "media"
    if reuse and marker.is_file():
        doc = json.loads(marker.read_text())
        if doc.get("version") == FILL_VERSION and doc.get("size") == size:
            progress(f"{size}: reusing the tree in {root} (filled in {doc['fill']['seconds']} s)")
            fill = Fill(**{**doc["fill"], "reused": True})
            return Tree(root, media_dir, fill, Expected(**doc["expected"]))
    if root.exists():
        progress(f"{size}: removing the incomplete tree in {root}")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    progress(f"{size}: recording the source session")
    made = await record_source(spec, media, root / "source")
    copies = max(1, math.ceil((size // 2) / LINKS_PER_SOURCE))
    src = root / "sources"
    src.mkdir()
    paths: list[list[Path]] = [[], [], []]
    for j in range(copies):
        for k, (path, suffix) in enumerate(zip(made, (".mp4", ".jpg", ".wav"), strict=True)):
            paths[k].append(src / f"{k}-{j:03d}{suffix}")
            shutil.copyfile(path, paths[k][-1])
    shutil.rmtree(root / "source")
    sources = Sources(*(tuple(p) for p in paths))
    progress(f"{size}: linking {size // 2} names x 3 files ({copies} copies of each source)")
    started = time.monotonic()
    expected = link_tree(media_dir, sources, size)
    fill = Fill(size, round(time.monotonic() - started, 1), False, copies, 3 * (size // 2))
    progress(f"{size}: filled in {fill.seconds} s")
    doc = {"version": FILL_VERSION, "size": size, "fill": asdict(fill),
           "expected": asdict(expected)}  # fmt: skip
    marker.write_text(json.dumps(doc))
    return Tree(root, media_dir, fill, expected)


def forget_runs(media: Path, index: bool) -> None:
    """Remove what a measurement added to a tree: the live sessions' files, and with ``index``
    the index, so that a kept tree is as the fill left it and the first start builds it."""
    for kind in ("video", "posters", "audio"):
        for path in (media / kind).glob(f"{LIVE_PREFIX}*"):
            path.unlink(missing_ok=True)
    if index:
        shutil.rmtree(media / INDEX_DIR, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The daemon: start, index, memory, stalls


@dataclass
class Daemon:
    """One daemon's life on a filled tree: its start, its memory, its stop.

    Each measurement gets a daemon of its own, because the stall monitor's maximum runs from
    the start: on a daemon that has answered the queries, a live session's stall would mostly
    be a bound (``capacity.step_stall``) and not a figure."""

    port_s: float  # spawn to GET /healthz answering
    index_ready_s: float | None  # spawn to checks.index.state == "ready"; None: no index
    index: dict[str, object] | None  # the last checks.index seen
    rss_mb: float  # after the start (after the index was ready, if there is one)
    hwm_mb: float
    stall_max_s: float | None  # the longest reactor stall since spawn, until ready
    rss_end_mb: float | None = None  # just before the stop
    hwm_end_mb: float | None = None
    stop_s: float | None = None  # SIGTERM to exit

    @property
    def ready_s(self) -> float:
        """When the daemon is fully up: the index ready, or the port answering without one."""
        return self.index_ready_s if self.index_ready_s is not None else self.port_s


async def health_index(port: int) -> dict[str, object] | None:
    """``checks.index`` of ``/healthz``; None from a daemon without the index."""
    answer = await load.http_request(port, "/healthz")
    try:
        doc = json.loads(answer.body)
    except ValueError:
        return None
    checks = doc.get("checks") if isinstance(doc, dict) else None
    index = checks.get("index") if isinstance(checks, dict) else None
    return index if isinstance(index, dict) else None


async def lateness(port: int, timeout: float) -> capacity.Lateness | None:
    """The stall monitor's figures (``bench.capacity`` parses them); None from a daemon without
    it. The bound is a request's: a daemon still answering listings answers this after them."""
    try:
        answer = await load.http_request(port, "/metrics", timeout=timeout)
        return capacity.Lateness.parse(answer.body.decode("utf-8"))
    except (ValueError, OSError, TimeoutError, load.WebSocketError):
        return None


async def start_daemon(
    spec: run.ServerSpec, media: Path, log: Path, opts: argparse.Namespace
) -> tuple[run.RunningServer, Daemon]:
    """Spawn the daemon and wait for its port, then for its index (polled every 50 ms, which
    costs the daemon nothing it would notice)."""
    t0 = load.now()
    server = run.RunningServer(spec, run.free_port(), media, log)
    try:
        await server.wait_listening(opts.start_timeout, path="/healthz", interval=0.02)
        port_s = load.now() - t0
        index, ready_s = await wait_index(server.port, t0, opts.index_timeout)
        pid = server.proc.pid
        late = await lateness(server.port, 60)
        start = Daemon(
            port_s=port_s,
            index_ready_s=ready_s,
            index=index,
            rss_mb=run.status_bytes(pid, "VmRSS") / run.MB,
            hwm_mb=run.status_bytes(pid, "VmHWM") / run.MB,
            stall_max_s=late.maximum if late is not None else None,
        )
    except BaseException:
        server.stop()
        raise
    return server, start


async def wait_index(
    port: int, t0: float, timeout: float
) -> tuple[dict[str, object] | None, float | None]:
    """The last ``checks.index`` seen, and when (since ``t0``) it said ``ready``: None for a
    daemon without the index, or one whose index was not ready in ``timeout`` s."""
    index = await health_index(port)
    while index is not None:
        if index.get("state") == "ready":
            return index, load.now() - t0
        if load.now() - t0 > timeout:
            progress(f"  the index is still {index.get('state')!r} after {timeout:g} s")
            break
        await asyncio.sleep(0.05)
        index = await health_index(port)
    return index, None


def stop_daemon(server: run.RunningServer, figures: Daemon) -> None:
    """Its memory at the end, then SIGTERM, timed to its exit."""
    pid = server.proc.pid
    figures.rss_end_mb = run.status_bytes(pid, "VmRSS") / run.MB
    figures.hwm_end_mb = run.status_bytes(pid, "VmHWM") / run.MB
    t = load.now()
    server.stop()
    figures.stop_s = load.now() - t


class StallWatch:
    """The longest reactor stall between ``begin`` and ``end`` (``capacity.step_stall``), kept
    as the largest over every such span; None from a daemon without the stall monitor."""

    def __init__(self, port: int, timeout: float) -> None:
        self._port = port
        self._timeout = timeout
        self._before: capacity.Lateness | None = None
        self.max_s: float | None = None
        self.exact = True

    async def begin(self) -> None:
        self._before = await lateness(self._port, self._timeout)

    async def end(self) -> None:
        after = await lateness(self._port, self._timeout)
        if self._before is None or after is None:
            return
        stall, exact = capacity.step_stall(self._before, after)
        if self.max_s is None or stall > self.max_s:
            self.max_s, self.exact = stall, exact


# --------------------------------------------------------------------------------------------
# Requests


@dataclass
class Timed:
    """Repeated GETs of one path: the times, and what the last answer held."""

    path: str
    requests: int = 0
    median_s: float | None = None
    max_s: float | None = None
    status: int | None = None
    body_bytes: int = 0
    entries: int | None = None  # recordings in the answer
    total: int | None = None  # its ``total`` (the paged API)
    expected: int | None = None  # what the fill says the total must be
    error: str | None = None


def count_entries(body: bytes) -> tuple[int | None, int | None, str | None]:
    """(recordings listed, ``total``, ``next``) of a ``/api/recordings`` or ``/recordings``
    answer; Nones where the answer has no such field."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None
    if "recordings" in doc:
        total = doc.get("total")
        cursor = doc.get("next")
        return (len(doc["recordings"]), total if isinstance(total, int) else None,
                cursor if isinstance(cursor, str) else None)  # fmt: skip
    return sum(len(v) for v in doc.values() if isinstance(v, list)), None, None


async def timed_gets(
    port: int,
    path: str,
    times: int,
    opts: argparse.Namespace,
    headers: dict[str, str] | None = None,
) -> tuple[Timed, load.HttpAnswer | None]:
    """Up to ``times`` GETs one after another, fewer once ``--budget`` s have gone (at least
    one): a daemon that answers a page with the whole library must not make the run take
    hours. Each is timed from the connect to the last byte."""
    out = Timed(path)
    seconds: list[float] = []
    answer = None
    started = load.now()
    while len(seconds) < times and (not seconds or load.now() - started < opts.budget):
        t = load.now()
        try:
            answer = await load.http_request(port, path, headers, opts.request_timeout)
        except (OSError, TimeoutError, load.WebSocketError) as e:
            out.error = f"{type(e).__name__}: {e}"
            break
        seconds.append(load.now() - t)
    out.requests = len(seconds)
    if seconds:
        out.median_s, out.max_s = statistics.median(seconds), max(seconds)
    if answer is not None:
        out.status, out.body_bytes = answer.status, answer.body_bytes
        out.entries, out.total, _ = count_entries(answer.body)
    return out, answer


@dataclass
class DeepPage:
    """The page after following ``next`` ``pages`` times, and the walk there."""

    pages: int  # pages walked (fewer than asked if ``next`` ran out)
    offset: int  # recordings before the deep page
    walk_s: float
    walk_page_max_s: float
    duplicates: int  # names seen twice on the walk: a cursor that skips back
    page: Timed
    error: str | None = None  # why the walk stopped early, if it did


async def deep_page(port: int, base: str, pages: int, opts: argparse.Namespace) -> DeepPage:
    """Follow ``next`` from the first page; the filters of ``base`` go with every cursor."""
    cursor: str | None = None
    names: set[str] = set()
    seen = walked = 0
    slowest = 0.0
    error = None
    started = load.now()
    for _ in range(pages):
        path = base if cursor is None else f"{base}&cursor={quote(cursor, safe='')}"
        t = load.now()
        answer = await load.http_request(port, path, timeout=opts.request_timeout)
        slowest = max(slowest, load.now() - t)
        if answer.status != 200:
            error = f"GET {path}: {answer.status_line} {answer.body[:200]!r}"
            break
        doc = json.loads(answer.body)
        batch = [str(e.get("name")) for e in doc.get("recordings", [])]
        names.update(batch)
        seen += len(batch)
        walked += 1
        cursor = doc.get("next")
        if not isinstance(cursor, str):
            error = f"next ran out after {walked} pages"
            break
    walk_s = load.now() - started
    if error is not None or cursor is None:
        page = Timed(f"{base}&cursor=...", error=error)
    else:
        page, _ = await timed_gets(
            port, f"{base}&cursor={quote(cursor, safe='')}", opts.requests, opts
        )
    return DeepPage(walked, seen, walk_s, slowest, seen - len(names), page, error)


@dataclass
class Listing:
    """``GET /recordings``: the first fetch after the start, repeated ones, and a conditional
    one if the answer carries an ETag."""

    first: Timed
    again: Timed
    etag: str | None
    not_modified: Timed | None


async def full_listing(port: int, opts: argparse.Namespace, expected: int) -> Listing:
    first, _ = await timed_gets(port, "/recordings", 1, opts)
    again, answer = await timed_gets(port, "/recordings", max(3, opts.requests // 4), opts)
    first.expected = again.expected = expected
    etag = answer.headers.get("etag") if answer is not None else None
    not_modified = None
    if etag:
        not_modified, _ = await timed_gets(
            port, "/recordings", opts.requests, opts, {"If-None-Match": etag}
        )
    return Listing(first, again, etag, not_modified)


@dataclass
class Queries:
    """The ``/api/recordings`` figures of one size."""

    paged: bool  # the answer has ``total`` and ``next``: the paged API of issue 13
    first_page: Timed
    deep: DeepPage | None
    client: Timed
    client_prefix: Timed
    kind_window: Timed
    listing: Listing
    stall_max_s: float | None  # the longest reactor stall while these were asked, one by one
    stall_exact: bool  # False: the stall is a bound (``capacity.step_stall``)
    daemon_cpu_s: float  # the daemon's CPU while they were asked
    others_cores: float  # every other process on the machine meanwhile


async def queries(server: run.RunningServer, tree: Tree, opts: argparse.Namespace) -> Queries:
    """Every query, one after another (nothing else runs): the listing first, while the daemon
    has answered nothing yet."""
    port, pid = server.port, server.proc.pid
    await quiet_machine(opts, "the queries")
    stalls = StallWatch(port, opts.request_timeout)
    await stalls.begin()
    busy, own, daemon, t = run.machine_busy_s(), time.process_time(), _cpu(pid), time.monotonic()
    expected = tree.expected
    listing = await full_listing(port, opts, expected.recordings)
    base = f"/api/recordings?limit={PAGE}"
    first, answer = await timed_gets(port, base, opts.requests, opts)
    first.expected = expected.recordings
    paged = answer is not None and answer.status == 200 and first.total is not None
    if answer is not None and paged:
        _, _, cursor = count_entries(answer.body)
        paged = cursor is not None or first.total == first.entries
    deep = await deep_page(port, base, opts.deep_pages, opts) if paged else None
    filtered = {
        "client": (f"client={FILTER_CLIENT}", expected.client),
        "client_prefix": (f"client_prefix={FILTER_PREFIX}", expected.client_prefix),
        "kind_window": (f"kind=audio&since={iso(WINDOW[0])}&until={iso(WINDOW[1])}",
                        expected.audio_window),
    }  # fmt: skip
    timed: dict[str, Timed] = {}
    for key, (query, want) in filtered.items():
        timed[key], _ = await timed_gets(port, f"{base}&{query}", opts.requests, opts)
        timed[key].expected = want
    daemon = _cpu(pid) - daemon
    others = run.machine_busy_s() - busy - (time.process_time() - own) - daemon
    wall = max(time.monotonic() - t, 1e-9)
    await stalls.end()
    return Queries(paged, first, deep, timed["client"], timed["client_prefix"],
                   timed["kind_window"], listing, stalls.max_s, stalls.exact, daemon,
                   max(0.0, others) / wall)  # fmt: skip


def _cpu(pid: int) -> float:
    """CPU seconds of a process and of the children it has reaped."""
    stat = run.read_stat(pid)
    return stat.cpu + stat.reaped if stat is not None else 0.0


async def quiet_machine(opts: argparse.Namespace, what: str) -> None:
    """Wait (``--wait-quiet`` s at most) for other work on a shared machine to end first: it
    would be measured as the daemon's slowness."""
    if opts.wait_quiet:
        cores = await capacity.wait_quiet(0.15, opts.wait_quiet)
        progress(f"  machine at {cores:.2f} busy cores before {what}")


# --------------------------------------------------------------------------------------------
# A live session, alone and beside clients fetching the listing


class Listers:
    """``count`` clients fetching ``GET /recordings`` back to back until stopped, bodies counted
    and dropped (the generator shares the 2 cores with the daemon)."""

    def __init__(self, port: int, count: int, timeout: float) -> None:
        self._port = port
        self._timeout = timeout
        self._tasks = [asyncio.create_task(self._fetch()) for _ in range(count)]
        self.fetched = 0
        self.failed = 0

    async def _fetch(self) -> None:
        while True:
            try:
                answer = await load.http_request(
                    self._port, "/recordings", timeout=self._timeout, keep_body=False
                )
            except (OSError, TimeoutError, load.WebSocketError):
                self.failed += 1
                await asyncio.sleep(0.1)
                continue
            self.fetched += answer.status == 200
            self.failed += answer.status != 200

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class LiveRuns:
    """CLOSE-to-ready of the runs of one kind (alone, or beside the listers)."""

    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lost_frames: int = 0
    lost_samples: int = 0
    stall_max_s: float | None = None
    stall_exact: bool = True
    listings: int = 0  # listings fetched meanwhile (loaded runs)
    listings_failed: int = 0
    listing_s: float = 0.0  # the time the listers ran
    median_s: float | None = None
    max_s: float | None = None

    def note_stall(self, stalls: StallWatch) -> None:
        """The longest of the runs; of two equal ones the exact (a bound that equals an exact
        maximum is that maximum again, not a new stall)."""
        new, old = stalls.max_s, self.stall_max_s
        if new is not None and (old is None or new > old or (new == old and stalls.exact)):
            self.stall_max_s, self.stall_exact = new, stalls.exact

    def add(self, close_to_ready: float) -> None:
        self.seconds.append(close_to_ready)
        self.median_s, self.max_s = statistics.median(self.seconds), max(self.seconds)

    def last(self) -> str:
        return f"{self.seconds[-1]:.3f} s" if self.seconds else "failed"


@dataclass
class Live:
    idle: LiveRuns
    loaded: LiveRuns
    listers: int
    daemon_cpu_s: float  # the daemon and its children over every run
    loadgen_cores: float  # this process over the loaded runs: clients and listers
    others_cores: float  # every other process on the machine meanwhile
    loaded_minus_idle_median_s: float | None = None
    loaded_over_idle_median: float | None = None

    def __post_init__(self) -> None:
        a, b = self.idle.median_s, self.loaded.median_s
        if a is not None and b is not None:
            self.loaded_minus_idle_median_s = b - a
            self.loaded_over_idle_median = b / a if a else None


async def live_session(
    port: int, source: load.Media, frames: int, tag: str, media: Path, runs: LiveRuns
) -> None:
    """One paced session of ``frames`` with audio, its recording decoded and counted. A
    session that cannot even connect (``bench.load`` gives the handshake 10 s: a daemon busy
    answering listings may not get to it) is a failure of the run, not of the benchmark."""
    plans = load.make_plans(f"{LIVE_PREFIX}-{tag}", 1, frames, FPS, True)
    try:
        [result] = await load.run_clients(port, plans, source, load.ReplyReadiness(), 60 + frames)
    except (OSError, TimeoutError, load.WebSocketError, asyncio.IncompleteReadError) as e:
        runs.failures.append(f"connect: {type(e).__name__}: {e}")
        return
    if result.close_to_ready is not None:
        runs.add(result.close_to_ready)
    else:
        runs.failures.append(result.failure or "not ready")
    loss = await asyncio.to_thread(load.check_output, result, media)
    runs.lost_frames += loss.frames
    runs.lost_samples += loss.samples


async def live(
    server: run.RunningServer, source: load.Media, media: Path, opts: argparse.Namespace
) -> Live:
    """``--live-runs`` sessions alone and as many beside the listers, interleaved, so drift of
    the machine hits both alike."""
    port = server.port
    idle, loaded = LiveRuns(), LiveRuns()
    frames = max(1, round(opts.live_seconds * FPS))
    await quiet_machine(opts, "the live runs")
    sampler = run.Sampler(server.proc.pid)
    busy, loaded_cpu, loaded_wall = run.machine_busy_s(), 0.0, 0.0
    own, t = time.process_time(), time.monotonic()
    sampler.start()
    try:
        for n in range(opts.live_runs):
            for tag, runs in (("idle", idle), ("loaded", loaded)):
                stalls = StallWatch(port, opts.request_timeout)
                await stalls.begin()
                cpu, wall = time.process_time(), time.monotonic()
                listers = (
                    Listers(port, opts.listers, opts.request_timeout) if tag == "loaded" else None
                )
                try:
                    if listers is not None:
                        await asyncio.sleep(0.5)  # the listers are mid-fetch as the session starts
                    await live_session(port, source, frames, f"{tag}-{n}", media, runs)
                finally:
                    if listers is not None:
                        await listers.stop()
                        runs.listings += listers.fetched
                        runs.listings_failed += listers.failed
                        runs.listing_s += time.monotonic() - wall
                        loaded_cpu += time.process_time() - cpu
                        loaded_wall += time.monotonic() - wall
                # The scrape waits behind what the daemon still owes the stopped listers.
                await stalls.end()
                runs.note_stall(stalls)
                if listers is not None:
                    await asyncio.sleep(1.0)  # the next session alone starts on a quiet daemon
            progress(
                f"  live run {n + 1}/{opts.live_runs}: CLOSE-to-ready alone {idle.last()}, "
                f"beside {opts.listers} listers {loaded.last()}"
            )
    finally:
        usage = sampler.stop()
    wall_all = max(time.monotonic() - t, 1e-9)
    mine = time.process_time() - own
    others = run.machine_busy_s() - busy - mine - usage.cpu_server_s - usage.cpu_children_s
    return Live(
        idle=idle,
        loaded=loaded,
        listers=opts.listers,
        daemon_cpu_s=usage.cpu_server_s + usage.cpu_children_s,
        loadgen_cores=loaded_cpu / max(loaded_wall, 1e-9),
        others_cores=max(0.0, others) / wall_all,
    )


# --------------------------------------------------------------------------------------------
# One size


@dataclass
class Result:
    size: int
    mode: str  # "index": the paged API and checks.index; "no index": the daemon before it
    fill: Fill
    start_first: Daemon  # no index on disk: it is built; stopped once ready
    start_queries: Daemon | None  # the index on disk: the daemon the queries were asked
    start_live: Daemon | None  # the index on disk: the daemon of the live sessions
    queries: Queries | None
    live: Live | None

    def aims(self) -> dict[str, bool | None]:
        """Issue 13's aims (stated for 1,000,000): a page in 20 ms (first and deep, median),
        every live run beside the listers within 0.5 s of the median alone, a start on an
        existing index in 10 s (every such start)."""
        q, lv = self.queries, self.live
        page = None
        if q is not None:
            pages = [q.first_page.median_s, q.deep.page.median_s if q.deep else None]
            page = q.paged and all(p is not None and p <= AIM_PAGE_S for p in pages)
        near = None
        if lv is not None and (lv.loaded.failures or lv.idle.failures):
            near = False
        elif lv is not None and lv.idle.median_s is not None and lv.loaded.max_s is not None:
            near = lv.loaded.max_s - lv.idle.median_s <= AIM_LIVE_S
        again = [d.ready_s for d in (self.start_queries, self.start_live) if d is not None]
        start = all(t <= AIM_START_S for t in again) if again else None
        return {"page_20ms": page, "live_within_0_5s": near, "start_10s": start}

    def line(self) -> dict[str, object]:
        """The JSON line: every figure, rounded, and the aims."""
        return {"scenario": "library", **_rounded(asdict(self)), "aims": self.aims()}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


async def measure(
    size: int, spec: run.ServerSpec, source: load.Media, opts: argparse.Namespace
) -> dict[str, object]:
    """Fill (or reuse) the tree; start a daemon on it with no index and stop it once ready;
    then a daemon for the queries and one for the live sessions, each on the index there."""
    if opts.keep:
        root = opts.tmp / f"bench-library-{size}"
    else:
        root = Path(tempfile.mkdtemp(prefix=f"bench-library-{size}-", dir=opts.tmp)) / "tree"
    try:
        tree = await filled_tree(size, root, spec, source, reuse=opts.keep)
        forget_runs(tree.media, index=True)
        progress(f"{size}: first start (no index on disk)")
        server, first = await start_daemon(spec, tree.media, root / "daemon-first.log", opts)
        stop_daemon(server, first)
        progress(f"  port {first.port_s:.2f} s, index ready {_f(first.index_ready_s)} s, "
                 f"RSS {first.rss_mb:.0f} MB, stop {first.stop_s:.2f} s")  # fmt: skip
        asked = lived = None
        on_queries = on_live = None
        if "queries" in opts.phases:
            server, on_queries = await start_again(spec, tree, "queries", opts)
            try:
                asked = await queries(server, tree, opts)
                progress(f"  first page {_ms(asked.first_page.median_s)} ms "
                         f"({asked.first_page.entries} entries), GET /recordings "
                         f"{_f(asked.listing.first.median_s)} s")  # fmt: skip
            finally:
                stop_daemon(server, on_queries)
        if "live" in opts.phases:
            server, on_live = await start_again(spec, tree, "live sessions", opts)
            try:
                lived = await live(server, source, tree.media, opts)
            finally:
                stop_daemon(server, on_live)
        indexed = any(d is not None and d.index is not None for d in (first, on_queries, on_live))
        paged = asked.paged if asked is not None else True
        mode = "index" if indexed and paged else "no index"
        result = Result(size, mode, tree.fill, first, on_queries, on_live, asked, lived)
        return result.line()
    finally:
        if opts.keep:
            forget_runs(root / "media", index=False)
        else:
            progress(f"{size}: removing the tree")
            shutil.rmtree(root.parent, ignore_errors=True)


async def start_again(
    spec: run.ServerSpec, tree: Tree, what: str, opts: argparse.Namespace
) -> tuple[run.RunningServer, Daemon]:
    progress(f"{tree.fill.size}: a daemon for the {what} (the index on disk)")
    log = tree.root / f"daemon-{what.split()[0]}.log"
    server, figures = await start_daemon(spec, tree.media, log, opts)
    progress(f"  port {figures.port_s:.2f} s, index ready {_f(figures.index_ready_s)} s, "
             f"RSS {figures.rss_mb:.0f} MB")  # fmt: skip
    if what == "live sessions":
        progress(f"{tree.fill.size}: live sessions, alone and beside {opts.listers} listers")
    return server, figures


# --------------------------------------------------------------------------------------------
# The table


def _f(value: object, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def _ms(value: object) -> str:
    return f"{value * 1000:.1f}" if isinstance(value, int | float) else "-"


def _stall(value: object, exact: object) -> str:
    """A stall that is only a bound (the maximum since start did not grow) is written ``<=``."""
    return _f(value, 3) if exact or not isinstance(value, float) else f"<= {value:.3f}"


def _failed(live: object) -> str:
    """Live runs that did not finish (a session that could not connect, or not get ready)."""
    n = sum(len(x) for x in (_get(live, k, "failures") for k in ("idle", "loaded"))
            if isinstance(x, list))  # fmt: skip
    return f" ({n} failed)" if n else ""


def _mb(value: object) -> str:
    return f"{value / run.MB:.1f}" if isinstance(value, int | float) else "-"


def _get(doc: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def table(lines: Sequence[dict[str, object]]) -> str:
    """One row per size: the figures the issue's aims are about, and what explains them."""
    head = (
        "recordings", "mode", "fill s", "start: port / index s (first)",
        "start again: port / index s", "RSS MB started / after queries / after live (peak)",
        "first page ms median / max (entries)", "deep page ms",
        "filtered ms: client / prefix / kind+dates", "GET /recordings s first / again (MB)",
        "live CLOSE-to-ready s alone / beside listers (median, max)",
        "longest stall s: queries / live beside listers",
    )  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in lines:
        first = d["start_first"]
        again = d.get("start_queries") or d.get("start_live")
        q, lv = d.get("queries"), d.get("live")
        page = _get(q, "first_page")
        listing = _get(q, "listing")
        daemons = [d.get(k) for k in ("start_first", "start_queries", "start_live")]
        peaks = [x for x in (_get(m, "hwm_end_mb") for m in daemons) if isinstance(x, float)]
        rss = " / ".join(
            _f(x, 0)
            for x in (
                _get(again, "rss_mb"),
                _get(daemons[1], "rss_end_mb"),
                _get(daemons[2], "rss_end_mb"),
            )
        )
        rss += f" ({_f(max(peaks, default=None), 0)})"
        rows.append("| " + " | ".join([
            f"{d['size']:,}", str(d["mode"]),
            _f(_get(d, "fill", "seconds"), 1) + (" (kept)" if _get(d, "fill", "reused") else ""),
            f"{_f(_get(first, 'port_s'))} / {_f(_get(first, 'index_ready_s'))}",
            f"{_f(_get(again, 'port_s'))} / {_f(_get(again, 'index_ready_s'))}",
            rss,
            f"{_ms(_get(page, 'median_s'))} / {_ms(_get(page, 'max_s'))} "
            f"({_get(page, 'entries') or '-'})",
            _ms(_get(q, "deep", "page", "median_s")),
            " / ".join(_ms(_get(q, k, "median_s"))
                       for k in ("client", "client_prefix", "kind_window")),
            f"{_f(_get(listing, 'first', 'median_s'))} / {_f(_get(listing, 'again', 'median_s'))} "
            f"({_mb(_get(listing, 'again', 'body_bytes'))})",
            f"{_f(_get(lv, 'idle', 'median_s'))}, {_f(_get(lv, 'idle', 'max_s'))} / "
            f"{_f(_get(lv, 'loaded', 'median_s'))}, {_f(_get(lv, 'loaded', 'max_s'))}"
            + _failed(lv),
            _stall(_get(q, "stall_max_s"), _get(q, "stall_exact")) + " / "
            + _stall(_get(lv, "loaded", "stall_max_s"), _get(lv, "loaded", "stall_exact")),
        ]) + " |")  # fmt: skip
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# Command line


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("sizes are integers, e.g. 10000,100000") from None
    if not sizes or any(n < 2 for n in sizes):
        raise argparse.ArgumentTypeError("every size is at least 2 (a video and an audio)")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=list(DEFAULT_SIZES),
        help="recordings in the tree, comma-separated (default 10000,100000,1000000)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="10,000 only, fewer requests and live runs: a smoke run",
    )
    p.add_argument(
        "--tmp",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the trees are made (on one file system: hard links)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep each filled tree as TMP/bench-library-N (with the daemons' logs) "
        "and reuse one a previous --keep run left: filling 1,000,000 takes "
        "minutes",
    )
    p.add_argument("--requests", type=int, default=20, help="GETs per timed query")
    p.add_argument(
        "--budget",
        type=float,
        default=30,
        help="seconds per timed query: fewer GETs once spent (at least one)",
    )
    p.add_argument("--deep-pages", type=int, default=50, help="next cursors followed")
    p.add_argument("--live-runs", type=int, default=5, help="live sessions alone, and beside")
    p.add_argument("--live-seconds", type=float, default=3, help="length of a live session")
    p.add_argument("--listers", type=int, default=4, help="clients fetching GET /recordings")
    p.add_argument("--request-timeout", type=float, default=300, help="bound on each GET, s")
    p.add_argument("--start-timeout", type=float, default=120, help="bound on the port, s")
    p.add_argument(
        "--index-timeout",
        type=float,
        default=1800,
        help="bound on checks.index.state becoming ready, s",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=60,
        metavar="S",
        help="before the queries and the live runs wait up to S s for a quiet machine (0: not)",
    )
    p.add_argument(
        "--phases",
        type=run._csv(PHASES),
        default=list(PHASES),
        help="what to measure after the first start: queries, live (both by default)",
    )
    p.add_argument("--livestream-args", default="", help="appended to the daemon's command")
    p.add_argument("--json-out", type=Path, help="also write the JSON lines to this file")
    p.add_argument("--table", type=Path, metavar="JSONL", help="print the table of a --json-out")
    args = p.parse_args(argv)  # fmt: skip
    if args.quick:
        args.sizes = [10_000]
        args.requests, args.deep_pages, args.live_runs, args.live_seconds = 5, 10, 2, 2
    return args


def daemon_spec(extra_args: str) -> run.ServerSpec:
    """The daemon of the checkout this bench is in, whatever the venv has installed (an
    editable install points at one checkout; a worktree measures its own code)."""
    template = f"{run.TEMPLATES[run.LIVESTREAM]} {extra_args}".strip()
    path = os.pathsep.join(p for p in (str(run.REPO), os.environ.get("PYTHONPATH")) if p)
    return run.ServerSpec(
        run.LIVESTREAM,
        template,
        "reply",
        env={"PYTHONPATH": path},
        values={"bin": str(Path(sys.executable).parent)},
    )


async def main_async(args: argparse.Namespace) -> int:
    run.cancel_on_signals()
    ffmpeg = load.find_ffmpeg()
    spec = daemon_spec(args.livestream_args)
    progress(f"the daemon runs the livestream of {run.REPO}")
    progress("making 15 mandelbrot JPEG frames (97 KB each)")
    source = load.Media.prepare(
        load.make_jpegs(ffmpeg, 15, SIZE, "mandelbrot", 3), FPS, load.Wire("binary")
    )
    out = open(args.json_out, "w") if args.json_out else None
    lines: list[dict[str, object]] = []
    started = time.monotonic()
    try:
        for size in args.sizes:
            line = await measure(size, spec, source, args)
            lines.append(line)
            text = json.dumps(line)
            print(text, flush=True)
            if out:
                out.write(text + "\n")
                out.flush()
    finally:
        if out:
            out.close()
    print()
    print(table(lines))
    progress(f"done in {time.monotonic() - started:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.table:
        lines = [json.loads(text) for text in args.table.read_text().splitlines() if text.strip()]
        print(table(lines))
        return
    try:
        sys.exit(asyncio.run(main_async(args)))
    except asyncio.CancelledError:
        progress("stopped; the daemons it started are stopped too")
        sys.exit(130)


if __name__ == "__main__":
    main()
