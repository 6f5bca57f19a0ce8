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
