"""What a recorder owes its encoder's stdin, written as the pipe drains.

An encoder is sometimes owed more than the client sent: repeats of a frame (``--timing
capture`` filling a gap) or silence before late sound (the muxed audio track). Held as
``(chunk, count)`` and written a batch at a time as ffmpeg reads, a long gap costs no memory,
and the client's socket stays paused until the debt is paid, so nothing overtakes it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from livestream.recording.ffmpeg import FFmpegProcess, FFmpegResult, pipes


@implementer(IPushProducer)
class Feed:
    """Sits between an encoder's stdin (which pauses and resumes it) and ``producer`` (the
    client's socket, or its share of it), which it pauses while anything is owed."""

    def __init__(
        self,
        proc: FFmpegProcess,
        producer: IPushProducer,
        batch: int = 1,
        on_full: Callable[[], None] | None = None,
    ) -> None:
        """``on_full`` is told each time the encoder's stdin fills, for a watchdog to see how
        long it stays full (:attr:`full`)."""
        self._proc = proc
        self._producer = producer
        self._batch = batch
        self._on_full = on_full
        self._queue: deque[tuple[bytes, int]] = deque()
        self._paused = False
        self._drained: Deferred[None] | None = None
        self._stdin = pipes(proc)
        self._stdin.registerProducer(self, True)

    def push(self, chunk: bytes, count: int = 1) -> None:
        """Owe ``chunk`` ``count`` times, after everything owed before it."""
        if count > 0 and chunk:
            self._queue.append((chunk, count))
        self._pay()

    def drained(self) -> Deferred[None]:
        """Fires once everything owed is written, or the encoder is gone (the rest is dropped)."""
        if not self._queue or self._proc.exited:
            return succeed(None)
        self._drained = Deferred()

        def pay_rest(result: FFmpegResult) -> FFmpegResult:
            self._pay()
            return result

        self._proc.ended.addCallback(pay_rest)
        return self._drained

    def _pay(self) -> None:
        """Write what is owed until stdin is full (it pauses us) or nothing is left."""
        while self._queue and not self._paused and not self._proc.exited:
            chunk, count = self._queue[0]
            n = min(count, self._batch)
            if n == count:
                self._queue.popleft()
            else:
                self._queue[0] = (chunk, count - n)
            self._stdin.write(chunk * n if n > 1 else chunk)
        if self._proc.exited:
            self._queue.clear()
        if self._queue:
            self._producer.pauseProducing()
        elif self._drained is not None:
            d, self._drained = self._drained, None
            d.callback(None)

    @property
    def full(self) -> bool:
        """The encoder's stdin takes nothing more until it reads."""
        return self._paused

    @property
    def owing(self) -> bool:
        return bool(self._queue)

    def pauseProducing(self) -> None:
        self._paused = True
        self._producer.pauseProducing()
        if self._on_full is not None:
            self._on_full()

    def resumeProducing(self) -> None:
        self._paused = False
        self._pay()
        if not self._queue and not self._paused:
            self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self._producer.stopProducing()
