"""Frames and audio chunks between the source and the socket: when each may leave, how much may
wait, and what is kept until the server has it.

Each item carries its media time (frame n at n/fps, audio at the duration of what came before
it: its byte offset for PCM, the sum of the packets' durations for Opus), kept exact as a
fraction of a second, and a sequence number per source. In real time an item leaves at the
start plus its media time, so the server sees a live stream; fast, it leaves as soon as the
socket takes it. Either way the socket's transport pauses the outbox (it is the transport's
streaming producer) while its buffer is full, and the outbox pauses the source while it holds
more than ``high`` bytes, so memory stays bounded whatever the length of the source.

With ``keep`` (the server offered resume) what was sent stays here until an ``ACK`` covers it,
and is sent again, in order, over a resumed connection. At most ``keep_seconds`` of media are
kept: past that nothing more is sent until an ``ACK`` comes, so the queue fills and the source
is paused; nothing is dropped.

The outbox may be made ``held`` before the connection exists (the Opus header the source writes
first goes in ``CONNECT``): it takes items, and pauses the source as ever, but sends nothing
until :meth:`begin`, when real time starts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from fractions import Fraction
from typing import NamedTuple, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

from livestream.wire.kinds import AUDIO, BYTES_PER_SECOND, VIDEO, MediaKind

KEEP_SECONDS = 30.0

# Sends one chunk: kind, seq, its time on the clock (seconds, exact: the start, a whole number of
# microseconds, plus its media time), key (a keyframe), the chunk; False if the connection
# cannot take it.
Send = Callable[[MediaKind, int, Fraction, bool, bytes], bool]


class _Item(NamedTuple):
    at: Fraction  # media time, seconds from the start
    kind: MediaKind
    seq: int
    data: bytes
    key: bool
    duration: Fraction  # how long an audio item plays (0 for video)


class Pausable(Protocol):
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...


@implementer(IPushProducer)
class Outbox:
    def __init__(
        self,
        clock: IReactorTime,
        send: Send,
        fps: int,
        *,
        realtime: bool,
        keep: bool = False,
        keep_seconds: float = KEEP_SECONDS,
        high: int = 4 * 1024 * 1024,
        low: int = 1024 * 1024,
        held: bool = False,
    ) -> None:
        self._clock = clock
        self._send = send
        self._fps = fps
        self._realtime = realtime
        self._keep = keep
        self._keep_seconds = keep_seconds
        self._high = high
        self._low = low
        self._held = held
        # Every chunk's time is its media time on this epoch: exact, as the source's are.
        self._start = self._now()
        # Items waiting to leave, per source, in media time order.
        self._queues: dict[MediaKind, deque[_Item]] = {VIDEO: deque(), AUDIO: deque()}
        self._frames_added = 0
        self._audio_added = Fraction(0)  # the next audio item's media time
        self._seq = {VIDEO: 0, AUDIO: 0}
        self._sent = {VIDEO: -1, AUDIO: -1}  # the highest seq sent per source
        # Sent and not yet acknowledged, in the order sent.
        self._kept: deque[_Item] = deque()
        self._timer: IDelayedCall | None = None
        self._socket_paused = False
        self._source: Pausable | None = None
        self._source_paused = False
        self._source_done = False
        self._stopped = False
        self._drained: list[Deferred[None]] = []
        self.queued = 0
        self.frames = 0
        self.audio_seconds = Fraction(0)
        self.resent = 0

    def _now(self) -> Fraction:
        """The clock now, to the microsecond: chunk times in whole microseconds stay exact."""
        return Fraction(round(self._clock.seconds() * 1_000_000), 1_000_000)

    def begin(self, keep: bool = False) -> None:
        """A held outbox starts: real time from now, and ``keep`` what is sent (the server
        offered resume)."""
        self._held = False
        self._keep = keep
        self._start = self._now()
        self._pump()

    def attach(self, source: Pausable) -> None:
        """The producer to pause while too much waits here (the source's process transport)."""
        self._source = source
        self._throttle()

    def frame(self, data: bytes, key: bool = False) -> None:
        """The next video frame (a JPEG, or an H.264 access unit and whether it is a keyframe),
        at frame index / fps."""
        self._add(VIDEO, Fraction(self._frames_added, self._fps), data, key)
        self._frames_added += 1

    def audio(self, data: bytes, duration: Fraction | None = None) -> None:
        """The next audio chunk and how long it plays (seconds; PCM: from its length)."""
        if duration is None:
            duration = Fraction(len(data), BYTES_PER_SECOND)
        self._add(AUDIO, self._audio_added, data, False, duration)
        self._audio_added += duration

    def source_done(self) -> None:
        """Nothing more will be added."""
        self._source_done = True
        self._pump()

    def drained(self) -> Deferred[None]:
        """Fires once the source is done and all of it has been sent (maybe not acknowledged);
        again after a resume has sent what was not."""
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        self._pump()
        return d

    def hurry(self) -> None:
        """From now on send as fast as the socket takes it (the user wants to stop: what was
        read is sent at once, not over the seconds it would take in real time)."""
        self._realtime = False
        self._pump()

    def acknowledge(self, video: int | None, audio: int | None) -> None:
        """An ``ACK``: everything up to these sequence numbers is in the recording."""
        safe = {VIDEO: -1 if video is None else video, AUDIO: -1 if audio is None else audio}
        self._kept = deque(item for item in self._kept if item.seq > safe[item.kind])
        self._pump()

    def resend(self) -> None:
        """A resumed connection (after :meth:`acknowledge` with its first ``ACK``): send what
        the server has not acknowledged again, first and in order, then go on."""
        for kind, queue in self._queues.items():
            again = [item for item in self._kept if item.kind == kind]
            queue.extendleft(reversed(again))
            self.queued += sum(len(item.data) for item in again)
        self._kept.clear()
        self._socket_paused = False
        self._pump()

    def _add(self, kind: MediaKind, at: Fraction, data: bytes, key: bool,
             duration: Fraction = Fraction(0)) -> None:  # fmt: skip
        if self._stopped:
            return
        self._queues[kind].append(_Item(at, kind, self._seq[kind], data, key, duration))
        self._seq[kind] += 1
        self.queued += len(data)
        self._throttle()
        # It may be due before the item the timer waits for (audio between two frames).
        self._pump()

    def _pump(self) -> None:
        # Called by the timer, or before it is due (something came that may go earlier).
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        while not self._socket_paused and not self._stopped and not self._held:
            heads = [(q[0].at, kind) for kind, q in self._queues.items() if q]
            if not heads:
                break
            at, kind = min(heads)
            if self._realtime:
                wait = float(self._start + at) - self._clock.seconds()
                if wait > 0:
                    self._timer = self._clock.callLater(wait, self._pump)
                    break
            if self._kept and at - self._kept[0].at >= self._keep_seconds:
                break  # until an ACK lets go of the oldest
            item = self._queues[kind].popleft()
            if not self._send(kind, item.seq, self._start + at, item.key, item.data):
                # The connection is closing; its loss (stopProducing) follows.
                self._queues[kind].appendleft(item)
                self._socket_paused = True
                break
            self.queued -= len(item.data)
            if self._keep:
                self._kept.append(item)
            if item.seq <= self._sent[kind]:
                self.resent += 1
                continue
            self._sent[kind] = item.seq
            if kind == VIDEO:
                self.frames += 1
            else:
                self.audio_seconds += item.duration
        self._throttle()
        if self._source_done and not self.queued:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

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
        self._pump()

    def stopProducing(self) -> None:
        """The connection is gone: send nothing more. Keeping, hold everything for a resumed
        connection (:meth:`resend`); otherwise :meth:`discard` it."""
        self.pauseProducing()
        if not self._keep:
            self.discard()

    def discard(self) -> None:
        """Nothing more can be sent: hold nothing, and let the source run to its end."""
        self.pauseProducing()
        self._stopped = True
        for queue in self._queues.values():
            queue.clear()
        self._kept.clear()
        self.queued = 0
        self._throttle()
