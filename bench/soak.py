"""Soak: many clients for a long time while the harness breaks things; every frame accounted for.

For ``--duration`` seconds, ``--clients`` clients record one session after another
(:mod:`bench.soakclient`: JPEG + PCM or H.264 + Opus, JSON or binary, paced or unpaced, with
or without audio, some resumable over connections they cut at random, some abandoned without
``CLOSE``) against one real daemon (``twistd -n livestream`` on 127.0.0.1, a free port), while
the harness, at random times drawn from ``--seed`` and one fault at a time:

``encoder_kill``
    SIGKILLs one live video encoder (an ffmpeg child of the daemon reading ``pipe:0`` into
    ``temp/<name>.video.fmp4``: its command line names the session it serves);
``encoder_stop``
    SIGSTOPs one for 4 to 16 s (past the daemon's ``--encoder-timeout`` of 10 s it is taken for
    stuck and replaced), then SIGCONTs it;
``disk_fill``
    fills the media tree's file system (a tmpfs of its own) to a quarter of the daemon's
    free-space floor (``--min-free-mb``: below half of it the daemon finishes live sessions with
    ``storage_full``, below it refuses new ones), holds it 3 to 6 s, and frees it;
``daemon_kill``
    SIGKILLs the daemon (half the time with its whole process group, encoders included, as
    systemd's final kill does; else alone, as the OOM killer does, its encoders left to finish
    their files), and starts it again on the same port and media tree 0.5 to 2 s later
    (recovery of ``temp/`` happens at its start).

A session that has ended and whose files are settled (not live in ``GET /api/sessions``, no file
of its name in ``temp/``) is decoded (PyAV: every frame; the WAV's sizes and bytes), judged
against :data:`BOUNDS` for the faults that hit it, and, if it holds, deleted through
``DELETE /recordings/...``, so the media tree stays small however long the run. At the end the
clients ``CLOSE``, the harness waits for every session to settle, checks that ``temp/`` is
empty and that the API lists exactly the recordings kept (those with a violation), each once,
stops the daemon with SIGTERM (it must exit 0, ``temp/`` still empty), looks for any file of a
name it deleted (a recording twice) or of no session's name, and for processes left running.
The daemon's RSS (``VmRSS``) is sampled every 2 s; each lifetime long enough is judged flat by
:data:`MEMORY_GROWTH_MB`.

It prints a table of figures and every violation, writes ``report.json`` into its work
directory, and exits 1 on any violation::

    python -m bench.soak --duration 60 --clients 6
    python -m bench.soak --duration 300 --clients 20 --seed 7 --keep /var/tmp/soak
    python -m bench.soak --duration 1800 --clients 40          # the figures of bench/README.md

As root the media tree is a tmpfs of its own (``--disk-mb``, mounted for the run); otherwise a
plain directory, and the disk-fill fault is left out (the run says so). ``--faults`` chooses
the faults. Everything is bounded in time: a run ends within ``--duration`` plus a few
minutes whatever the daemon does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from bench import encoded, load, run, soakclient
from bench.soakclient import (
    ABANDONED,
    AUDIO,
    CHUNK_SAMPLES,
    CLOSED,
    FPS,
    H264,
    JPEG,
    STORAGE_FULL,
    VIDEO,
    Clips,
    SessionRecord,
)
from livestream.library.tree import TEMP_SUFFIXES, VIDEO_STREAM
from livestream.web.protocol import RECEIVE_BUFFER
from livestream.wire.kinds import BLOCK_BYTES

# --------------------------------------------------------------------------------------------
# The bounds: what a session may lose to each fault, in one table

NONE = "none"
RESUME_CUT = "resume_cut"
ABANDON = "abandoned"
ENCODER_STOP = "encoder_stop"
ENCODER_KILL = "encoder_kill"
DISK_FILL = "disk_fill"
DAEMON_KILL = "daemon_kill"
FAULTS = (ENCODER_KILL, ENCODER_STOP, DISK_FILL, DAEMON_KILL)
# A session's row in the figures: the worst fault that hit it.
CLASSES = (NONE, ABANDON, RESUME_CUT, ENCODER_STOP, ENCODER_KILL, DISK_FILL, DAEMON_KILL)

# A dead or stuck encoder is to be replaced and its pieces joined, losing at most the frames it
# held: this many per fault (the aim of the encoder work; until it lands, the daemon loses the
# rest of the session's video after an encoder dies, and the soak says so).
ENCODER_FAULT_FRAMES = 5
# README, "Where files go": a killed daemon's MP4 "keeps everything up to its last fragment (at
# most about the last second is lost)", the WAV every byte received; an H.264 session loses at
# most the frame it held, an Opus one at most its last 0.2 s.
DAEMON_KILL_SECONDS = 1.0
# And what the encoder's pipe held when it was killed with the daemon: an unpaced sender keeps
# it full (64 KiB: 15 of the soak's 4.3 KB JPEGs), a paced one nearly empty.
PIPE_BYTES = 64 << 10
OPUS_KILL_SECONDS = 0.2
# An Opus session's WAV is decoded after the session (pre-skip dropped, resampled to 44.1 kHz):
# it is counted to within one packet (bench.load's rule).
OPUS_SLACK = load.OPUS_SLACK


@dataclass(frozen=True)
class Bound:
    """What one fault of a kind may cost a session it hits, counted down from ``reference``:
    ``sent`` (every distinct chunk the client sent), ``accepted`` (the daemon's own count in its
    log line of the session's end) or ``observed`` (``GET /api/sessions`` just before the
    kill). Frames by the session's codec, samples at 44.1 kHz by its audio's."""

    reference: str
    jpeg_frames: int
    h264_frames: int
    pcm_samples: int
    opus_samples: int
    why: str


BOUNDS: dict[str, Bound] = {
    NONE: Bound("sent", 0, 0, 0, 0,
                "nothing received is lost (DESIGN.md): every frame and sample"),
    ABANDON: Bound("sent", 0, 0, 0, 0,
                   "closing TCP without CLOSE ends the session with everything the daemon "
                   "received, and a FIN comes after everything sent: every frame and sample"),
    RESUME_CUT: Bound("sent", 0, 0, 0, 0,
                      "the client re-sends what no ACK covered and the daemon drops what it "
                      "has (README, Resume): every frame and sample, none twice"),
    ENCODER_STOP: Bound("sent", ENCODER_FAULT_FRAMES, ENCODER_FAULT_FRAMES, 0, 0,
                        "a stuck encoder is replaced after the daemon's threshold, losing at "
                        "most the frames it held (the WAV is not the encoder's)"),
    ENCODER_KILL: Bound("sent", ENCODER_FAULT_FRAMES, ENCODER_FAULT_FRAMES, 0, 0,
                        "a dead encoder is replaced and the pieces joined, losing at most the "
                        "frames it held"),
    DISK_FILL: Bound("accepted", 0, 0, 0, 0,
                     "storage_full keeps what was accepted (the daemon's count, exactly); "
                     "from what was sent it may lose only what came after the session's end "
                     "(refused with session_closed) and what the kernel held unread"),
    DAEMON_KILL: Bound("observed", round(DAEMON_KILL_SECONDS * FPS), 1, 0,
                       round(OPUS_KILL_SECONDS * 44100),
                       "README: the MP4 up to its last fragment (about the last second), the "
                       "WAV every byte received; H.264 the frame held, Opus its last 0.2 s"),
}  # fmt: skip

# Memory: per daemon lifetime with MEMORY_SPAN s of samples after its warm-up, the median RSS
# of the last quarter of those samples against that of the first. The warm-up is what a
# lifetime takes to reach the high-water mark of its sessions' buffers and caches, which grows
# with the sessions live at once: measured, about a minute at 20 clients (16 MB, then flat) and
# two at 40 (71 -> 136 MB by 110 s, 143 at 190 s, 139 from 270 s to the end of a 370 s
# lifetime): MEMORY_WARMUP_PER_CLIENT s a client, at least MEMORY_WARMUP_MIN. What moves it
# legitimately after that: up to 0.3 MB a live session (README) for 40 clients, 12 MB, and the
# index's SQLite caches taking in its file (4.2 MB in these runs). More is a leak.
MEMORY_WARMUP_PER_CLIENT = 4.0
MEMORY_WARMUP_MIN = 30.0
MEMORY_SPAN = 15.0
MEMORY_GROWTH_MB = 16.0
RSS_INTERVAL = 2.0

# The faults' rates (per minute of the fault window) and lengths.
FAULT_RATES = {ENCODER_KILL: 2.0, ENCODER_STOP: 1.0, DISK_FILL: 1.0, DAEMON_KILL: 1.0}
# A stop as long as the daemon's --encoder-timeout (10 s by default) gets the encoder taken for
# stuck and replaced; a shorter one is only a stall the encoder recovers from.
STOP_SECONDS = (4.0, 16.0)
FILL_SECONDS = (3.0, 6.0)
RESTART_DELAY = (0.5, 2.0)
# No fault in the first FAULT_START s, nor in the last FAULT_QUIET s (sessions end cleanly and
# recovery of the last kill is done before the end).
FAULT_START = 5.0
FAULT_QUIET = 15.0
# A fault that comes late (the one before lasted) still waits this long after it.
FAULT_GAP = 3.0

# ERROR codes a session may get, and the faults that explain them (anything else is a
# violation).
EXPLAINED_BY = {
    "storage_full": {DISK_FILL},
    "insufficient_storage": {DISK_FILL},
    # Chunks in flight when the disk watch ended the session.
    "session_closed": {DISK_FILL},
    # A dead or stuck encoder replaced (the recording goes on), or given up on.
    "encoder_replaced": {ENCODER_KILL, ENCODER_STOP},
    "encoder_failed": {ENCODER_KILL, ENCODER_STOP},
    # The daemon that had the session was killed; or the disk watch finished the session while
    # its client was away (cut, coming back).
    "resume_failed": {DAEMON_KILL, DISK_FILL},
}
ALWAYS_EXPLAINED = {"timestamp_discontinuity"}  # an unpaced H.264 sender runs ahead of the clock

END_GRACE = 240.0  # the run's end: everything after --duration, at most
SETTLE_TIMEOUT = 90.0  # every session settled after the clients stopped
STOP_TIMEOUT = 60.0  # SIGTERM to exit

Clock = Callable[[], float]
ROOT = Path(__file__).resolve().parent.parent
TWISTD = Path(sys.executable).parent / "twistd"
MB = 1 << 20


def progress(message: str) -> None:
    run.progress(f"soak: {message}")


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Settings:
    duration: float
    clients: int
    seed: int = 1
    keep: Path | None = None
    faults: frozenset[str] = frozenset(FAULTS)
    tmpfs: bool | None = None  # None: a tmpfs when root
    disk_mb: int = 0  # 0: 128 + 8 per client
    floor_mb: int = 64
    resume_grace: float = 10.0
    daemon_args: tuple[str, ...] = ()

    @property
    def disk_bytes(self) -> int:
        return (self.disk_mb or 128 + 8 * self.clients) * MB


# --------------------------------------------------------------------------------------------
# The disk


class Disk:
    """The media tree's file system: a tmpfs of its own (as root), or a plain directory."""

    def __init__(self, workdir: Path, settings: Settings) -> None:
        self.mount: Path | None = None
        want = settings.tmpfs if settings.tmpfs is not None else os.geteuid() == 0
        self.why_plain = ""
        if want:
            point = workdir / "disk"
            point.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={settings.disk_bytes}", "tmpfs",
                 os.fspath(point)],
                capture_output=True, text=True, check=False, timeout=30,
            )  # fmt: skip
            if done.returncode == 0:
                self.mount = point
            else:
                self.why_plain = f"cannot mount a tmpfs: {done.stderr.strip()}"
        elif settings.tmpfs is None:
            self.why_plain = "not root: no tmpfs to fill"
        else:
            self.why_plain = "as asked"
        self.media = (self.mount or workdir) / "media"
        self.filler = (self.mount or workdir) / "filler"

    def free(self) -> int:
        st = os.statvfs(self.media if self.media.exists() else self.media.parent)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int) -> int:
        """Take all but ``leave`` bytes of free space with one file; the bytes it took."""
        size = self.free() - leave
        fd = os.open(self.filler, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            while size > 0:
                try:
                    os.posix_fallocate(fd, 0, size)
                    break
                except OSError:
                    size -= 1 << 20  # the daemon wrote meanwhile: a little less
        finally:
            os.close(fd)
        return max(0, size)

    def free_filler(self) -> None:
        self.filler.unlink(missing_ok=True)

    def copy_out(self, dest: Path) -> None:
        if self.mount is not None and self.media.exists():
            shutil.copytree(self.media, dest, symlinks=True, dirs_exist_ok=True)

    def unmount(self) -> None:
        if self.mount is None:
            return
        done = subprocess.run(["umount", os.fspath(self.mount)], capture_output=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", os.fspath(self.mount)], check=False)
        self.mount = None


# --------------------------------------------------------------------------------------------
# The daemon


@dataclass
class Lifetime:
    """One run of the daemon process, from its start to its end."""

    generation: int
    pid: int
    log: Path
    t_start: float
    t_listening: float | None = None
    t_end: float | None = None
    ended: str = ""  # "killed", "killed with its encoders", "exit N", "signal X"
    rss: list[tuple[float, int, int]] = field(default_factory=list)  # (t, bytes, live sessions)
    cpu_s: float = 0.0  # the daemon's own CPU, at the last sample
    children_cpu_s: float = 0.0  # of the children it reaped (encoders, faststart copies)


_ENDED = re.compile(
    r"session '(?P<id>[^']*)' from (?P<peer>\S+) ended \((?P<reason>\w+), (?P<result>\w+)\) "
    r"after [0-9.]+s: (?P<frames>\d+) frames, (?P<samples>\d+) samples, (?P<bytes>\d+) bytes"
)


class Daemon:
    """``twistd -n livestream`` as an operator runs it, in a session of its own (so that a kill
    of its process group takes its encoders and nothing of ours)."""

    def __init__(
        self, workdir: Path, media: Path, port: int, args: Sequence[str], clock: Clock
    ) -> None:
        self.clock = clock
        self.workdir = workdir
        self.media = media
        self.port = port
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.lifetimes: list[Lifetime] = []
        self.expected_exit = False
        self._ended: dict[tuple[str, str], int] = {}
        self._read: dict[Path, int] = {}

    @property
    def generation(self) -> int:
        return len(self.lifetimes)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def up(self) -> bool:
        life = self.lifetimes[-1] if self.lifetimes else None
        return (
            self.proc is not None
            and self.proc.poll() is None
            and life is not None
            and life.t_listening is not None
        )

    def start(self) -> None:
        log = self.workdir / f"daemon-{self.generation + 1}.log"
        argv = [
            os.fspath(TWISTD), "-n", "--pidfile=", "livestream",
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--media", os.fspath(self.media), *self.args,
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (os.fspath(ROOT), os.environ.get("PYTHONPATH")) if p
        ))  # fmt: skip
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.expected_exit = False
        self.lifetimes.append(Lifetime(self.generation + 1, self.proc.pid, log, self.clock()))

    async def listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited at start: {self.tail()}")
            try:
                await load.http_request(self.port, "/healthz", timeout=2)
            except (OSError, TimeoutError, load.WebSocketError):
                await asyncio.sleep(0.1)
                continue
            self.lifetimes[-1].t_listening = self.clock()
            return
        raise RuntimeError(f"the daemon did not answer within {timeout:g} s: {self.tail()}")

    def kill(self, with_encoders: bool) -> None:
        assert self.proc is not None
        self.expected_exit = True
        try:
            if with_encoders:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def wait(self, timeout: float) -> int | None:
        """Wait for the process to end (reaping it); its status, None if it still runs."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.proc.poll()

    def ended(self, how: str) -> None:
        life = self.lifetimes[-1]
        if life.t_end is None:
            life.t_end = self.clock()
            life.ended = how

    def encoders(self) -> list[tuple[int, str]]:
        """(pid, recording name) of every live video encoder: ffmpeg reading its stdin into
        ``temp/<name>.video.fmp4`` (or, replacing one that died, a piece of its own,
        ``temp/<name>+<ms>.video.fmp4``)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        found = []
        for kid in run.children(self.proc.pid):
            try:
                args = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")
                state = Path(f"/proc/{kid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state in ("Z", "X"):
                continue  # dead, not yet reaped
            out = os.fsdecode(args[-2]) if len(args) >= 2 else ""
            if b"pipe:0" in args and out.endswith(VIDEO_STREAM):
                found.append((kid, recording_of(Path(out).name[: -len(VIDEO_STREAM)])))
        return sorted(found)

    def session_ends(self) -> dict[tuple[str, str], int]:
        """The media bytes the daemon logged it accepted, at each session's end, by (client id,
        peer)."""
        for life in self.lifetimes:
            try:
                with open(life.log, "rb") as f:
                    f.seek(self._read.get(life.log, 0))
                    data = f.read()
            except OSError:
                continue
            cut = data.rfind(b"\n") + 1
            self._read[life.log] = self._read.get(life.log, 0) + cut
            for line in data[:cut].decode("utf-8", "replace").splitlines():
                m = _ENDED.search(line)
                if m:
                    key = (m["id"], m["peer"])
                    self._ended[key] = int(m["bytes"])
        return self._ended

    def tail(self, lines: int = 8) -> str:
        if not self.lifetimes:
            return ""
        try:
            text = self.lifetimes[-1].log.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-lines:])


def recording_of(stem: str) -> str:
    """The recording a file of ``temp/`` belongs to: an encoder that replaced a dead one
    writes a piece named ``<name>+<ms>`` (README, Where files go); names have no ``+``."""
    return stem.split("+", 1)[0]


def rss_bytes(pid: int) -> int:
    return run.status_bytes(pid, "VmRSS")


# --------------------------------------------------------------------------------------------
# Faults


@dataclass
class FaultEvent:
    kind: str
    t: float  # when it struck, seconds since the run's start
    t_end: float  # when it was undone (stop: SIGCONT; fill: freed; kill: listening again)
    generation: int  # the daemon lifetime it hit
    target: str | None = None  # an encoder's recording
    pid: int | None = None  # the encoder's (or the daemon's) pid
    detail: dict[str, object] = field(default_factory=dict)
    observed: dict[str, tuple[int, int]] = field(default_factory=dict)  # daemon_kill
    skipped: str | None = None


def fault_schedule(
    rng: random.Random, kinds: Iterable[str], duration: float
) -> list[tuple[float, str]]:
    """When each fault strikes: FAULT_RATES per minute of the window between FAULT_START and
    FAULT_QUIET before the end, each kind at least once, at uniform random times."""
    start, end = FAULT_START, max(FAULT_START + 1.0, duration - FAULT_QUIET)
    window = end - start
    times = []
    for kind in sorted(kinds):
        count = max(1, round(FAULT_RATES[kind] * window / 60))
        times += [(rng.uniform(start, end), kind) for _ in range(count)]
    return sorted(times)


# --------------------------------------------------------------------------------------------
# What a recording holds (in a worker process)


@cache
def _tone() -> bytes:
    return load.pcm_tone(CHUNK_SAMPLES)


@dataclass(frozen=True)
class Examined:
    frames: int  # decoded; 0 without a file
    video_file: bool
    samples: int  # the WAV's, at 44.1 kHz
    audio_file: bool
    wav_problem: str | None  # a wrong header, or bytes that are not the start of those sent


def examine(video: str, audio: str, pcm_chunks: int | None) -> Examined:
    """Decode every frame of ``video``; read ``audio``'s header and, for PCM (``pcm_chunks``
    sent), check that its bytes are the first ones sent: nothing missing in the middle,
    doubled or out of order."""
    video_path, audio_path = Path(video), Path(audio)
    frames = load.decoded_frames(video_path) if video_path.exists() else 0
    samples, problem = 0, None
    if audio_path.exists():
        raw = audio_path.read_bytes()
        if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE" or raw[36:40] != b"data":
            problem = "not a PCM WAV with a 44-byte header"
        else:
            riff = int.from_bytes(raw[4:8], "little")
            size = int.from_bytes(raw[40:44], "little")
            data = raw[44:]
            samples = len(data) // BLOCK_BYTES
            if riff != len(raw) - 8 or size != len(data):
                problem = f"wrong sizes: RIFF {riff}, data {size}, file {len(raw)}"
            elif pcm_chunks is not None:
                sent = soakclient.pcm_stream(_tone(), pcm_chunks)
                if data != sent[: len(data)]:
                    at = next(i for i, (a, b) in enumerate(zip(data, sent, strict=False)) if a != b)
                    problem = f"bytes differ from those sent at sample {at // BLOCK_BYTES}"
                elif len(data) > len(sent):
                    problem = f"{(len(data) - len(sent)) // BLOCK_BYTES} samples more than sent"
    return Examined(frames, video_path.exists(), samples, audio_path.exists(), problem)


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class Violation:
    what: str  # a short kind: "lost frames", "temp not empty", ...
    detail: str
    session: str | None = None
    fault: str | None = None  # the fault whose bound was passed, if any


@dataclass
class Judged:
    """One session, with what its recordings hold and the faults that hit it."""

    record: SessionRecord
    faults: list[str]
    klass: str
    examined: Examined | None
    frames_kept: int
    samples_sent: int  # at 44.1 kHz (Opus: what its packets decode to)
    samples_kept: int
    ref_frames: int  # the bound's reference (sent, accepted, observed) before its allowance
    ref_samples: int
    min_frames: int
    min_samples: int
    violations: list[Violation]


class Soak:
    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.rng = random.Random(settings.seed)
        self.t0 = time.monotonic()
        self.cpu0 = time.process_time()
        self.disk = Disk(workdir, settings)
        kinds = set(settings.faults)
        if self.disk.mount is None:
            kinds.discard(DISK_FILL)
        self.kinds = frozenset(kinds)
        floor = settings.floor_mb if self.disk.mount is not None else 0
        self.floor = floor * MB
        self.port = run.free_port()
        args = [
            "--fps", str(FPS), "--min-free-mb", str(floor),
            "--resume-grace", f"{settings.resume_grace:g}",
            "--max-sessions", str(4 * settings.clients + 16), *settings.daemon_args,
        ]  # fmt: skip
        self.daemon = Daemon(workdir, self.disk.media, self.port, args, self.now)
        self.tmpfs = self.disk.mount is not None
        self.judging = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.faults_done = asyncio.Event()
        self.events: list[FaultEvent] = []
        self.sessions: list[SessionRecord] = []
        self.pending: list[SessionRecord] = []
        self.judged: list[Judged] = []
        self.deleted: set[str] = set()
        self.kept: set[str] = set()  # names left on disk for their violations
        self.violations: list[Violation] = []
        self.fault_active: str | None = None
        self.live_count = 0  # the daemon's live sessions, as last seen
        self.clips: Clips | None = None
        self.pool: ProcessPoolExecutor | None = None
        self.final: dict[str, object] = {}
        # What the kernel can hold between a client's send and the daemon's read: the client's
        # send buffer (the kernel doubles what is asked), the daemon's receive buffer (likewise),
        # and one message on its way through Autobahn.
        self.in_flight = 2 * soakclient.SEND_BUFFER + 2 * RECEIVE_BUFFER + 64 * 1024

    def now(self) -> float:
        return time.monotonic() - self.t0

    def violation(self, what: str, detail: str, **kw: str | None) -> None:
        v = Violation(what, detail, **kw)
        self.violations.append(v)
        progress(f"VIOLATION {what}: {detail}" + (f" [{v.session}]" if v.session else ""))

    def log(self, name: str, doc: dict[str, object]) -> None:
        with open(self.workdir / name, "a") as f:
            f.write(json.dumps(doc, default=str) + "\n")

    # -- the whole run

    async def run(self) -> Report:
        s = self.settings
        if threading.current_thread() is threading.main_thread():
            run.cancel_on_signals()
        if self.disk.why_plain:
            progress(f"plain directory for the media tree ({self.disk.why_plain}): no disk fill")
        progress(f"making the clips ({soakclient.SIZE}: 30 JPEGs, 30 H.264 frames, 4 s of Opus)")
        ffmpeg = load.find_ffmpeg()
        self.clips = Clips.make(ffmpeg, encoded.Encoder(ffmpeg, self.workdir / "clips"))
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self.daemon.start()
        try:
            await self.daemon.listening()
            progress(
                f"daemon pid {self.daemon.pid} on port {self.port}, media {self.disk.media}"
                f" ({'tmpfs' if self.disk.mount else 'plain'}), faults: "
                f"{', '.join(sorted(self.kinds))}; {s.clients} clients for {s.duration:g} s"
            )
            async with asyncio.timeout(s.duration + END_GRACE):
                await self._soak()
        finally:
            await self._cleanup()
        return self.report()

    async def _soak(self) -> None:
        s = self.settings
        assert self.clips is not None
        env = soakclient.ClientEnv(
            port=self.port, clock=self.now, generation=lambda: self.daemon.generation,
            stopping=self.stopping, resume_grace=s.resume_grace, in_flight=self.in_flight,
        )  # fmt: skip
        clients = [
            asyncio.create_task(
                soakclient.client_loop(
                    f"soak-c{i:02d}",
                    random.Random(f"{s.seed}-{i}"),
                    self.clips,
                    env,
                    self._session_ended,
                    start_delay=i * 0.25,
                )
            )  # fmt: skip
            for i in range(s.clients)
        ]
        watchers = [
            asyncio.create_task(self._watch()),
            asyncio.create_task(self._faults()),
            asyncio.create_task(self._verify_loop()),
        ]
        try:
            await asyncio.sleep(max(0.0, s.duration - self.now()))
            progress(f"{self.now():.0f} s: the clients CLOSE and stop")
            self.stopping.set()
            await asyncio.wait_for(self.faults_done.wait(), STOP_SECONDS[1] + 60)
            done, late = await asyncio.wait(clients, timeout=soakclient.CLOSED_TIMEOUT + 30)
            for task in late:
                task.cancel()
                self.violation("client stuck", "a client did not end within its bound")
            for task in done:
                if task.exception() is not None:
                    self.violation("harness", f"a client failed: {task.exception()!r}")
            await self._settle_all()
            await self._final_checks()
        finally:
            for task in (*clients, *watchers):
                task.cancel()
            await asyncio.gather(*clients, *watchers, return_exceptions=True)

    def _session_ended(self, record: SessionRecord) -> None:
        self.sessions.append(record)
        self.log("sessions.jsonl", asdict(record))
        if record.name is not None:
            self.pending.append(record)

    # -- watching the daemon: RSS, an exit of its own, free space

    async def _watch(self) -> None:
        low_reported = False
        while True:
            d = self.daemon
            if d.proc is not None and d.proc.poll() is not None and not d.expected_exit:
                status = d.proc.returncode
                d.ended(f"exit {status}" if status >= 0 else f"signal {-status}")
                self.violation("daemon died", f"pid {d.pid} ended by itself ({status}): "
                                              f"{d.tail()}")  # fmt: skip
                self._start_daemon()
                try:
                    await self.daemon.listening()
                except RuntimeError as e:
                    self.violation("daemon restart", str(e))
                    return
            elif d.up:
                self._sample()
            if self.floor and self.fault_active != DISK_FILL and not low_reported:
                if self.disk.free() < self.floor:
                    low_reported = True
                    free = self.disk.free() >> 20
                    self.violation("disk too small", f"under the floor without a fill: {free} "
                                   "MiB free; give --disk-mb")  # fmt: skip
            await asyncio.sleep(RSS_INTERVAL)

    def _sample(self) -> None:
        """The daemon's RSS and CPU now."""
        life = self.daemon.lifetimes[-1]
        rss = rss_bytes(life.pid)
        stat = run.read_stat(life.pid)
        if rss and stat is not None:
            life.rss.append((self.now(), rss, self.live_count))
            life.cpu_s, life.children_cpu_s = stat.cpu, stat.reaped

    def _start_daemon(self) -> None:
        self.daemon.start()

    # -- the faults

    async def _faults(self) -> None:
        try:
            ready = 0.0
            for at, kind in fault_schedule(self.rng, self.kinds, self.settings.duration):
                await asyncio.sleep(max(0.0, at - self.now(), ready - self.now()))
                if self.now() > self.settings.duration - FAULT_QUIET / 2:
                    break
                self.fault_active = kind
                try:
                    event = await getattr(self, f"_{kind}")()
                finally:
                    self.fault_active = None
                    ready = self.now() + FAULT_GAP
                self.log("faults.jsonl", asdict(event))
                why = f" (skipped: {event.skipped})" if event.skipped else ""
                progress(f"{event.t:6.1f} s {kind} {event.target or ''}{why}")
        finally:
            self.faults_done.set()

    def _strike(self, kind: str) -> FaultEvent:
        """A fault's event, known from this moment (a session judged while the fault lasts
        counts it, until ``t_end``)."""
        event = FaultEvent(kind, self.now(), math.inf, self.daemon.generation)
        self.events.append(event)
        return event

    async def _an_encoder(self) -> tuple[int, str] | None:
        """A live video encoder, picked at random; waits up to 5 s for one."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            found = self.daemon.encoders()
            if found:
                return self.rng.choice(found)
            await asyncio.sleep(0.2)
        return None

    async def _encoder_kill(self) -> FaultEvent:
        picked = await self._an_encoder()
        event = self._strike(ENCODER_KILL)
        if picked is None:
            event.skipped = "no live encoder"
            return event
        event.pid, event.target = picked
        event.t_end = event.t
        try:
            os.kill(picked[0], signal.SIGKILL)
        except ProcessLookupError:
            event.skipped = "the encoder ended first"
        return event

    async def _encoder_stop(self) -> FaultEvent:
        picked = await self._an_encoder()
        event = self._strike(ENCODER_STOP)
        if picked is None:
            event.skipped = "no live encoder"
            event.t_end = event.t
            return event
        event.pid, event.target = picked
        seconds = self.rng.uniform(*STOP_SECONDS)
        event.detail["seconds"] = round(seconds, 2)
        try:
            os.kill(picked[0], signal.SIGSTOP)
        except ProcessLookupError:
            event.skipped = "the encoder ended first"
            event.t_end = event.t
            return event
        try:
            await asyncio.sleep(seconds)
        finally:
            try:
                os.kill(picked[0], signal.SIGCONT)
            except ProcessLookupError:
                event.detail["gone_before_sigcont"] = True
            event.t_end = self.now()
        return event

    async def _disk_fill(self) -> FaultEvent:
        seconds = self.rng.uniform(*FILL_SECONDS)
        before = self.disk.free()
        event = self._strike(DISK_FILL)
        taken = await asyncio.to_thread(self.disk.fill, self.floor // 4)
        event.detail.update(
            free_before_mib=before >> 20,
            taken_mib=taken >> 20,
            free_mib=self.disk.free() >> 20,
            seconds=round(seconds, 2),
        )
        try:
            await asyncio.sleep(seconds)
        finally:
            self.disk.free_filler()
            event.t_end = self.now()
        return event

    async def _daemon_kill(self) -> FaultEvent:
        d = self.daemon
        observed: dict[str, tuple[int, int]] = {}
        failed = None
        try:
            doc = await load.http_get_json(self.port, "/api/sessions", timeout=2.0)
            sessions = doc.get("sessions", []) if isinstance(doc, dict) else []
            observed = {str(x["recording"]): (int(x["frames"]), int(x["bytes"])) for x in sessions}
        except (OSError, TimeoutError, load.WebSocketError, ValueError) as e:
            failed = repr(e)
        with_encoders = self.rng.random() < 0.5
        event = self._strike(DAEMON_KILL)
        event.pid, event.observed = d.pid, observed
        event.detail["with_encoders"] = with_encoders
        if failed:
            event.detail["observe_failed"] = failed
        d.kill(with_encoders)
        await d.wait(10.0)
        d.ended("killed with its encoders" if with_encoders else "killed")
        await asyncio.sleep(self.rng.uniform(*RESTART_DELAY))
        self._start_daemon()
        try:
            await d.listening()
        except RuntimeError as e:
            self.violation("daemon restart", str(e))
        event.t_end = self.now()
        return event

    # -- settling, judging, deleting

    async def _verify_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self._verify_settled()

    async def _verify_settled(self) -> int:
        """Judge every ended session whose files are settled; the number judged."""
        async with self.judging:
            return await self._verify_settled_now()

    async def _verify_settled_now(self) -> int:
        if not self.pending or not self.daemon.up:
            return 0
        try:
            doc = await load.http_get_json(self.port, "/api/sessions", timeout=5.0)
        except (OSError, TimeoutError, load.WebSocketError, ValueError):
            return 0
        sessions = doc.get("sessions", []) if isinstance(doc, dict) else []
        live = {str(x["recording"]) for x in sessions}
        self.live_count = len(live)
        temp = self._temp_names()
        now = self.now()
        ready = [
            r for r in self.pending
            if r.name not in live and r.name not in temp and (r.t_end or now) + 1.0 < now
        ]  # fmt: skip
        for record in ready:
            self.pending.remove(record)
            judged = await self._judge(record)
            self.judged.append(judged)
            if judged.violations:
                assert record.name is not None
                self.kept.add(record.name)
                for v in judged.violations:
                    self.violations.append(v)
                    progress(f"VIOLATION {v.what}: {v.detail} [{v.session}]")
            else:
                await self._delete(record)
        return len(ready)

    def _temp_names(self) -> set[str]:
        names: set[str] = set()
        try:
            entries = os.listdir(self.disk.media / "temp")
        except FileNotFoundError:
            return names
        for entry in entries:
            for suffix in TEMP_SUFFIXES:
                if entry.endswith(suffix):
                    names.add(recording_of(entry[: -len(suffix)]))
        return names

    async def _delete(self, record: SessionRecord) -> None:
        """Delete the session's recordings through the API (so the index forgets them too);
        a 404 for a file that exists is retried for 20 s (the index may be a moment behind,
        the daemon restarting), then is a violation: a recording that is not listed. A file
        gone meanwhile was deleted by a request whose answer a daemon kill cut off."""
        assert record.name is not None
        for kind, suffix in ((VIDEO, ".mp4"), (AUDIO, ".wav")):
            path = self.disk.media / kind / f"{record.name}{suffix}"
            if not path.exists():
                continue
            deadline = time.monotonic() + 20.0
            while True:
                try:
                    answer = await load.http_request(
                        self.port, f"/recordings/{kind}/{path.name}", method="DELETE",
                        timeout=10.0,
                    )  # fmt: skip
                    status = answer.status
                except (OSError, TimeoutError, load.WebSocketError):
                    status = 0
                if status == 204 or time.monotonic() > deadline:
                    break
                if not path.exists():
                    # Deleted by a request whose answer went with a killed daemon.
                    status = 204
                    break
                await asyncio.sleep(0.5)
            if status == 204:
                self.deleted.add(path.name)
            else:
                self.kept.add(record.name)
                self.violation("not deletable", f"DELETE {path.name}: {status or 'no answer'}",
                               session=record.name)  # fmt: skip

    def faults_of(self, r: SessionRecord) -> list[str]:
        """The faults that hit a session while it was live, in order."""
        hit: list[str] = []
        for e in self.events:
            if e.skipped:
                continue
            if e.kind in (ENCODER_KILL, ENCODER_STOP):
                if e.target == r.name:
                    hit.append(e.kind)
            elif e.kind == DAEMON_KILL:
                live = r.generation == e.generation and (r.t_end is None or r.t_end >= e.t)
                if r.name in e.observed or live:
                    hit.append(DAEMON_KILL)
            elif e.kind == DISK_FILL and r.generation == e.generation:
                start = r.t_connected if r.t_connected is not None else r.t_start
                if start <= e.t_end and (r.t_end is None or r.t_end >= e.t):
                    hit.append(DISK_FILL)
        return hit

    async def _judge(self, r: SessionRecord) -> Judged:
        assert r.name is not None and self.clips is not None and self.pool is not None
        media = self.disk.media
        pcm = r.audio_sent if r.plan.audio and r.plan.codec == JPEG else None
        examined = await asyncio.get_running_loop().run_in_executor(
            self.pool, examine, os.fspath(media / "video" / f"{r.name}.mp4"),
            os.fspath(media / "audio" / f"{r.name}.wav"), pcm,
        )  # fmt: skip
        return self.judge(r, examined)

    def judge(self, r: SessionRecord, x: Examined) -> Judged:
        """The session against BOUNDS: its minimum frames and samples, from the reference of the
        worst fault that ended it, less the encoder faults' allowances."""
        assert self.clips is not None and r.name is not None
        faults = self.faults_of(r)
        if r.cuts:
            faults.append(RESUME_CUT)
        if r.end == ABANDONED:
            faults.append(ABANDON)
        klass = max((f for f in faults), key=CLASSES.index, default=NONE)
        opus = r.plan.codec == H264 and r.plan.audio
        pre_skip = self.clips.pre_skip

        def wav_samples(chunks: int) -> int:
            if opus:
                return soakclient.opus_wav_samples(chunks, pre_skip)
            return chunks * CHUNK_SAMPLES if r.plan.audio else 0

        violations: list[Violation] = []

        def bad(what: str, detail: str, fault: str | None = None) -> None:
            violations.append(Violation(what, detail, r.name, fault))

        codec_frames = "jpeg_frames" if r.plan.codec == JPEG else "h264_frames"
        audio_samples = "opus_samples" if opus else "pcm_samples"
        sent_frames, sent_audio = r.frames_sent, r.audio_sent
        ended_by = None
        if DAEMON_KILL in faults:
            ended_by = DAEMON_KILL
            frames, audio = self._observed(r)
        elif r.end == STORAGE_FULL or (DISK_FILL in faults and r.end != CLOSED):
            # Also a session abandoned or cut while the disk watch ended it: what came after
            # the end was refused, unseen.
            ended_by = DISK_FILL
            frames, audio = self._accepted(r, bad)
        elif r.end in (CLOSED, ABANDONED):
            frames, audio = sent_frames, sent_audio
        else:
            frames, audio = r.safe[VIDEO], r.safe[AUDIO]
            bad("unexpected end", f"{r.end} with no fault to explain it ({r.plan.label})")
        bound = BOUNDS[ended_by] if ended_by else None
        ref_frames, ref_samples = frames, wav_samples(audio)
        min_frames = frames - (getattr(bound, codec_frames) if bound else 0)
        if ended_by == DAEMON_KILL and r.plan.codec == JPEG and not r.plan.paced:
            min_frames -= PIPE_BYTES // min(len(jpeg) for jpeg in self.clips.jpegs)
        min_samples = wav_samples(audio) - (getattr(bound, audio_samples) if bound else 0)
        if opus:
            min_samples -= OPUS_SLACK
        encoder_faults = sum(1 for f in faults if f in (ENCODER_KILL, ENCODER_STOP))
        min_frames -= encoder_faults * getattr(BOUNDS[ENCODER_KILL], codec_frames)
        min_frames, min_samples = max(0, min_frames), max(0, min_samples)
        samples_sent = wav_samples(sent_audio)
        if x.frames < min_frames:
            # The daemon loses the rest of the video after an encoder dies until the encoder
            # work lands: a loss is the encoder fault's when one hit.
            fault = next((f for f in faults if f in (ENCODER_KILL, ENCODER_STOP)), ended_by)
            bad("lost frames", f"kept {x.frames} of {sent_frames} sent, at least {min_frames} "
                f"by the bound of {'+'.join(faults) or NONE} ({r.plan.label}, end {r.end})",
                fault)  # fmt: skip
        if x.frames > sent_frames:
            bad("frames twice", f"{x.frames} frames decoded, {sent_frames} sent")
        if x.samples < min_samples:
            bad("lost samples", f"kept {x.samples} of {samples_sent} sent, at least "
                f"{min_samples} by the bound of {'+'.join(faults) or NONE} ({r.plan.label}, "
                f"end {r.end})", ended_by)  # fmt: skip
        if x.samples > samples_sent + (OPUS_SLACK if opus else 0):
            bad("samples twice", f"{x.samples} samples in the WAV, {samples_sent} sent")
        if x.wav_problem:
            bad("wav", x.wav_problem)
        if r.recordings is not None:
            for kind, have, suffix in ((VIDEO, x.video_file, ".mp4"),
                                       (AUDIO, x.audio_file, ".wav")):  # fmt: skip
                said = r.recordings.get(kind)
                if said not in (None, f"{r.name}{suffix}"):
                    bad("closed names", f"CLOSED names {said} for recording {r.name}")
                elif (said is not None) != have and DAEMON_KILL not in faults:
                    bad("closed names", f"CLOSED says {kind}={said}, the file "
                        f"{'is there' if have else 'is missing'}")  # fmt: skip
        for problem in r.problems:
            bad("client", problem)
        for t, code in r.errors:
            if code in ALWAYS_EXPLAINED or EXPLAINED_BY.get(code, set()) & set(faults):
                continue
            bad("error", f"ERROR {code} at {t:.1f} s, no fault to explain it ({r.plan.label})")
        return Judged(
            r, faults, klass, x, x.frames, samples_sent, x.samples, ref_frames, ref_samples,
            min_frames, min_samples, violations,
        )  # fmt: skip

    def _observed(self, r: SessionRecord) -> tuple[int, int]:
        """Frames and audio chunks the daemon had accepted just before the kill that ended the
        session (``GET /api/sessions``: its bytes, walked over what was sent in order); where
        the daemon was not asked, what the client knows it read."""
        frames, audio = r.safe[VIDEO], r.safe[AUDIO]
        for e in self.events:
            if e.kind == DAEMON_KILL and r.name in e.observed:
                seen = self._within(r, e.observed[r.name][1])
                return max(frames, seen[0]), max(audio, seen[1])
        return frames, audio

    def _within(self, r: SessionRecord, total: int) -> tuple[int, int]:
        """The frames and audio chunks whose media bytes make ``total``: the daemon counts a
        session's bytes as it accepts each chunk, in the order sent (a chunk re-sent after a
        resume is dropped, not counted), and this is the one count of it that a dead encoder
        does not stop (its frame count does)."""
        assert self.clips is not None
        frames = audio = 0
        for i in range(r.frames_sent):
            for chunk in soakclient.frame_chunks(r.plan, self.clips, i):
                if chunk.size > total:
                    return frames, audio
                total -= chunk.size
                if chunk.kind == VIDEO:
                    frames = i + 1
                else:
                    audio = chunk.seq + 1
        return frames, audio

    def _accepted(self, r: SessionRecord, bad: Callable[..., None]) -> tuple[int, int]:
        """What a session ended by the full disk had accepted, by the media bytes in the
        daemon's log line of its end; and a check of that against the client's view: every
        chunk but those refused after the end (``session_closed``) and those in flight."""
        ends = self.daemon.session_ends()
        key = (r.plan.client_id, r.peer or "")
        # Frames the daemon surely read (acknowledged, or sent on the last connection ahead of
        # what the kernel could hold), less any it refused as coming after the end.
        surely = max(0, r.safe[VIDEO] - r.refused)
        if key not in ends:
            bad("no end line", f"no line of the daemon's log says how {r.name} ended")
            return min(r.safe[VIDEO], surely), r.safe[AUDIO]
        frames, audio = self._within(r, ends[key])
        if frames < surely:
            bad("refused early", f"the daemon accepted {frames} frames; it surely read "
                f"{r.safe[VIDEO]} of the {r.frames_sent} sent and refused {r.refused} "
                "messages", DISK_FILL)  # fmt: skip
        return frames, audio

    async def _settle_all(self) -> None:
        """After the clients stopped: until every session is judged (abandoned resumable ones
        wait out their grace), within SETTLE_TIMEOUT."""
        deadline = time.monotonic() + SETTLE_TIMEOUT + self.settings.resume_grace
        while self.pending and time.monotonic() < deadline:
            await self._verify_settled()
            if self.pending:
                await asyncio.sleep(1.0)
        for r in self.pending:
            self.violation("never settled", f"{r.name}: still live or in temp/ at the end",
                           session=r.name)  # fmt: skip

    async def _final_checks(self) -> None:
        """With the daemon up: no live session, temp/ empty, the API lists what was kept,
        each once. Then SIGTERM: exit 0, temp/ still empty; no recording of a name deleted
        or of no session; no process left."""
        try:
            doc = await load.http_get_json(self.port, "/api/sessions", timeout=5.0)
            live = doc.get("sessions", []) if isinstance(doc, dict) else []
            if live:
                self.violation("live at the end", f"{len(live)} sessions still live")
        except (OSError, TimeoutError, load.WebSocketError, ValueError) as e:
            self.violation("api", f"GET /api/sessions at the end: {e!r}")
        left = sorted(os.listdir(self.disk.media / "temp"))
        if left:
            self.violation("temp not empty", f"before the stop: {left[:5]}")
        listed = await self._listing()
        if listed is not None:
            counts = Counter(listed)
            twice = sorted(n for n, c in counts.items() if c > 1)
            if twice:
                self.violation("listed twice", ", ".join(twice[:5]))
            expected = {f for f in self._files() if f not in self.deleted}
            if set(counts) != expected:
                self.violation("listing", f"listed but not on disk: "
                               f"{sorted(set(counts) - expected)[:5]}; on disk but not listed: "
                               f"{sorted(expected - set(counts))[:5]}")  # fmt: skip
            self.final["listed"] = len(listed)
        d = self.daemon
        d.expected_exit = True
        assert d.proc is not None
        self._sample()
        d.proc.send_signal(signal.SIGTERM)
        status = await d.wait(STOP_TIMEOUT)
        d.ended(f"exit {status}" if status is not None else "did not stop")
        self.final["exit"] = status
        # twistd stopped by SIGTERM exits by it (for systemd): a clean stop either way.
        if status not in (0, -signal.SIGTERM):
            self.violation("stop", f"SIGTERM: {'still running' if status is None else status}")
        left = sorted(os.listdir(self.disk.media / "temp"))
        self.final["temp_after_stop"] = left
        if left:
            self.violation("temp not empty", f"after the stop: {left[:5]}")
        names = {r.name for r in self.sessions if r.name}
        for f in sorted(self._files()):
            stem = f.rsplit(".", 1)[0]
            if f in self.deleted:
                self.violation("recording twice", f"{f} is there again after it was deleted")
            elif stem not in names:
                self.violation("stray recording", f"{f} is no session's recording")
        self.final["processes_left"] = self._processes_left()

    def _files(self) -> set[str]:
        found = set()
        for kind in (VIDEO, AUDIO):
            try:
                found |= {n for n in os.listdir(self.disk.media / kind) if not n.startswith(".")}
            except FileNotFoundError:
                pass
        return found

    async def _listing(self) -> list[str] | None:
        """Every name ``GET /api/recordings`` lists for the soak's clients, page after page."""
        names: list[str] = []
        path = "/api/recordings?client_prefix=soak-c&limit=1000&order=oldest"
        cursor = None
        for _ in range(1000):
            url = path + (f"&cursor={cursor}" if cursor else "")
            try:
                doc = await load.http_get_json(self.port, url, timeout=30.0)
            except (OSError, TimeoutError, load.WebSocketError, ValueError) as e:
                self.violation("api", f"GET /api/recordings: {e!r}")
                return None
            assert isinstance(doc, dict)
            names += [str(e["name"]) for e in doc.get("recordings", [])]
            cursor = doc.get("next")
            if not cursor:
                return names
        return names

    def _processes_left(self) -> list[int]:
        """Processes still running with the media tree in their command line (encoders a
        killed daemon left); they are killed, and each is a violation."""
        media = os.fsencode(self.disk.media)
        left = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if media in cmdline and state not in ("Z", "X"):
                left.append(int(entry))
        for pid in left:
            self.violation("process left", f"pid {pid} still runs on the media tree")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left

    async def _cleanup(self) -> None:
        d = self.daemon
        if d.proc is not None and d.proc.poll() is None:
            d.expected_exit = True
            try:
                os.killpg(d.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await d.wait(10.0)
        self.disk.free_filler()
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        if self.settings.keep is not None:
            self.disk.copy_out(self.workdir / "media")
        self.disk.unmount()

    # -- the figures

    def memory(self) -> list[LifetimeFigures]:
        """Per lifetime: RSS early and late (medians of the first and last quarter of the
        samples after the warm-up), judged when long enough; a growth past MEMORY_GROWTH_MB is a
        violation."""
        out = []
        warmup = max(MEMORY_WARMUP_MIN, MEMORY_WARMUP_PER_CLIENT * self.settings.clients)
        for life in self.daemon.lifetimes:
            samples = [(t, rss) for t, rss, _ in life.rss if t >= life.t_start + warmup]
            figures = LifetimeFigures(
                life.generation, life.pid, life.ended or "running",
                round((life.t_end or self.now()) - life.t_start, 1),
                round(max((x for _, x, _ in life.rss), default=0) / MB, 1),
                round(life.cpu_s, 1), round(life.children_cpu_s, 1),
                sum(1 for r in self.sessions if r.generation == life.generation),
            )  # fmt: skip
            span = samples[-1][0] - samples[0][0] if len(samples) > 1 else 0.0
            if span >= MEMORY_SPAN:
                q = max(1, len(samples) // 4)
                early = statistics.median(x for _, x in samples[:q]) / MB
                late = statistics.median(x for _, x in samples[-q:]) / MB
                figures.early_mb, figures.late_mb = round(early, 1), round(late, 1)
                if late - early > MEMORY_GROWTH_MB:
                    self.violation("memory", f"lifetime {life.generation} (pid {life.pid}) "
                                   f"grew {late - early:.1f} MB: {early:.1f} -> {late:.1f} MB "
                                   f"(bound {MEMORY_GROWTH_MB:g})")  # fmt: skip
            out.append(figures)
        return out

    def rss_at(self) -> list[tuple[str, float | None]]:
        """RSS (MB) at the run's start, quarters and end: the sample nearest each moment."""
        every = [(t, rss) for life in self.daemon.lifetimes for t, rss, _ in life.rss]
        out: list[tuple[str, float | None]] = []
        end = max((t for t, _ in every), default=self.settings.duration)
        for label, at in (("start", 0.0), ("25%", end / 4), ("50%", end / 2),
                          ("75%", 3 * end / 4), ("end", end)):  # fmt: skip
            near = min(every, key=lambda x: abs(x[0] - at), default=None)
            out.append((label, round(near[1] / MB, 1) if near else None))
        return out

    def report(self) -> Report:
        lifetimes = self.memory()
        rows = {}
        for klass in CLASSES:
            js = [j for j in self.judged if j.klass == klass]
            rows[klass] = Row(
                sessions=len(js),
                frames_sent=sum(j.record.frames_sent for j in js),
                frames_kept=sum(j.frames_kept for j in js),
                frames_lost=sum(max(0, j.record.frames_sent - j.frames_kept) for j in js),
                max_frames_lost=max((j.record.frames_sent - j.frames_kept for j in js), default=0),
                max_frames_under_ref=max((j.ref_frames - j.frames_kept for j in js), default=0),
                max_samples_under_ref=max((j.ref_samples - j.samples_kept for j in js), default=0),
                samples_sent=sum(j.samples_sent for j in js),
                samples_kept=sum(j.samples_kept for j in js),
                samples_lost=sum(max(0, j.samples_sent - j.samples_kept) for j in js),
                violating=sum(1 for j in js if j.violations),
            )
        ends = Counter(r.end for r in self.sessions)
        return Report(
            settings={**asdict(self.settings), "faults": sorted(self.kinds),
                      "keep": str(self.settings.keep) if self.settings.keep else None},
            faults=sorted(self.kinds),
            media="tmpfs" if self.tmpfs else "plain directory",
            seconds=round(self.now(), 1),
            sessions=len(self.sessions),
            ends=dict(ends),
            judged=len(self.judged),
            rows=rows,
            injected=dict(Counter(e.kind for e in self.events if not e.skipped)),
            skipped=dict(Counter(e.kind for e in self.events if e.skipped)),
            client_cuts=sum(len(r.cuts) for r in self.sessions),
            resumes=sum(r.resumes for r in self.sessions),
            restarts=len(self.daemon.lifetimes) - 1,
            harness_cpu_s=round(time.process_time() - self.cpu0, 1),
            lifetimes=lifetimes,
            rss_mb=self.rss_at(),
            final=self.final,
            violations=list(self.violations),
        )  # fmt: skip


@dataclass
class Row:
    """The sessions of one fault class, summed."""

    sessions: int
    frames_sent: int
    frames_kept: int
    frames_lost: int
    max_frames_lost: int
    # The most one session kept under the reference of its bound (what was sent, accepted or
    # observed): what the bound's allowance is measured against.
    max_frames_under_ref: int
    max_samples_under_ref: int
    samples_sent: int
    samples_kept: int
    samples_lost: int
    violating: int


@dataclass
class LifetimeFigures:
    generation: int
    pid: int
    ended: str
    seconds: float
    peak_mb: float
    cpu_s: float
    children_cpu_s: float
    sessions: int  # opened on it
    early_mb: float | None = None
    late_mb: float | None = None


@dataclass
class Report:
    settings: dict[str, object]
    faults: list[str]  # those that ran
    media: str
    seconds: float
    sessions: int
    ends: dict[str, int]
    judged: int
    rows: dict[str, Row]
    injected: dict[str, int]
    skipped: dict[str, int]
    client_cuts: int
    resumes: int
    restarts: int
    harness_cpu_s: float
    lifetimes: list[LifetimeFigures]
    rss_mb: list[tuple[str, float | None]]
    final: dict[str, object]
    violations: list[Violation]

    def violations_of(self, faults: Iterable[str]) -> list[Violation]:
        """The violations of a bound of one of ``faults``."""
        chosen = set(faults)
        return [v for v in self.violations if v.fault in chosen]

    def violations_but(self, faults: Iterable[str]) -> list[Violation]:
        chosen = set(faults)
        return [v for v in self.violations if v.fault not in chosen]


# --------------------------------------------------------------------------------------------
# The table


def table(r: Report) -> str:
    """The figures of a report, as a person reads them."""
    s = r.settings
    lines = [
        f"soak: {s['duration']:g} s, {s['clients']} clients, seed {s['seed']}, media on a "
        f"{r.media}, faults: {', '.join(r.faults)}; ran {r.seconds} s",
        f"sessions {r.sessions} (judged {r.judged}), ended: "
        + ", ".join(f"{k} {v}" for k, v in sorted(r.ends.items())),
        "",
        "| fault | sessions | frames sent | kept | lost (most in one) | samples sent | kept "
        "| lost | most under the reference: frames, samples | may lose per fault: frames "
        "(H.264), samples (Opus) | violating |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for klass, row in r.rows.items():
        b = BOUNDS[klass]
        lines.append(
            f"| {klass} | {row.sessions} | {row.frames_sent} | {row.frames_kept} | "
            f"{row.frames_lost} ({row.max_frames_lost}) | {row.samples_sent} | "
            f"{row.samples_kept} | {row.samples_lost} | {row.max_frames_under_ref}, "
            f"{row.max_samples_under_ref} | of {b.reference}: {b.jpeg_frames} "
            f"({b.h264_frames}), {b.pcm_samples} ({b.opus_samples}) | {row.violating} |"
        )
    injected = ", ".join(f"{k} {v}" for k, v in sorted(r.injected.items())) or "none"
    skipped = f" (skipped: {r.skipped})" if r.skipped else ""
    lines += [
        "",
        f"faults injected: {injected}{skipped}; clients cut {r.client_cuts} connections "
        f"({r.resumes} resumed), abandoned {r.ends.get(ABANDONED, 0)} sessions",
        f"daemon restarts: {r.restarts}; at the end: {r.final}",
        "daemon RSS MB: " + ", ".join(f"{k} {v}" for k, v in r.rss_mb),
        f"CPU s: daemon {sum(x.cpu_s for x in r.lifetimes):.1f}, its children (reaped) "
        f"{sum(x.children_cpu_s for x in r.lifetimes):.1f}, the harness {r.harness_cpu_s} "
        f"(its decoding worker apart), in {r.seconds} s on {os.cpu_count()} cores",
    ]
    for life in r.lifetimes:
        judged = (
            f"early {life.early_mb} -> late {life.late_mb} MB"
            if life.early_mb is not None
            else "too short to judge"
        )
        lines.append(f"  lifetime {life.generation} (pid {life.pid}): {life.seconds} s, "
                     f"{life.sessions} sessions, peak {life.peak_mb} MB, {judged}; "
                     f"{life.ended}")  # fmt: skip
    by = Counter(v.fault or v.what for v in r.violations)
    lines.append(f"violations: {len(r.violations)}" + (f" {dict(by)}" if by else ""))
    for v in r.violations[:40]:
        lines.append(f"  {v.what}: {v.detail}" + (f" [{v.session}]" if v.session else ""))
    if len(r.violations) > 40:
        lines.append(f"  ... and {len(r.violations) - 40} more (report.json)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Entry points


def soak(settings: Settings) -> Report:
    """Run the soak in an event loop of its own (from any thread; in the main one SIGINT and
    SIGTERM stop it cleanly); the report, also written as ``report.json`` with ``--keep``."""
    keep = settings.keep
    workdir = keep if keep is not None else Path(tempfile.mkdtemp(prefix="soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        soak = Soak(settings, workdir.absolute())
        report = asyncio.run(soak.run())
        (workdir / "report.json").write_text(json.dumps(asdict(report), indent=1, default=str))
        for life in soak.daemon.lifetimes:
            soak.log("rss.jsonl", {"generation": life.generation, "pid": life.pid,
                                   "samples": life.rss})  # fmt: skip
        return report
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: Sequence[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, required=True, help="seconds of load")
    p.add_argument("--clients", type=int, required=True, help="clients at once")
    p.add_argument("--seed", type=int, default=1, help="of every random choice")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="the work directory, kept: the daemons' logs, sessions.jsonl, "
                        "faults.jsonl, report.json and the media tree at the end")  # fmt: skip
    p.add_argument("--faults", default=",".join(FAULTS),
                   help=f"comma-separated, of {', '.join(FAULTS)} (default all)")  # fmt: skip
    p.add_argument("--no-tmpfs", action="store_true", help="a plain directory even as root")
    p.add_argument("--disk-mb", type=int, default=0,
                   help="the tmpfs's size (default 128 + 8 per client)")  # fmt: skip
    p.add_argument("--floor-mb", type=int, default=64, help="the daemon's --min-free-mb")
    p.add_argument("--resume-grace", type=float, default=10.0, help="the daemon's")
    p.add_argument("--daemon-args", default="", help="appended to the daemon's options")
    a = p.parse_args(argv)
    faults = frozenset(x.strip() for x in a.faults.split(",") if x.strip())
    if bad := faults - set(FAULTS):
        p.error(f"unknown faults {sorted(bad)}")
    if a.duration < 30 or a.clients < 1:
        p.error("--duration is at least 30 s, --clients at least 1")
    return Settings(
        duration=a.duration, clients=a.clients, seed=a.seed, keep=a.keep, faults=faults,
        tmpfs=False if a.no_tmpfs else None, disk_mb=a.disk_mb, floor_mb=a.floor_mb,
        resume_grace=a.resume_grace, daemon_args=tuple(a.daemon_args.split()),
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    try:
        report = soak(settings)
    except asyncio.CancelledError:
        progress("stopped; the daemon it started is stopped too")
        sys.exit(130)
    print(table(report))
    sys.exit(1 if report.violations else 0)


if __name__ == "__main__":
    main()
