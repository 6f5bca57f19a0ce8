"""A real ``twistd -n livestream`` in a child process, as an operator runs it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from tests.support.http import get
from tests.support.waiting import sleep

# The checkout: the daemon runs with it on PYTHONPATH, so twistd finds its plugin here.
ROOT = Path(__file__).resolve().parent.parent.parent


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
    """A real ``twistd -n livestream`` in a child process, as an operator runs it."""

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
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        argv = [
            *self.launcher, twistd, "-n", "--pidfile=", "livestream",
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
