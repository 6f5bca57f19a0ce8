"""A real ``twistd -n livestream`` in a child process, as an operator runs it: started, stopped,
killed, or run to its end; and DaemonCase, which gives each test its own daemon and checks the
recordings it leaves by decoding them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from tests.support.http import get
from tests.support.media import pcm, video_facts, wav_facts
from tests.support.ports import free_port
from tests.support.processes import children, kill
from tests.support.waiting import sleep

# The checkout: the daemon runs with it on PYTHONPATH, so twistd finds its plugin here.
ROOT = Path(__file__).resolve().parent.parent.parent
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

# The frame rate DaemonCase's daemons record at.
FPS = 15
# One chunk of audio per video frame: 1/15 s of 44.1 kHz mono.
SAMPLES_PER_CHUNK = 44100 // FPS


def audio_chunks(count: int, client: int) -> list[bytes]:
    return [pcm(SAMPLES_PER_CHUNK, seed=client * 1000 + i) for i in range(count)]


class _DaemonProtocol(ProcessProtocol):
    def __init__(self, log: Path) -> None:
        self.log = open(log, "ab")  # noqa: SIM115 - closed when the process ends
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.log.write(data)
        self.log.flush()

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.log.close()
        self.ended.callback(getattr(reason.value, "exitCode", None))


class Daemon:
    """A real ``twistd -n livestream`` in a child process, as an operator runs it: started, stopped,
    killed, or run to its end; and DaemonCase, which gives each test its own daemon and checks the
    recordings it leaves by decoding them."""

    def __init__(
        self,
        workdir: Path,
        media: Path,
        port: int,
        *extra: str,
        listen: str | None = None,
        launcher: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        """``listen`` replaces the loopback TCP listener on ``port`` (which the daemon must still
        answer on); ``launcher`` is a command that runs twistd (systemd-socket-activate);
        ``env`` is added to the daemon's environment."""
        self.workdir = workdir
        self.media = media
        self.port = port
        self.extra = extra
        self.listen = listen or f"tcp:{port}:interface=127.0.0.1"
        self.launcher = launcher
        self.env = env or {}
        self.log = workdir / "twistd.out"
        self.proto: _DaemonProtocol | None = None

    @property
    def pid(self) -> int:
        return self.proto.transport.pid

    def start(self) -> None:
        self.proto = _DaemonProtocol(self.log)
        argv = [
            *self.launcher, TWISTD, "-n", "--pidfile=", "livestream",
            "--listen", self.listen,
            "--media", os.fspath(self.media),
            # The suite may run on a nearly full disk; the reserve has tests of its own.
            "--min-free-mb", "0", *self.extra,
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=os.fspath(ROOT), **self.env)
        reactor.spawnProcess(self.proto, argv[0], argv, env=env, path=os.fspath(self.workdir))

    async def listening(self, timeout: float = 30) -> None:
        """Wait until the daemon answers ``GET /recordings`` (a 401 of a daemon with
        authentication on is an answer too)."""
        deadline = reactor.seconds() + timeout
        while True:
            if self.proto.ended.called:
                raise AssertionError(f"daemon exited at start:\n{self.output()}")
            try:
                await get(self.port, "/recordings")
                return
            except ConnectionError:
                if reactor.seconds() > deadline:
                    raise AssertionError(f"daemon not listening:\n{self.output()}") from None
                await sleep(0.1)

    def signal(self, name: str) -> None:
        self.proto.transport.signalProcess(name)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def ended(daemon: Daemon, timeout: float = 60) -> Deferred:
    """A fresh Deferred for the daemon's exit code (``proto.ended`` is shared, so never awaited
    directly: awaiting a Deferred consumes its result)."""
    d: Deferred = Deferred()

    def relay(result):
        if not d.called:
            d.callback(result)
        return result

    daemon.proto.ended.addBoth(relay)
    return d.addTimeout(timeout, reactor)


def how_it_ended(daemon: Daemon) -> str:
    """``exit N`` or ``signal NAME`` from the raw wait status (``proto.ended`` only gives an exit
    code, None for any death by signal, which would hide *which* signal)."""
    status = daemon.proto.transport.status
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"


async def stop(daemon: Daemon) -> None:
    """Cleanup: SIGKILL the daemon and its encoders if they still run, and wait for its end."""
    if daemon.proto is None:
        return
    if not daemon.proto.ended.called:
        pid = daemon.pid
        for kid in children(pid):
            kill(kid)
        kill(pid)
    await ended(daemon, 30)


class DaemonCase(unittest.TestCase):
    """A test with daemons of its own, in its own work directory, each killed (with its encoders)
    when the test ends; ``assert_video`` and ``assert_wav`` judge what they recorded."""

    timeout = 120

    def setUp(self) -> None:
        self.workdir = Path(self.mktemp()).absolute()
        self.workdir.mkdir(parents=True)
        self.media = self.workdir / "media"

    def daemon(self, *extra: str) -> Daemon:
        d = Daemon(self.workdir, self.media, free_port(), "--fps", str(FPS), *extra)
        d.start()
        self.addCleanup(stop, d)
        return d

    def assert_video(self, name: str, frames: int | None = None, at_least: int | None = None):
        path = self.media / "video" / name
        self.assertTrue(path.is_file(), f"{path} missing; video/ holds {self.listdir('video')}")
        facts = video_facts(path)
        self.assertEqual(facts.codec, "h264", facts)
        self.assertEqual(facts.pix_fmt, "yuv420p", facts)
        self.assertEqual(facts.rate, FPS, facts)
        self.assertTrue(facts.faststart, f"moov is not before mdat in {name}: {facts}")
        if frames is not None:
            self.assertEqual(facts.frames, frames, facts)
        if at_least is not None:
            self.assertGreaterEqual(facts.frames, at_least, facts)
        return facts

    def assert_wav(self, name: str, chunks: list[bytes]) -> None:
        path = self.media / "audio" / name
        self.assertTrue(path.is_file(), f"{path} missing; audio/ holds {self.listdir('audio')}")
        facts = wav_facts(path)
        self.assertEqual((facts.rate, facts.channels, facts.sample_width), (44100, 1, 2))
        self.assertTrue(facts.riff_size_ok, f"wrong RIFF size in {name}")
        sent = b"".join(chunks)
        self.assertEqual(len(facts.data), len(sent))
        self.assertTrue(facts.data == sent, f"{name}: audio bytes differ from those sent")
        self.assertEqual(path.stat().st_size, 44 + len(sent))

    def listdir(self, kind: str) -> list[str]:
        path = self.media / kind
        return sorted(os.listdir(path)) if path.is_dir() else []


def run_twistd(
    workdir: Path, *args: str, port: int | None = None, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``twistd -n livestream ARGS`` (with ``env`` added to its environment) to its end;
    (exit status, stdout + stderr)."""
    port = free_port() if port is None else port
    argv = [
        TWISTD, "-n", "--pidfile=", "livestream",
        "--listen", f"tcp:{port}:interface=127.0.0.1", "--media", os.fspath(workdir / "media"),
        *args,
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        cwd=workdir,
        env=dict(os.environ, PYTHONPATH=os.fspath(ROOT), **(env or {})),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout.decode("utf-8", "replace")


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
