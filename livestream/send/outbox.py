"""Frames and audio chunks between the source and the socket: when each may leave, and how much
may wait.

Each item carries its media time (frame n at n/fps, audio at its byte offset). In real time an
item leaves at the start plus its media time, so the server sees a live stream; fast, it leaves
as soon as the socket takes it. Either way the socket's transport pauses the outbox (it is the
transport's streaming producer) while its buffer is full, and the outbox pauses the source while
it holds more than ``high`` bytes, so memory stays bounded whatever the length of the source.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

from livestream.send.source import BYTES_PER_SECOND

VIDEO = "VIDEO"
AUDIO = "AUDIO"


class Pausable(Protocol):
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...


@implementer(IPushProducer)
class Outbox:
    def __init__(
        self,
        clock: IReactorTime,
        send: Callable[[str, bytes], None],
        fps: int,
        *,
        realtime: bool,
        high: int = 4 * 1024 * 1024,
        low: int = 1024 * 1024,
    ) -> None:
        self._clock = clock
        self._send = send
        self._fps = fps
        self._realtime = realtime
        self._high = high
        self._low = low
        self._start = clock.seconds()
        self._queues: dict[str, deque[tuple[float, bytes]]] = {VIDEO: deque(), AUDIO: deque()}
        self._added = {VIDEO: 0, AUDIO: 0}  # frames, audio bytes: the next item's media time
        self._timer: IDelayedCall | None = None
        self._socket_paused = False
        self._source: Pausable | None = None
        self._source_paused = False
        self._source_done = False
        self._stopped = False
        self.queued = 0
        self.frames = 0
        self.audio_bytes = 0
        self.emptied: Deferred[None] = Deferred()

    def attach(self, source: Pausable) -> None:
        """The producer to pause while too much waits here (the source's process transport)."""
        self._source = source
        self._throttle()

    def frame(self, jpeg: bytes) -> None:
        self._add(VIDEO, self._added[VIDEO] / self._fps, jpeg)
        self._added[VIDEO] += 1

    def audio(self, pcm: bytes) -> None:
        self._add(AUDIO, self._added[AUDIO] / BYTES_PER_SECOND, pcm)
        self._added[AUDIO] += len(pcm)

    def source_done(self) -> None:
        """Nothing more will be added; ``emptied`` fires once all of it has been sent."""
        self._source_done = True
        self._pump()

    def hurry(self) -> None:
        """From now on send as fast as the socket takes it (the user wants to stop: what was
        read is sent at once, not over the seconds it would take in real time)."""
        self._realtime = False
        if self._timer is not None:
            self._timer.cancel()
        self._pump()

    def _add(self, kind: str, at: float, data: bytes) -> None:
        if self._stopped:
            return
        self._queues[kind].append((at, data))
        self.queued += len(data)
        self._throttle()
        # An item may be due before the one a timer waits for (audio between two frames).
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pump()

    def _pump(self) -> None:
        self._timer = None
        while not self._socket_paused and not self._stopped:
            heads = [(q[0][0], kind) for kind, q in self._queues.items() if q]
            if not heads:
                break
            at, kind = min(heads)
            if self._realtime:
                wait = self._start + at - self._clock.seconds()
                if wait > 0:
                    self._timer = self._clock.callLater(wait, self._pump)
                    break
            _, data = self._queues[kind].popleft()
            self.queued -= len(data)
            if kind == VIDEO:
                self.frames += 1
            else:
                self.audio_bytes += len(data)
            self._send(kind, data)
        self._throttle()
        if self._source_done and not self.queued and not self.emptied.called:
            self.emptied.callback(None)

    def _throttle(self) -> None:
        if self._source is None:
            return
        if not self._source_paused and self.queued > self._high:
            self._source_paused = True
            self._source.pauseProducing()
        elif self._source_paused and self.queued < self._low:
            self._source_paused = False
            self._source.resumeProducing()

    # IPushProducer, for the socket's transport.
    def pauseProducing(self) -> None:
        self._socket_paused = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def resumeProducing(self) -> None:
        self._socket_paused = False
        if self._timer is None:
            self._pump()

    def stopProducing(self) -> None:
        """The connection is gone: send nothing more and hold nothing."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for queue in self._queues.values():
            queue.clear()
        self.queued = 0
        self._throttle()
