"""A session's encoder that outlives its ffmpeg: one that dies or sticks is replaced, and each
replacement writes a piece of its own, joined with the others at publish.

An ffmpeg can die mid-session (the OOM killer picks the biggest process, a signal, a bad build)
or stop reading without exiting (a hang, SIGSTOP). Either way the frames piped to it after its
last complete fragment are lost with it, and without a successor every later frame would be
too. So when one ends early:

- what its file holds is measured (in a thread: the file grows with the session) and cut back
  to its last whole fragment;
- a new ffmpeg starts on a new piece, ``<name>+<ms><suffix>`` (:meth:`MediaTree.piece_path`),
  whose name says where on the session's timeline it starts;
- the last units (frames, PCM samples) handed to the dead one but not in its file are handed
  again to the new one from a ring of the most recent ones (a second or 256 KiB, whichever is
  more: more than a pipe and a fragment hold), so what was in flight is not lost either;
  whatever the ring no longer holds is a gap the piece's start leaves, so the pieces stay in
  time with the other track;
- the client's socket waits meanwhile, so nothing overtakes the replayed units.

A session whose encoders keep dying (:data:`DEATHS_ALLOWED` in :data:`DEATHS_WINDOW`) stops
replacing them: later units are dropped and what the pieces hold is kept. The pieces are joined
by stream copy (:func:`livestream.recording.video.publish`), after a crash too.

Stuck: an encoder whose stdin stays full for :data:`STALL_TIMEOUT` (no read at all) is killed
and replaced the same way. The slowest legitimate wait measured (``python -m bench.encoder_wait``)
is far below it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from livestream.library.tree import MediaTree, Piece
from livestream.recording import ffmpeg, fragments
from livestream.recording.feed import Feed
from livestream.recording.ffmpeg import FFmpegProcess, FFmpegResult
from livestream.recording.fragments import Whole

_log = Logger()

# Replaced this many times within DEATHS_WINDOW seconds, a session's encoder is not again.
DEATHS_ALLOWED = 3
DEATHS_WINDOW = 60.0
# Seconds an encoder's stdin may stay full, not read at all, before it is taken for stuck.
STALL_TIMEOUT = 10.0
# What is kept to be handed again to a successor: at least the units of the last RING_SECONDS
# and at least RING_MIN_BYTES of them, at most RING_BYTES. What an encoder holds unwritten is
# its pipe (64 KiB), a few frames inside it and the fragment it is making (0.2 s).
RING_SECONDS = 1.0
RING_MIN_BYTES = 256 << 10
RING_BYTES = 4 << 20


@dataclass(frozen=True)
class Stream:
    """What one kind of encoder is, for running and replacing it.

    ``rate``: units per second on the timeline (frames, or PCM samples). ``unit_bytes``: the
    bytes of one unit of a chunk, or None when a chunk is one unit (a frame). ``per_sample``:
    units per sample of the encoder's output (an AAC packet is 1024 PCM samples), and
    ``priming`` the samples each new encoder starts with that hold no input (AAC's first
    packet is its encoder's delay)."""

    suffix: str
    label: str
    rate: int
    args: Callable[[str], list[str]]
    unit_bytes: int | None = None
    per_sample: int = 1
    priming: int = 0
    batch: int = 1


class ReplacingEncoder:
    """One stream of one session: an ffmpeg and the feed of its stdin, from the first chunk on;
    replaced when it ends early (see the module). ``on_failure`` is told of every early end,
    with whether a successor took over."""

    def __init__(
        self,
        reactor,
        executable: str,
        tree: MediaTree,
        name: str,
        stream: Stream,
        producer: IPushProducer,
        on_failure: Callable[[FFmpegResult, bool], None],
        grace: float = 30.0,
        stall_timeout: float = STALL_TIMEOUT,
    ) -> None:
        self._reactor = reactor
        self._executable = executable
        self._tree = tree
        self._name = name
        self._stream = stream
        self._producer = producer
        self._on_failure = on_failure
        self._grace = grace
        self._stall_timeout = stall_timeout
        self._proc: FFmpegProcess | None = None
        self._feed: Feed | None = None
        # Where the current piece starts (units of the timeline), and the units handed to it.
        self._start = 0
        self._handed = 0
        self._ring: deque[tuple[bytes, int]] = deque()
        self._ring_units = 0
        self._ring_bytes = 0
        self._ring_limit = max(1, int(stream.rate * RING_SECONDS))
        # Chunks handed while a successor is being prepared, and that preparation.
        self._held: list[tuple[bytes, int]] | None = None
        self._replaced: Deferred[None] | None = None
        self._deaths: deque[float] = deque()
        self._watchdog: IDelayedCall | None = None
        self._full_at = 0.0
        self._ending = False
        self.given_up = False
        self.replacements = 0
        # Units handed after the encoder was given up.
        self.dropped = 0

    def push(self, chunk: bytes, count: int = 1) -> None:
        """Hand ``chunk`` ``count`` times to the encoder (started by the first chunk)."""
        if count <= 0 or not chunk:
            return
        units = self._units(chunk) * count
        if self.given_up:
            self.dropped += units
            return
        if self._proc is None:
            self._spawn()
        self._remember(chunk, count)
        self._handed += units
        if self._held is not None:
            self._held.append((chunk, count))
        elif self._feed is not None:
            self._feed.push(chunk, count)

    def _units(self, chunk: bytes) -> int:
        size = self._stream.unit_bytes
        return 1 if size is None else len(chunk) // size

    def _remember(self, chunk: bytes, count: int) -> None:
        """Keep the chunk in the ring, dropping the oldest while the rest is enough, or too much
        (the newest stays, however large). A repeat costs one reference, whatever its count."""
        self._ring.append((chunk, count))
        self._ring_units += self._units(chunk) * count
        self._ring_bytes += len(chunk)
        while len(self._ring) > 1:
            old, old_count = self._ring[0]
            units = self._ring_units - self._units(old) * old_count
            size = self._ring_bytes - len(old)
            enough = units >= self._ring_limit and size >= RING_MIN_BYTES
            if not enough and self._ring_bytes <= RING_BYTES:
                break
            self._ring.popleft()
            self._ring_units, self._ring_bytes = units, size

    def _tail(self, ring: list[tuple[bytes, int]], units: int) -> list[tuple[bytes, int]]:
        """The chunks of the last ``units`` units of ``ring`` (all of it if it holds fewer)."""
        tail: list[tuple[bytes, int]] = []
        for chunk, count in reversed(ring):
            if units <= 0:
                break
            each = self._units(chunk)
            if each * count <= units:
                tail.append((chunk, count))
                units -= each * count
                continue
            whole, rest = divmod(units, each)
            if whole:
                tail.append((chunk, whole))
            if rest and self._stream.unit_bytes is not None:
                tail.append((chunk[-rest * self._stream.unit_bytes :], 1))
            units = 0
        tail.reverse()
        return tail

    @property
    def piece(self) -> Piece | None:
        """The piece being written now (for live viewing), once an encoder runs."""
        if self._proc is None:
            return None
        return Piece(self._start * 1000 // self._stream.rate, self._path())

    def _path(self) -> Path:
        return self._tree.piece_path(
            self._name, self._stream.suffix, self._start * 1000 // self._stream.rate
        )

    def _spawn(self) -> None:
        out = self._path()
        label = self._stream.label if not self.replacements else f"{self._stream.label} (new)"
        proc = ffmpeg.spawn(
            self._reactor, self._executable, self._stream.args(os.fspath(out)), label
        )
        self._proc = proc
        self._feed = Feed(proc, self._producer, self._stream.batch, on_full=self._full)
        proc.ended.addCallback(self._ended, proc)

    def _full(self) -> None:
        """The encoder's stdin filled (it read since it last did): give it ``stall_timeout``
        from now to read again."""
        self._full_at = self._reactor.seconds()
        if self._watchdog is None or not self._watchdog.active():
            self._watchdog = self._reactor.callLater(self._stall_timeout, self._look)

    def _look(self) -> None:
        """Full since ``_full_at`` and still: stuck. It is killed, and its end replaces it."""
        self._watchdog = None
        proc, feed = self._proc, self._feed
        if proc is None or feed is None or proc.exited or not feed.full:
            return
        waited = self._reactor.seconds() - self._full_at
        if waited < self._stall_timeout:
            self._watchdog = self._reactor.callLater(self._stall_timeout - waited, self._look)
            return
        _log.error(
            "encoder {label} of {name} read nothing for {seconds:.1f}s with its input full; "
            "killing it",
            label=self._stream.label, name=self._name, seconds=waited,
        )  # fmt: skip
        try:
            ffmpeg.pipes(proc).signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    def _ended(self, result: FFmpegResult, proc: FFmpegProcess) -> FFmpegResult:
        if self._ending or proc is not self._proc:
            return result
        now = self._reactor.seconds()
        self._deaths.append(now)
        while self._deaths[0] < now - DEATHS_WINDOW:
            self._deaths.popleft()
        if len(self._deaths) >= DEATHS_ALLOWED:
            self.given_up = True
            _log.error(
                "encoder {label} of {name} stopped mid-stream, {deaths} times in {window:.0f}s: "
                "not replaced again, what it wrote is kept: {why}",
                label=self._stream.label, name=self._name, deaths=len(self._deaths),
                window=DEATHS_WINDOW, why=result.describe(),
            )  # fmt: skip
            self._on_failure(result, False)
            return result
        _log.error(
            "encoder {label} of {name} stopped mid-stream; replacing it: {why}",
            label=self._stream.label, name=self._name, why=result.describe(),
        )  # fmt: skip
        self._on_failure(result, True)
        self._replace()
        return result

    def _replace(self) -> None:
        """Measure the dead encoder's file, then start its successor where the file ends,
        handing it again what the file lacks. The socket waits meanwhile; chunks already on
        their way are held and follow."""
        self._producer.pauseProducing()
        self._held = []
        handed, self._handed = self._handed, 0
        ring = list(self._ring)
        path = self._path()

        def take_over(measured: tuple[Whole, int]) -> None:
            whole, _ = measured
            samples = max(0, whole.samples - self._stream.priming)
            kept = min(handed, samples * self._stream.per_sample)
            if not kept:
                path.unlink(missing_ok=True)
            replay = self._tail(ring, handed - kept)
            replayed = sum(self._units(chunk) * count for chunk, count in replay)
            gap = handed - kept - replayed
            self._start += kept + gap
            self._handed += replayed
            self.replacements += 1
            _log.info(
                "encoder {label} of {name} replaced: {kept} units in its file, {replayed} "
                "handed again, {gap} lost; the new piece starts at {start:.3f}s",
                label=self._stream.label, name=self._name, kept=kept, replayed=replayed,
                gap=gap, start=self._start / self._stream.rate,
            )  # fmt: skip
            held = self._held or []
            self._held = None
            self._spawn()
            feed = self._feed
            assert feed is not None
            for chunk, count in [*replay, *held]:
                feed.push(chunk, count)
            if not feed.owing:
                self._producer.resumeProducing()

        def failed(reason: Failure) -> None:
            _log.failure(
                "could not replace encoder {label} of {name}; later units are dropped", reason,
                label=self._stream.label, name=self._name,
            )  # fmt: skip
            self.given_up = True
            self._held = None
            self._producer.resumeProducing()

        self._replaced = self._measure(path).addCallback(take_over).addErrback(failed)

    def _measure(self, path: Path) -> Deferred[tuple[Whole, int]]:
        """Trim and measure ``path`` off the reactor thread where the reactor has threads (a
        long session's file has thousands of fragments to walk)."""
        if IReactorThreads.providedBy(self._reactor):
            return deferToThreadPool(
                self._reactor, self._reactor.getThreadPool(), fragments.trim_measured, path
            )
        return maybeDeferred(fragments.trim_measured, path)

    async def end(self) -> FFmpegResult | None:
        """End the input (what is queued goes first) and wait for the encoder: its result, or
        None when there was none or it was given up (its early end was reported then)."""
        self._ending = True
        if self._replaced is not None:
            await self._replaced
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        proc, feed = self._proc, self._feed
        if proc is None or feed is None or self.given_up:
            return None
        await feed.drained()
        result = await ffmpeg.end_input(self._reactor, proc, self._grace)
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        return result
