"""How late the reactor runs a timer: the longest stall of the event loop, and how often.

Every session's data goes through the one reactor thread; a callback that holds it (a long
parse, a synchronous file operation, a burst of work for hundreds of sockets) delays every
other session's reads and writes by as much. CPU figures do not show that, and neither does
CLOSE-to-ready until it is far worse: the lateness of a timer does. The monitor asks the reactor
to call it every ``interval`` seconds and records, each time, how much later than asked it was
called; ``metrics`` exposes the maximum and a histogram (``livestream_reactor_lateness_*``),
which the benchmarks read before and after each load step.

Why a one-shot ``callLater`` re-armed at each firing rather than a ``LoopingCall``: a LoopingCall
keeps to a grid of multiples of its interval and skips the ticks a stall swallowed, so how late a
call was would have to be worked out again from that grid; a timer armed for ``now + interval``
says it exactly, ``seconds() - due``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["BUCKETS", "INTERVAL", "Lateness", "StallMonitor"]

INTERVAL = 0.05
# Upper bounds (seconds) of the histogram's buckets: an idle reactor is late by well under a
# millisecond; tens of milliseconds are felt by a 15 fps stream, a second by everyone.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Lateness:
    """What the monitor measured since it started: ``cumulative[i]`` ticks were late by at most
    ``BUCKETS[i]`` seconds (the Prometheus form); ``count`` ticks in all, late by ``total``
    seconds together and by ``maximum`` at most."""

    buckets: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    total: float
    maximum: float


class StallMonitor(Service):
    """A timer every ``interval`` seconds that records how late each firing is."""

    def __init__(
        self,
        clock: IReactorTime,
        interval: float = INTERVAL,
        buckets: tuple[float, ...] = BUCKETS,
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._buckets = buckets
        self._counts = [0] * (len(buckets) + 1)  # per bucket, the last one past every bound
        self._total = 0.0
        self._maximum = 0.0
        self._due = 0.0
        self._call: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        self._arm()

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    @property
    def lateness(self) -> Lateness:
        cumulative: list[int] = []
        running = 0
        for n in self._counts[:-1]:
            running += n
            cumulative.append(running)
        return Lateness(
            self._buckets,
            tuple(cumulative),
            sum(self._counts),
            self._total,
            self._maximum,
        )

    def _arm(self) -> None:
        self._due = self._clock.seconds() + self._interval
        self._call = self._clock.callLater(self._interval, self._fire)

    def _fire(self) -> None:
        self._call = None
        late = max(0.0, self._clock.seconds() - self._due)
        self._counts[bisect.bisect_left(self._buckets, late)] += 1
        self._total += late
        self._maximum = max(self._maximum, late)
        self._arm()
