"""Live HLS (issue 15): what Low-Latency HLS players cost the daemon, and glass-to-glass latency.

The issue asks for "a benchmark of glass-to-glass latency (frame sent to frame shown) and of the
daemon's cost with 1, 10 and 50 players on one session", with the aim of a live latency of at
most 2 s in hls.js and 1 s in the page. One run measures both against a real daemon
(``twistd -n livestream`` of this checkout, a subprocess on 127.0.0.1 and a free port, with a
media tree of its own in a temp dir):

**Frames.** 640x480 camera-like JPEGs (``testsrc2`` with sensor noise, as :mod:`bench.presets`,
``-q:v 4``, about 29 KB) with the frame's number drawn as :mod:`bench.numbered`'s bars across a
band through the middle, so the middle row that :func:`bench.numbered.read_number` and
:data:`bench.numbered.JS_READER` read holds the number. One session is sent in real time
(15 fps, binary ``STREAM`` messages, ``CONNECT`` without audio) by a sender in a process of its
own (so the players' work does not bend its pacing), which writes down the wall-clock time
(``time.time()``) just before each frame goes to the socket: the frame's "sent" time.

**Cost** (``--players``, default 0, 1, 10, 50, in that order): on the one session, N players,
each a *lightweight LL-HLS player written here, not hls.js*: plain asyncio and one HTTP/1.1
keep-alive connection. It reads ``index.m3u8`` then ``video.m3u8`` and the init segment, takes
the newest part listed, then loops as hls.js does at the live edge: a blocking reload for the
next part (``?_HLS_msn=M&_HLS_part=P``, from the last part listed and whether its segment is
complete), then a GET of every part listed that it has not had, in order. It does not buffer,
decode or play anything: it is the daemon's work per player that it makes, not a player's. Each
part's bytes are read for its ``tfdt`` and ``trun`` (the frames it holds: the daemon writes one
output frame per frame received, ``--timing frames``, so output frame *k* is frame *k* sent), so
its **part latency** is exact: when its last byte arrived minus when the last frame it holds was
sent (the earliest the part can exist; its first frame was sent 2 frames, 0.133 s, before).
Also per part: from the playlist answer that listed it to its last byte. After ``--warmup`` s,
for ``--seconds`` s, per N: the daemon's CPU seconds per second (``utime + stime`` from
``/proc/<pid>/stat``) apart from its children's (the ffmpeg encoder, whose cost is the same
whatever N), its RSS (``VmRSS`` every 0.5 s), bytes (heads and bodies) and requests per second
served to the players, the p50/p99 of the part latency, the parts each player got (5 a second
if it kept up), and errors: every answer other than 200, and every connection that failed.
Also this process's CPU (the players) and the sender's, the load average, and the CPU the rest
of the machine used meanwhile (``others_cores``). The players stop by themselves at the end of
the window; every request is bounded in time. Each line carries ``cpu_ratio_to_1``: the
daemon's CPU (its children left out) over that of N = 1 in the same run, and
``serving_ratio_to_1``: the same for what the players add to N = 0 (the ingest). A stream is
only read while players ask (and 10 s after), so N = 0 should come first.

**A stalled player** (``--stalled-with K``, default 10; 0 leaves it out): K players as above
and one that reads playlists on a connection of its own but sends a GET for every new part on
a socket with a tiny receive buffer (``SO_RCVBUF`` 1 KB, set before the connect) that it never
reads, pipelined, for the window. Its line shows the daemon's RSS over the window (and after
the stalled socket is closed) and the other players' latency, to set beside the N = K line.

**Glass to glass** (unless ``--skip-browser``): a second session, its frames numbered from 0, is
played by a real browser: Debian's Chromium (``/usr/bin/chromium``, headless) through
Playwright. ``--player hls.js`` (the default) serves a tiny page and hls.js 1 (installed once
with npm into ``build/npm/``) from a second HTTP server of the bench, on its own port (so the
daemon's CORS answers are used), with ``new Hls({lowLatencyMode: true})``; ``--player page``
opens the daemon's own page at ``/#watch=<recording>`` and reads its Watch ``<video>`` the same
way (the page's own MSE player, ``livestream/static/hlsplayer.js``). Each frame the ``<video>``
presents (``requestVideoFrameCallback``) is drawn to a canvas and its number read
(``JS_READER``), with the wall time ``performance.timeOrigin + performance.now()`` in the
callback: latency = that time minus the frame's sent time. After the first frame shown and
``--warmup`` s, over ``--browser-seconds`` s: p50/p90/max, the frames shown against those sent,
the longest gap between two frames shown, and hls.js's own ``hls.latency`` (sampled every 0.5
s).

Run it from the checkout with the project's venv::

    python -m bench.hls                                  # about 3 minutes
    python -m bench.hls --players 0,1,10 --seconds 10 --skip-browser
    python -m bench.hls --skip-cost --browser-runs 3 --hls-config '{"maxLiveSyncPlaybackRate": 1.5}'
    python -m bench.hls --skip-cost --player page        # the page's player (branch page15)
    python -m bench.hls --table lines.jsonl              # the tables of saved lines

One JSON line per step on stdout; progress and a Markdown table on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import math
import multiprocessing
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench import load, numbered, run

HOST = load.HOST
REPO = Path(__file__).resolve().parent.parent
TWISTD = Path(sys.executable).parent / "twistd"
NPM_DIR = REPO / "build" / "npm"
HLS_JS = NPM_DIR / "node_modules" / "hls.js" / "dist" / "hls.min.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip

FPS = 15
WIDTH, HEIGHT = 640, 480
# The band of bars: rows BAND_TOP to BAND_TOP + BAND_HEIGHT, the middle row among them.
BAND_TOP, BAND_HEIGHT = 192, 96
# Distinct frames; the cost session cycles through them (its parts are placed by their tfdt,
# not by the number they show), the browser's session must not (numbers are read back).
DISTINCT = 600
# numbered draws BITS bits: numbers repeat after this many frames.
NUMBERS = 1 << numbered.BITS
RSS_INTERVAL = 0.5
REQUEST_TIMEOUT = 10.0
RETRY_DELAY = 0.5
STALLED_RCVBUF = 1024
# How long the browser has to show its first frame.
FIRST_FRAME = 30.0
# A frame shown this long after it was sent, or before, is a misread number.
MAX_LATENCY = 30.0
MB = 1e6


def progress(message: str) -> None:
    print(f"bench.hls: {message}", file=sys.stderr, flush=True)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; None if there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --------------------------------------------------------------------------------------------
# Frames


def make_frames(ffmpeg: str, count: int) -> list[bytes]:
    """``count`` camera-like 640x480 JPEGs, frame *n* showing the number *n* as bars across a
    band through the middle; checked by decoding them back."""
    band = b"".join(numbered.gray_frame(n, WIDTH, BAND_HEIGHT) for n in range(count))
    with tempfile.TemporaryDirectory(prefix="bench-hls-frames-") as tmp:
        pattern = os.path.join(tmp, "f_%05d.jpg")
        subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error",
             "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}",
             "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{WIDTH}x{BAND_HEIGHT}",
             "-framerate", str(FPS), "-i", "pipe:0",
             "-filter_complex", f"[0:v]noise=alls=6:allf=t[cam];"
             f"[cam][1:v]overlay=0:{BAND_TOP}:shortest=1,format=yuvj420p",
             "-frames:v", str(count), "-q:v", "4", pattern],
            input=band, check=True, timeout=300,
        )  # fmt: skip
        frames = [p.read_bytes() for p in sorted(Path(tmp).glob("f_*.jpg"))]
        shown = numbered.decoded_numbers(ffmpeg, pattern)
    if shown != list(range(count)) or len(frames) != count:
        raise RuntimeError(f"the frames do not read back as 0..{count - 1}: {shown[:10]}...")
    return frames


# --------------------------------------------------------------------------------------------
# The sender: one session in real time, in a process of its own


@dataclass(frozen=True)
class SenderPlan:
    port: int
    client_id: str
    frames_file: str  # every JPEG, one after another
    lengths: tuple[int, ...]
    cycle: bool  # after the last frame, start again (the cost session), or stop (the browser's)


def _sender_main(plan: SenderPlan, times: Any, pipe: Pipe, stop: MpEvent) -> None:
    """The sender process: reports ``("connected", recording)``, sends until ``stop`` (or the
    frames or ``times`` run out), then ``CLOSE``, and reports ``("done", summary)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    try:
        summary = asyncio.run(_send(plan, times, pipe, stop))
    except Exception as e:  # reported, not raised: the parent decides
        summary = {"failure": f"{type(e).__name__}: {e}"}
    pipe.send(("done", summary))


async def _send(plan: SenderPlan, times: Any, pipe: Pipe, stop: MpEvent) -> dict[str, object]:
    blob = Path(plan.frames_file).read_bytes()
    messages, at = [], 0
    for n in plan.lengths:
        messages.append(
            load.ws_frame(load.OP_BINARY, bytes([load.BINARY_VIDEO]) + blob[at : at + n])
        )
        at += n
    del blob
    ws = await load.WebSocket.connect(plan.port)
    errors: list[str] = []
    await ws.send(load.text_frame({"eventType": "CONNECT", "id": plan.client_id}))
    async with asyncio.timeout(10):
        while True:
            doc = json.loads((await ws.messages.get()).text)
            if doc.get("eventType") == "CONNECTED":
                break
            if doc.get("eventType") == "ERROR":
                raise load.WebSocketError(f"CONNECT answered {doc}")
    pipe.send(("connected", doc["recording"]))
    limit = len(times) if plan.cycle else min(len(times), len(messages))
    t0 = time.perf_counter()
    lag, i = 0.0, 0
    while i < limit and not stop.is_set():
        due = t0 + i / FPS
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        times[i] = time.time()
        await ws.send(messages[i % len(messages)])
        lag = max(lag, time.perf_counter() - due)
        i += 1
        while not ws.messages.empty():
            doc = json.loads(ws.messages.get_nowait().text)
            if doc.get("eventType") == "ERROR":
                errors.append(str(doc.get("code")))
    await ws.send(load.text_frame({"eventType": "CLOSE"}))
    closed = False
    try:
        async with asyncio.timeout(30):
            while not closed:
                doc = json.loads((await ws.messages.get()).text)
                closed = doc.get("eventType") == "CLOSED"
                if doc.get("eventType") == "ERROR":
                    errors.append(str(doc.get("code")))
    except TimeoutError:
        pass
    await ws.close()
    return {"frames": i, "max_lag_s": round(lag, 3), "closed": closed, "errors": errors}


class Sender:
    """The parent's handle on a sender process; ``times[i]`` is frame *i*'s sent time."""

    def __init__(self, plan: SenderPlan, seconds: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.times = ctx.Array("d", math.ceil(seconds * FPS) + 1, lock=False)
        self._pipe, child = ctx.Pipe()
        self._stop = ctx.Event()
        self.proc = ctx.Process(
            target=_sender_main, args=(plan, self.times, child, self._stop), daemon=True
        )
        self.recording = ""

    def start(self, timeout: float = 30.0) -> str:
        self.proc.start()
        message = self._receive(timeout)
        if message[0] != "connected":
            raise RuntimeError(f"the sender did not connect: {message[1]}")
        self.recording = str(message[1])
        return self.recording

    def cpu(self) -> float:
        stat = run.read_stat(self.proc.pid) if self.proc.pid else None
        return stat.cpu if stat is not None else 0.0

    def sent(self) -> int:
        """Frames sent so far."""
        return sum(1 for t in self.times if t > 0)

    def finish(self, timeout: float = 45.0) -> dict[str, object]:
        self._stop.set()
        try:
            kind, summary = self._receive(timeout)
        except TimeoutError:
            kind, summary = "done", {"failure": "the sender did not finish in time"}
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        return dict(summary) if kind == "done" else {"failure": str(summary)}

    def _receive(self, timeout: float) -> tuple[str, Any]:
        if not self._pipe.poll(timeout):
            raise TimeoutError("no word from the sender")
        return self._pipe.recv()


def write_frames(frames: Sequence[bytes], directory: Path) -> tuple[str, tuple[int, ...]]:
    path = directory / "frames.bin"
    path.write_bytes(b"".join(frames))
    return os.fspath(path), tuple(len(f) for f in frames)


# --------------------------------------------------------------------------------------------
# The daemon


class Daemon:
    """``twistd -n livestream`` of this checkout, in a session of its own."""

    def __init__(self, workdir: Path, extra: Sequence[str]) -> None:
        self.port = run.free_port()
        self.media = workdir / "media"
        self.media.mkdir()
        self.log = workdir / "daemon.log"
        argv = [
            os.fspath(TWISTD), "-n", "--pidfile=", "livestream",
            "--listen", f"tcp:{self.port}:interface={HOST}", "--media", os.fspath(self.media),
            "--min-free-mb", "64", *extra,
        ]  # fmt: skip
        path = os.pathsep.join(p for p in (os.fspath(REPO), os.environ.get("PYTHONPATH")) if p)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd=workdir, env=dict(os.environ, PYTHONPATH=path),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_listening(self, timeout: float = 60.0) -> None:
        import http.client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited: {self.tail()}")
            try:
                c = http.client.HTTPConnection(HOST, self.port, timeout=2)
                c.request("GET", "/healthz")
                c.getresponse().read()
                c.close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the daemon did not answer in {timeout:g} s: {self.tail()}")

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of the daemon itself, and of its children (live ones and reaped)."""
        own = run.read_stat(self.pid)
        if own is None:
            return 0.0, 0.0
        kids = [s for s in map(run.read_stat, run.descendants(self.pid)) if s is not None]
        return own.cpu, own.reaped + sum(s.cpu for s in kids)

    def rss(self) -> int:
        return run.status_bytes(self.pid, "VmRSS")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# --------------------------------------------------------------------------------------------
# fMP4: what a part holds (an independent reading, not the daemon's livestream.hls.fmp4)


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, where its content starts, where it ends) of the boxes in ``data[start:end]``."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        head = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, at + 8)
            head = 16
        elif size == 0:
            size = end - at
        if size < head or at + size > end:
            return
        yield kind, at + head, at + size
        at += size


def _find(data: bytes, start: int, end: int, *path: bytes) -> tuple[int, int] | None:
    for kind, s, e in _boxes(data, start, end):
        if kind == path[0]:
            return (s, e) if len(path) == 1 else _find(data, s, e, *path[1:])
    return None


def init_timescale(init: bytes) -> int:
    found = _find(init, 0, len(init), b"moov", b"trak", b"mdia", b"mdhd")
    if found is None:
        raise PlayerError("no mdhd in the init segment")
    version = init[found[0]]
    return struct.unpack_from(">I", init, found[0] + (20 if version == 1 else 12))[0]


def part_frames(part: bytes) -> tuple[int, int]:
    """(decode time of the part's first sample, samples in it), over all its fragments."""
    first: int | None = None
    samples = 0
    for kind, s, e in _boxes(part, 0, len(part)):
        if kind != b"moof":
            continue
        traf = _find(part, s, e, b"traf")
        if traf is None:
            continue
        tfdt = _find(part, traf[0], traf[1], b"tfdt")
        if tfdt is not None and first is None:
            version = part[tfdt[0]]
            fmt = ">Q" if version == 1 else ">I"
            (first,) = struct.unpack_from(fmt, part, tfdt[0] + 4)
        for kind2, s2, _ in _boxes(part, traf[0], traf[1]):
            if kind2 == b"trun":
                samples += struct.unpack_from(">I", part, s2 + 4)[0]
    if first is None:
        raise PlayerError("a part without tfdt")
    return first, samples


# --------------------------------------------------------------------------------------------
# Playlists


@dataclass(frozen=True)
class PartRef:
    number: int
    uri: str


@dataclass(frozen=True)
class MediaPlaylist:
    map_uri: str | None
    parts: tuple[PartRef, ...]
    next_msn: int  # the blocking reload for the part after the last one listed
    next_part: int
    ended: bool


_URI = re.compile(r'URI="([^"]+)"')
_PART_NUMBER = re.compile(r"p(\d+)\.m4s")


def parse_media(text: str) -> MediaPlaylist:
    """The parts listed and what to ask for next: part ``count`` of the segment being made, or
    part 0 of the next segment if the last one listed is complete (its ``EXTINF`` and URI)."""
    msn, index, parts, map_uri, ended = 0, 0, [], None, False
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MAP:"):
            m = _URI.search(line)
            map_uri = m.group(1) if m else None
        elif line.startswith("#EXT-X-PART:"):
            m = _URI.search(line)
            n = _PART_NUMBER.search(m.group(1)) if m else None
            if m is None or n is None:
                raise PlayerError(f"an EXT-X-PART without a part URI: {line}")
            parts.append(PartRef(int(n.group(1)), m.group(1)))
            index += 1
        elif line.startswith("#EXT-X-ENDLIST"):
            ended = True
        elif line and not line.startswith("#"):
            msn, index = msn + 1, 0  # a segment's URI: it is complete
    return MediaPlaylist(map_uri, tuple(parts), msn, index, ended)


# --------------------------------------------------------------------------------------------
# HTTP: one keep-alive connection, one request at a time


class PlayerError(Exception):
    """A request that failed: a status other than 200, a broken connection, a timeout."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    wire_bytes: int  # head and body, as received
    at: float  # time.time() of its last byte


class Connection:
    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, timeout: float = REQUEST_TIMEOUT) -> Answer:
        try:
            async with asyncio.timeout(timeout):
                return await self._get(path)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            self.close()
            raise PlayerError(f"GET {path}: {type(e).__name__} {e}") from e

    async def _get(self, path: str) -> Answer:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(HOST, self._port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self._port}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        status = int(status_line.split(" ", 2)[1])
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            pieces = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                pieces.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")
            body = b"".join(pieces)
        else:
            body = await reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Answer(status, body, len(head) + len(body), time.time())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


# --------------------------------------------------------------------------------------------
# The players


@dataclass(frozen=True)
class PartSeen:
    number: int
    first_frame: int
    frames: int
    listed_at: float  # the playlist answer that listed it
    arrived_at: float  # its last byte


@dataclass
class PlayerLog:
    answers: list[tuple[float, int, int]] = field(default_factory=list)  # (at, status, bytes)
    parts: list[PartSeen] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)


async def _fetch(conn: Connection, path: str, log: PlayerLog) -> Answer:
    answer = await conn.get(path)
    log.answers.append((answer.at, answer.status, answer.wire_bytes))
    if answer.status != 200:
        raise PlayerError(f"GET {path}: {answer.status}")
    return answer


async def play(port: int, recording: str, until: float, log: PlayerLog) -> None:
    """One lightweight LL-HLS player until ``until`` (``time.time()``); on a failure it starts
    again from the multivariant playlist after 0.5 s, as a player retries."""
    conn = Connection(port)
    try:
        while time.time() < until:
            try:
                if await _play(conn, f"/live/{quote(recording)}/", until, log):
                    return
            except PlayerError as e:
                log.failures.append((time.time(), str(e)))
                conn.close()
                await asyncio.sleep(RETRY_DELAY)
    finally:
        conn.close()


async def _play(conn: Connection, base: str, until: float, log: PlayerLog) -> bool:
    """Tune in and follow the live edge; True when the playlist ended."""
    multivariant = (await _fetch(conn, base + "index.m3u8", log)).body.decode()
    variant = next(x for x in multivariant.splitlines() if x and not x.startswith("#"))
    answer = await _fetch(conn, base + variant, log)
    playlist = parse_media(answer.body.decode())
    if playlist.map_uri is None:
        raise PlayerError("a media playlist without EXT-X-MAP")
    timescale = init_timescale((await _fetch(conn, base + playlist.map_uri, log)).body)
    last = playlist.parts[-1].number - 1 if playlist.parts else -1
    live = False  # the parts of the first playlist are the tune-in, not the live edge
    while time.time() < until:
        for part in playlist.parts:
            if part.number <= last:
                continue
            got = await _fetch(conn, base + part.uri, log)
            start, count = part_frames(got.body)
            if live:
                first = round(start * FPS / timescale)
                log.parts.append(PartSeen(part.number, first, count, answer.at, got.at))
            last = part.number
        if playlist.ended:
            return True
        live = True
        path = f"{base}{variant}?_HLS_msn={playlist.next_msn}&_HLS_part={playlist.next_part}"
        answer = await _fetch(conn, path, log)
        playlist = parse_media(answer.body.decode())
    return False


@dataclass
class StalledLog:
    requests: int = 0  # GETs of parts written (whole or in part) to the stalled socket
    bytes_accepted: int = 0  # of those requests, what the kernel took
    bytes_refused: int = 0  # what it would not take (the daemon stopped reading)
    # At the end, before the close: the daemon's socket's queues (/proc/net/tcp): what the
    # kernel holds to send (its send buffer, outside the daemon's RSS) and the requests the
    # daemon has not read.
    daemon_send_queue: int | None = None
    daemon_receive_queue: int | None = None
    # When the daemon dropped the connection (seconds after the stalled player began), if it did.
    dropped_after: float | None = None
    playlists: PlayerLog = field(default_factory=PlayerLog)


def tcp_queues(local_port: int, remote_port: int) -> tuple[int, int] | None:
    """(send queue, receive queue) in bytes of the socket 127.0.0.1:``local_port`` connected
    to 127.0.0.1:``remote_port``, from /proc/net/tcp; None if there is none."""
    local, remote = f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}"
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if fields[1] == local and fields[2] == remote:
            tx, rx = fields[4].split(":")
            return int(tx, 16), int(rx, 16)
    return None


async def stalled_player(port: int, recording: str, until: float, log: StalledLog) -> None:
    """Follows the playlists like :func:`play` on a connection it reads, and sends a GET for
    every new part, pipelined, on a socket with a tiny receive buffer that it never reads."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
    sock.setblocking(False)
    conn = Connection(port)
    base = f"/live/{quote(recording)}/"
    pending = b""
    began = time.time()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), 5)
        variant = "video.m3u8"
        path = base + variant
        last = -1
        while time.time() < until:
            try:
                answer = await _fetch(conn, path, log.playlists)
            except PlayerError as e:
                log.playlists.failures.append((time.time(), str(e)))
                await asyncio.sleep(RETRY_DELAY)
                path = base + variant
                continue
            playlist = parse_media(answer.body.decode())
            for part in playlist.parts:
                if part.number > last:
                    if last >= 0:  # from the second playlist on: the live edge
                        request = f"GET {base}{part.uri} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n"
                        pending += request.encode()
                        log.requests += 1
                    last = part.number
            try:
                sent = sock.send(pending)
            except BlockingIOError:
                sent = 0
            except (ConnectionResetError, BrokenPipeError):
                log.dropped_after = time.time() - began
                break
            log.bytes_accepted += sent
            pending = pending[sent:]
            path = f"{base}{variant}?_HLS_msn={playlist.next_msn}&_HLS_part={playlist.next_part}"
        log.bytes_refused = len(pending)
        queues = tcp_queues(port, sock.getsockname()[1])
        if queues is not None:
            log.daemon_send_queue, log.daemon_receive_queue = queues
    finally:
        conn.close()
        sock.close()


# --------------------------------------------------------------------------------------------
# Cost steps


@dataclass
class Window:
    """What was read at the start and the end of a step's window."""

    t: float
    daemon_cpu: float
    children_cpu: float
    own_cpu: float
    sender_cpu: float
    busy: float

    @classmethod
    def now(cls, daemon: Daemon, sender: Sender) -> Window:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            time.time(), *daemon.cpu(), own.ru_utime + own.ru_stime, sender.cpu(),
            run.machine_busy_s(),
        )  # fmt: skip


async def _sample_rss(daemon: Daemon, until: float, into: list[int]) -> None:
    while time.time() < until:
        into.append(daemon.rss())
        await asyncio.sleep(RSS_INTERVAL)
    into.append(daemon.rss())


async def cost_step(
    daemon: Daemon,
    sender: Sender,
    players: int,
    warmup: float,
    seconds: float,
    stalled: bool = False,
) -> dict[str, Any]:
    """N players (and the stalled one) on the sender's session: the figures of one window."""
    name = sender.recording
    start = time.time()
    w_start, w_end = start + warmup, start + warmup + seconds
    logs = [PlayerLog() for _ in range(players)]
    tasks = [asyncio.create_task(play(daemon.port, name, w_end, log)) for log in logs]
    stalled_log = StalledLog()
    if stalled:
        tasks.append(asyncio.create_task(stalled_player(daemon.port, name, w_end, stalled_log)))
    rss_before = daemon.rss()
    await asyncio.sleep(max(0.0, w_start - time.time()))
    load_start = load_average()
    a = Window.now(daemon, sender)
    rss: list[int] = []
    await _sample_rss(daemon, w_end, rss)
    b = Window.now(daemon, sender)
    load_end = load_average()
    done, late = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 5) if tasks else (set(), set())
    for task in late:
        task.cancel()
    for task in done:
        if (error := task.exception()) is not None:
            raise error
    rss_after = None
    if stalled:
        await asyncio.sleep(3)  # the stalled socket is closed: what the daemon gives back
        rss_after = daemon.rss()
    span = b.t - a.t
    line = _figures(players, a, b, span, logs, sender, rss, rss_before, load_start, load_end)
    line["players_left_running"] = len(late)
    if stalled:
        line["step"] = "stalled"
        line["stalled"] = {
            "requests": stalled_log.requests,
            "request_bytes_accepted": stalled_log.bytes_accepted,
            "request_bytes_refused": stalled_log.bytes_refused,
            "dropped_by_daemon_after_s": stalled_log.dropped_after,
            "playlist_failures": len(stalled_log.playlists.failures),
            "daemon_send_queue_bytes": stalled_log.daemon_send_queue,
            "daemon_receive_queue_bytes": stalled_log.daemon_receive_queue,
            "rss_mb_3s_after_close": _r((rss_after or 0) / MB, 1),
        }
    return line


def _figures(
    players: int,
    a: Window,
    b: Window,
    span: float,
    logs: Sequence[PlayerLog],
    sender: Sender,
    rss: Sequence[int],
    rss_before: int,
    load_start: list[float],
    load_end: list[float],
) -> dict[str, Any]:
    answers = [x for log in logs for x in log.answers if a.t <= x[0] <= b.t]
    parts = [p for log in logs for p in log.parts if a.t <= p.arrived_at <= b.t]
    times = sender.times
    latency, first_latency, listed, told = [], [], [], []
    unsent = 0
    for p in parts:
        last = p.first_frame + p.frames - 1
        if p.frames < 1 or last >= len(times) or times[last] <= 0:
            unsent += 1
            continue
        latency.append(p.arrived_at - times[last])
        first_latency.append(p.arrived_at - times[p.first_frame])
        listed.append(p.arrived_at - p.listed_at)
        told.append(p.listed_at - times[last])
    statuses = Counter(str(s) for _, s, _ in answers if s != 200)
    failures = Counter(
        f.split(":", 1)[-1].strip()[:60] for log in logs for t, f in log.failures if a.t <= t <= b.t
    )
    per_player = [sum(1 for p in log.parts if a.t <= p.arrived_at <= b.t) for log in logs]
    own = b.own_cpu - a.own_cpu
    ours = own + (b.sender_cpu - a.sender_cpu)
    others = max(0.0, (b.busy - a.busy) - ours - (b.daemon_cpu - a.daemon_cpu)
                 - (b.children_cpu - a.children_cpu))  # fmt: skip
    return {
        "step": "players",
        "players": players,
        "seconds": round(span, 2),
        "load_avg_start": load_start,
        "load_avg_end": load_end,
        "others_cores": round(others / span, 2),
        "daemon_cpu_per_s": round((b.daemon_cpu - a.daemon_cpu) / span, 4),
        "encoder_cpu_per_s": round((b.children_cpu - a.children_cpu) / span, 4),
        "rss_mb": {
            "before": _r(rss_before / MB, 1),
            "start": _r(rss[0] / MB, 1) if rss else None,
            "max": _r(max(rss) / MB, 1) if rss else None,
            "end": _r(rss[-1] / MB, 1) if rss else None,
        },
        "bytes_per_s": round(sum(x[2] for x in answers) / span),
        "requests_per_s": round(len(answers) / span, 1),
        "parts": len(parts),
        "parts_per_player": {"min": min(per_player), "max": max(per_player)} if logs else None,
        "part_latency_s": {
            "p50": _r(percentile(latency, 0.5)),
            "p99": _r(percentile(latency, 0.99)),
            "max": _r(max(latency)) if latency else None,
        },
        "first_frame_latency_s_p50": _r(percentile(first_latency, 0.5)),
        "listed_latency_s": {
            "p50": _r(percentile(told, 0.5)),
            "p99": _r(percentile(told, 0.99)),
        },
        "listed_to_bytes_s": {
            "p50": _r(percentile(listed, 0.5)),
            "p99": _r(percentile(listed, 0.99)),
        },
        "parts_not_sent": unsent,
        "errors": {"statuses": dict(statuses), "failures": dict(failures)},
        "players_cpu_per_s": round(own / span, 3),
        "sender_cpu_per_s": round((b.sender_cpu - a.sender_cpu) / span, 3),
    }


async def cost(
    daemon: Daemon,
    sender: Sender,
    counts: Sequence[int],
    warmup: float,
    seconds: float,
    stalled_with: int,
) -> list[dict[str, Any]]:
    await asyncio.sleep(2.0)  # the encoder's first segment
    lines: list[dict[str, Any]] = []
    for n in counts:
        progress(f"{n} players: {warmup:g} s warm-up, {seconds:g} s window (load {load_average()})")
        line = await cost_step(daemon, sender, n, warmup, seconds)
        progress(_short(line))
        lines.append(line)
    if stalled_with:
        progress(f"{stalled_with} players and a stalled one (load {load_average()})")
        line = await cost_step(daemon, sender, stalled_with, warmup, seconds, stalled=True)
        progress(_short(line))
        lines.append(line)
    add_ratios(lines)
    return lines


def add_ratios(lines: Sequence[dict[str, Any]]) -> None:
    """``cpu_ratio_to_1``: the daemon's CPU (its children left out) over that of N = 1 in the
    same run; ``serving_ratio_to_1``: the same for what the players add to N = 0."""
    plain = {x["players"]: float(x["daemon_cpu_per_s"]) for x in lines if x["step"] == "players"}
    one, zero = plain.get(1), plain.get(0)
    for line in lines:
        cpu = float(line["daemon_cpu_per_s"])
        if one:
            line["cpu_ratio_to_1"] = round(cpu / one, 2)
        if one is not None and zero is not None and one > zero:
            line["serving_ratio_to_1"] = round((cpu - zero) / (one - zero), 2)


def _short(line: dict[str, Any]) -> str:
    lat = line["part_latency_s"]
    return (
        f"{line['step']} {line['players']}: daemon {line['daemon_cpu_per_s']} cpu/s, encoder "
        f"{line['encoder_cpu_per_s']}, rss max {line['rss_mb']['max']} MB, "
        f"{line['requests_per_s']} req/s, {line['bytes_per_s'] / MB:.2f} MB/s, part latency "
        f"p50 {lat['p50']} p99 {lat['p99']}, errors {line['errors']}, load {line['load_avg_end']}"
    )


# --------------------------------------------------------------------------------------------
# Glass to glass, in Chromium


# Hooks the page's <video>: each frame presented is drawn to a canvas and its number read.
HOOK_JS = (
    numbered.JS_READER
    + """
window.benchShown = [];
window.benchErrors = [];
window.benchWaiting = 0;
function benchHook(video) {
  const canvas = document.createElement("canvas");
  let context = null;
  video.addEventListener("waiting", () => { window.benchWaiting += 1; });
  function onFrame(now, meta) {
    const w = video.videoWidth, h = video.videoHeight;
    if (w && h) {
      if (canvas.width !== w || canvas.height !== h || context === null) {
        canvas.width = w; canvas.height = h;
        context = canvas.getContext("2d", { willReadFrequently: true });
      }
      context.drawImage(video, 0, 0, w, h);
      const at = performance.timeOrigin + performance.now();
      window.benchShown.push([readNumber(context, w, h), at,
                              performance.timeOrigin + meta.expectedDisplayTime]);
    }
    video.requestVideoFrameCallback(onFrame);
  }
  video.requestVideoFrameCallback(onFrame);
}
function benchPoll() {
  const video = document.querySelector("video");
  const quality = video && video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
  const hls = window.hls || null;
  return {
    shown: window.benchShown.splice(0), errors: window.benchErrors.splice(0),
    date: Date.now(), perf: performance.timeOrigin + performance.now(),
    latency: hls ? hls.latency : null, target: hls ? hls.targetLatency : null,
    dropped: quality ? quality.droppedVideoFrames : null, waiting: window.benchWaiting,
  };
}
"""
)

HLS_PAGE = """<!doctype html>
<meta charset="utf-8"><title>bench.hls</title>
<video id="video" muted playsinline autoplay></video>
<script src="/hls.min.js"></script>
<script>
HOOK
const video = document.getElementById("video");
const params = new URLSearchParams(location.search);
const hls = new Hls({ lowLatencyMode: true, ...JSON.parse(params.get("config") || "{}") });
window.hls = hls;
hls.on(Hls.Events.ERROR, (_, d) => window.benchErrors.push([d.type, d.details, d.fatal]));
hls.on(Hls.Events.MANIFEST_PARSED, () => {
  video.play().catch((e) => window.benchErrors.push(["play", String(e), false]));
});
hls.loadSource(params.get("src"));
hls.attachMedia(video);
benchHook(video);
</script>
"""


def hls_js() -> Path:
    """hls.js 1 from the npm registry, into build/npm/ (once)."""
    if not HLS_JS.exists():
        progress(f"npm install hls.js@1 into {NPM_DIR}")
        subprocess.run(
            ["npm", "install", "--no-save", "--prefix", os.fspath(NPM_DIR), "hls.js@1",
             "--no-audit", "--no-fund"],
            check=True, timeout=300, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return HLS_JS


class PageServer:
    """The bench's own HTTP server: the page at ``/`` and hls.js at ``/hls.min.js``."""

    def __init__(self, script: Path) -> None:
        files = {
            "/": (HLS_PAGE.replace("HOOK", HOOK_JS).encode(), "text/html; charset=utf-8"),
            "/hls.min.js": (script.read_bytes(), "text/javascript"),
        }

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = files.get(self.path.split("?", 1)[0])
                if found is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", found[1])
                self.send_header("content-length", str(len(found[0])))
                self.send_header("cache-control", "no-store")
                self.end_headers()
                self.wfile.write(found[0])

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def glass_to_glass(
    daemon: Daemon,
    frames_file: str,
    lengths: tuple[int, ...],
    player: str,
    warmup: float,
    seconds: float,
    hls_config: str = "{}",
) -> dict[str, object]:
    """One browser on a session of its own: the figures of its window."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    budget = len(lengths) / FPS
    script = hls_js() if player == "hls.js" else None
    sender = Sender(SenderPlan(daemon.port, "bench-hls-g2g", frames_file, lengths, False), budget)
    name = sender.start()
    pages = PageServer(script) if script is not None else None
    line: dict[str, object] = {
        "step": "glass-to-glass", "player": player, "load_avg_start": load_average()
    }  # fmt: skip
    polls: list[dict[str, Any]] = []
    try:
        time.sleep(1.0)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                if pages is not None:
                    src = f"http://{HOST}:{daemon.port}/live/{quote(name)}/index.m3u8"
                    query = f"src={quote(src, safe='')}&config={quote(hls_config, safe='')}"
                    page.goto(f"http://{HOST}:{pages.port}/?{query}")
                    line["hls_js"] = page.evaluate("Hls.version")
                    line["hls_config"] = json.loads(hls_config)
                    line["low_latency_mode"] = page.evaluate("hls.config.lowLatencyMode")
                else:
                    page.goto(f"http://{HOST}:{daemon.port}/#watch={quote(name, safe='')}")
                    try:
                        page.wait_for_function(
                            "() => { const v = document.querySelector('#viewer-video');"
                            " return v !== null && v.videoWidth > 0; }",
                            timeout=20_000,
                        )
                    except PlaywrightError:
                        line["error"] = "the page's Watch showed no picture within 20 s"
                        return line
                    page.add_script_tag(content=HOOK_JS)
                    page.evaluate("benchHook(document.querySelector('#viewer-video'))")
                polls = _watch(page, warmup, seconds)
            finally:
                browser.close()
    finally:
        if pages is not None:
            pages.close()
        line["sender"] = sender.finish()
    line.update(_latencies(polls, sender, warmup))
    line["load_avg_end"] = load_average()
    return line


def _watch(page: Any, warmup: float, seconds: float) -> list[dict[str, Any]]:
    """Poll the page every 0.5 s: from the first frame shown (at most :data:`FIRST_FRAME` s
    after the page opened), for the warm-up and the window."""
    polls: list[dict[str, Any]] = []
    deadline = time.time() + FIRST_FRAME
    first: float | None = None
    while True:
        poll = page.evaluate("benchPoll()")
        poll["at"] = time.time()
        polls.append(poll)
        if first is None and poll["shown"]:
            first = poll["shown"][0][1] / 1000
            progress(f"first frame shown; playing {warmup + seconds:g} s")
        if first is None and time.time() > deadline:
            break
        if first is not None and time.time() > first + warmup + seconds + 0.5:
            break
        time.sleep(0.5)
    return polls


def _latencies(polls: list[dict[str, Any]], sender: Sender, warmup: float) -> dict[str, object]:
    shown = [entry for poll in polls for entry in poll["shown"]]
    errors = [e for poll in polls for e in poll["errors"]]
    if not shown:
        return {"error": f"no frame shown within {FIRST_FRAME:g} s", "player_errors": errors[:10]}
    start = shown[0][1] / 1000 + warmup
    window = [e for e in shown if e[1] / 1000 >= start]
    times = sender.times
    sent = sender.sent()
    latency, display, misread, seen = [], [], 0, set()
    arrivals = []
    for number, at, expected in window:
        if number >= sent or times[number] <= 0:
            misread += 1
            continue
        value = at / 1000 - times[number]
        if not 0 <= value <= MAX_LATENCY:
            misread += 1
            continue
        arrivals.append(at / 1000)
        if number in seen:
            continue
        seen.add(number)
        latency.append(value)
        display.append(expected / 1000 - times[number])
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    span = (window[-1][1] - window[0][1]) / 1000 if window else 0.0
    numbers = sorted(seen)
    in_window = polls[-1]
    hls_latency = [
        p["latency"] for p in polls
        if p["at"] >= start and isinstance(p["latency"], float) and math.isfinite(p["latency"])
    ]  # fmt: skip
    clock = [p["perf"] - p["date"] for p in polls]
    return {
        "seconds": round(span, 2),
        "frames_shown": len(latency),
        "frames_sent_meanwhile": (numbers[-1] - numbers[0] + 1) if numbers else 0,
        "misread": misread,
        "latency_s": {
            "p50": _r(percentile(latency, 0.5)),
            "p90": _r(percentile(latency, 0.9)),
            "max": _r(max(latency)) if latency else None,
            "min": _r(min(latency)) if latency else None,
        },
        "expected_display_latency_s_p50": _r(percentile(display, 0.5)),
        "longest_gap_s": _r(max(gaps)) if gaps else None,
        "hls_latency_s": {
            "p50": _r(percentile(hls_latency, 0.5)),
            "min": _r(min(hls_latency)) if hls_latency else None,
            "max": _r(max(hls_latency)) if hls_latency else None,
        },
        "hls_target_latency_s": _r(in_window.get("target")),
        "dropped_frames": in_window.get("dropped"),
        "waiting_events": in_window.get("waiting"),
        "player_errors": errors[:10],
        "player_errors_total": len(errors),
        "perf_minus_date_ms_max": _r(max(clock, key=abs), 1) if clock else None,
    }


# --------------------------------------------------------------------------------------------
# Command line


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _span(low: object, high: object) -> str:
    return "-" if low is None else f"{low}-{high}"


def _loads(x: dict[str, Any]) -> str:
    """The 1-minute load average at the start and the end."""
    ends = [x.get(k) for k in ("load_avg_start", "load_avg_end")]
    return "-".join(str(v[0]) if v else "?" for v in ends)


def markdown(lines: Sequence[dict[str, Any]]) -> str:
    """The cost lines as one table, the browser lines as another."""
    cost_lines = [x for x in lines if x["step"] in ("players", "stalled")]
    rows: list[str] = []
    if cost_lines:
        rows += [
            "| players | daemon CPU s/s | vs 1 | serving vs 1 | encoder CPU s/s | RSS MB start / "
            "max / end | MB/s served | requests/s | parts per player | part latency p50 / p99 s | "
            "listed p50 / p99 s | errors | players' CPU s/s | others' cores | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for x in cost_lines:
        rss, lat, pp = x["rss_mb"], x["part_latency_s"], x["parts_per_player"] or {}
        told = x.get("listed_latency_s") or {}
        errors = sum(x["errors"]["statuses"].values()) + sum(x["errors"]["failures"].values())
        who = f"{x['players']}" + (" + 1 stalled" if x["step"] == "stalled" else "")
        rows.append(
            f"| {who} | {x['daemon_cpu_per_s']:.3f} | {x.get('cpu_ratio_to_1', '-')} | "
            f"{x.get('serving_ratio_to_1', '-')} | {x['encoder_cpu_per_s']:.3f} | "
            f"{rss['start']} / {rss['max']} / {rss['end']} | {x['bytes_per_s'] / MB:.2f} | "
            f"{x['requests_per_s']} | {_span(pp.get('min'), pp.get('max'))} | "
            f"{_dash(lat['p50'])} / {_dash(lat['p99'])} | {_dash(told.get('p50'))} / "
            f"{_dash(told.get('p99'))} | {errors} | {x['players_cpu_per_s']} | "
            f"{x['others_cores']} | {_loads(x)} |"
        )
    browser = [x for x in lines if x["step"] == "glass-to-glass"]
    if browser:
        rows += [
            *([""] if rows else []),
            "| player | config | frames shown / sent | latency p50 / p90 / max s | hls.latency "
            "p50 (min-max) s | target s | longest gap s | player errors | load |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    for x in browser:
        if "latency_s" not in x:
            rows.append(f"| {x['player']} | - | {x.get('error')} | | | | | | |")
            continue
        lat, hl = x["latency_s"], x["hls_latency_s"]
        rows.append(
            f"| {x['player']} {x.get('hls_js', '')} | {json.dumps(x.get('hls_config', {}))} | "
            f"{x['frames_shown']} / {x['frames_sent_meanwhile']} | {lat['p50']} / {lat['p90']} "
            f"/ {lat['max']} | {_dash(hl['p50'])} ({_dash(hl['min'])}-{_dash(hl['max'])}) | "
            f"{_dash(x['hls_target_latency_s'])} | {x['longest_gap_s']} | "
            f"{x['player_errors_total']} | {_loads(x)} |"
        )
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--players", default="0,1,10,50", help="player counts, one step each")
    p.add_argument("--seconds", type=float, default=20.0, help="each step's window")
    p.add_argument("--warmup", type=float, default=5.0, help="before each window")
    p.add_argument("--stalled-with", type=int, default=10,
                   help="players beside the stalled one (0: no stalled step)")  # fmt: skip
    p.add_argument("--skip-cost", action="store_true", help="only the browser")
    p.add_argument("--skip-browser", action="store_true", help="only the cost")
    p.add_argument("--player", choices=("hls.js", "page"), default="hls.js")
    p.add_argument("--browser-seconds", type=float, default=20.0)
    p.add_argument("--browser-runs", type=int, default=1,
                   help="browser measurements, each on a session of its own")  # fmt: skip
    p.add_argument("--hls-config", default="{}",
                   help="JSON merged into hls.js's config, e.g. "
                        "'{\"maxLiveSyncPlaybackRate\": 1.5}'")  # fmt: skip
    p.add_argument("--daemon-args", default="", help="appended to the daemon's command")
    p.add_argument("--keep", type=Path, help="work in this directory and keep it (daemon.log)")
    p.add_argument("--table", type=Path, help="only print the tables of these JSON lines")
    args = p.parse_args(argv)
    args.counts = [int(x) for x in args.players.split(",") if x.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.table is not None:
        print(markdown([json.loads(x) for x in args.table.read_text().splitlines() if x.strip()]))
        return
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="bench-hls-", dir=args.keep))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="bench-hls-"))
    progress(f"work in {workdir}, load {load_average()}")
    # The browser's session must not run out of distinct numbers: its first frame may take
    # FIRST_FRAME s to show, then the warm-up and the window.
    count = max(DISTINCT, math.ceil((FIRST_FRAME + 10 + args.warmup + args.browser_seconds) * FPS))
    if count > NUMBERS:
        raise SystemExit(f"--warmup + --browser-seconds: at most {NUMBERS // FPS - 40} s")
    frames_file, lengths = write_frames(make_frames(load.find_ffmpeg(), count), workdir)
    progress(f"{count} frames of {statistics.fmean(lengths) / 1000:.1f} KB")
    daemon = Daemon(workdir, args.daemon_args.split())
    lines: list[dict[str, Any]] = []
    try:
        daemon.wait_listening()
        if not args.skip_cost:
            steps = len(args.counts) + (1 if args.stalled_with else 0)
            budget = steps * (args.warmup + args.seconds + REQUEST_TIMEOUT + 10) + 30
            plan = SenderPlan(daemon.port, "bench-hls-cost", frames_file, lengths, True)
            sender = Sender(plan, budget)
            sender.start()
            try:
                lines += asyncio.run(
                    cost(daemon, sender, args.counts, args.warmup, args.seconds, args.stalled_with)
                )
            finally:
                summary = sender.finish()
            for line in lines:
                line["sender"] = summary
                print(json.dumps(line), flush=True)
        for _ in range(0 if args.skip_browser else args.browser_runs):
            progress(f"glass to glass with {args.player} (load {load_average()})")
            line = glass_to_glass(
                daemon, frames_file, lengths, args.player, args.warmup, args.browser_seconds,
                args.hls_config,
            )  # fmt: skip
            print(json.dumps(line), flush=True)
            lines.append(line)
    finally:
        code = daemon.stop()
        progress(f"daemon stopped ({code}); load {load_average()}")
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
        print(markdown(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
