"""Waiting on the real reactor without blocking it."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import deferLater


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds)
