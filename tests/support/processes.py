"""Processes seen through /proc: the daemon's encoders found, killed and waited for, without
trusting the daemon to say what it runs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from tests.support.waiting import sleep


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (the daemon's ffmpeg encoders), found by scanning /proc."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pid and stat[0] not in ("Z", "X"):
                kids.append(int(entry))
    return kids


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` runs; return those still running at the deadline."""
    deadline = reactor.seconds() + timeout
    while True:
        left = [p for p in pids if alive(p)]
        if not left or reactor.seconds() > deadline:
            return left
        await sleep(0.05)


class Collect(ProcessProtocol):
    """A child's stdout and stderr, whole, and its exit code once it ends."""

    def __init__(self) -> None:
        self.out = self.err = b""
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))
