"""Requests held until what they ask for exists: blocking playlist reloads and preload hints.

A player at the live edge asks for the playlist that will hold the next part, and for the next
part itself, before they exist (RFC 8216bis §6.2.5.2, §6.2.6); the answer waits. Each wait is
a pending Deferred, bounded in time (it fires False at its deadline, for a 503) and in number
(past the limit a wait is refused at once): a player that asks for the far future or many that
pile up cost a bounded list, never a growing one. A player that goes away cancels its wait.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall


class TooMany(Exception):
    """As many requests wait here as may."""


class Waiters:
    def __init__(self, reactor, limit: int) -> None:
        self._reactor = reactor
        self._limit = limit
        self._waiting: dict[Deferred[bool], tuple[Callable[[], bool], IDelayedCall]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def wait(self, ready: Callable[[], bool], timeout: float) -> Deferred[bool]:
        """Fires True once ``ready()`` is (checked now and at each :meth:`wake`), False after
        ``timeout`` seconds. Raises :class:`TooMany` past the limit."""
        if ready():
            d: Deferred[bool] = Deferred()
            d.callback(True)
            return d
        if len(self._waiting) >= self._limit:
            raise TooMany()

        def cancel(d: Deferred[bool]) -> None:
            held = self._waiting.pop(d, None)
            if held is not None and held[1].active():
                held[1].cancel()

        d = Deferred(cancel)
        self._waiting[d] = (ready, self._reactor.callLater(timeout, self._expire, d))
        return d

    def _expire(self, d: Deferred[bool]) -> None:
        if self._waiting.pop(d, None) is not None:
            d.callback(False)

    def wake(self) -> None:
        """Fire every wait whose condition now holds (after new parts, or the end)."""
        for d, (ready, deadline) in list(self._waiting.items()):
            if d in self._waiting and ready():
                del self._waiting[d]
                deadline.cancel()
                d.callback(True)
