"""Stand-ins for what the code under test talks to: a reactor that records the processes it is
asked to spawn and hands each a fake transport, and an ffmpeg wrapper that is slow or dies."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from twisted.internet.error import ProcessExitedAlready
from twisted.internet.testing import MemoryReactorClock

from tests.support.media import ffmpeg_exe


class FakeProcessTransport:
    """Stands for a child's pipes: records what is done to it, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.written: list[bytes] = []
        self.producer = None
        self.exited = False
        self.stdin_closed = False

    def write(self, data: bytes) -> None:
        assert not self.stdin_closed, "write after closeStdin"
        self.written.append(data)

    def registerProducer(self, producer, streaming: bool) -> None:
        self.calls.append(("registerProducer", streaming))
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.calls.append(("unregisterProducer",))
        self.producer = None

    def closeStdin(self) -> None:
        self.calls.append(("closeStdin",))
        self.stdin_closed = True

    def signalProcess(self, name: str) -> None:
        if self.exited:
            raise ProcessExitedAlready()
        self.calls.append(("signalProcess", name))

    def signals(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "signalProcess"]


class ProcessReactor(MemoryReactorClock):
    """A memory reactor that also records spawnProcess, connecting a fake transport."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict] = []

    def spawnProcess(
        self,
        proto,
        executable,
        args=(),
        env=None,
        path=None,
        uid=None,
        gid=None,
        usePTY=False,
        childFDs=None,
    ):
        transport = FakeProcessTransport()
        self.spawned.append(
            {
                "proto": proto,
                "executable": executable,
                "args": list(args),
                "env": env,
                "childFDs": childFDs,
                "transport": transport,
            }
        )
        proto.makeConnection(transport)
        return transport


def stand_in(directory: Path, body: str) -> str:
    """An executable that wraps the real ffmpeg, to make it slow or make it die."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ffmpeg"
    path.write_text(f"#!/bin/sh\nREAL={ffmpeg_exe()}\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return os.fspath(path)
