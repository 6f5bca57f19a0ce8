"""Waiting on the real reactor without blocking it: for a while, or until a condition holds."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.task import deferLater


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds)


async def until(
    condition: Callable[[], object], timeout: float = 20, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` after ``timeout``."""
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await sleep(0.1)


async def cut_connection(registry, after_frames: int, previous: object = None) -> object:
    """Once the registry's one session has recorded ``after_frames`` on a connection other
    than ``previous`` (the one cut before), abort that connection; return it. The server stops
    reading it 0.3 s before, so what the sender sent meanwhile is lost with it."""
    while True:
        sessions = registry.sessions
        owner = sessions[0]._owner if sessions else None
        if owner is not None and owner is not previous and sessions[0].frames >= after_frames:
            owner.transport.pauseProducing()
            await sleep(0.3)
            owner.transport.abortConnection()
            return owner
        await sleep(0.02)
