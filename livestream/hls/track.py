"""One live track (a session's video, or its sound) as HLS: its files read as they grow, its
parts and segments, the bytes served of them, and the requests waiting for the next ones.

The track follows the file its recorder writes now (``source``): a replaced encoder's piece
starts at 0 again, so its fragments are moved to where the piece starts on the session's
timeline, and a piece with another init segment gets an EXT-X-MAP of its own. The bytes of a
part are read once, when first asked for, and kept for every player until the window moves past
it: fifty players of a part cost one read and fifty writes of the same bytes object. A segment
is its parts' bytes, joined when asked for.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from livestream.hls import fmp4
from livestream.hls.segments import Chunk, Segmenter
from livestream.hls.tail import FileTail, Fragment
from livestream.hls.waiting import Waiters
from livestream.library.tree import Piece

_log = Logger()

# Requests that may wait on one track at once (each player holds one or two).
MAX_WAITING = 512


class LiveTrack:
    def __init__(
        self,
        reactor,
        label: str,
        source: Callable[[], Piece | None],
        part_target: float,
        target: int,
    ) -> None:
        """``label`` names it in the log; ``source`` gives the piece being written now."""
        self._label = label
        self._source = source
        self._part_target = part_target
        self._target = target
        # The files read, with where each piece starts on the timeline (ms).
        self._tails: list[tuple[FileTail, int]] = []
        self.inits: list[bytes] = []
        self.info: fmp4.TrackInfo | None = None
        self.segmenter: Segmenter | None = None
        self.waiters = Waiters(reactor, MAX_WAITING)
        self._parts: dict[int, bytes] = {}
        self.broken = False

    @property
    def playable(self) -> bool:
        """A whole segment is listed (or the track ended): what a player that knows nothing of
        parts (ffmpeg's HLS demuxer) needs to start, so the first playlist waits for it."""
        return self.segmenter is not None and self.segmenter.has(0, None)

    @property
    def ended(self) -> bool:
        return self.segmenter is not None and self.segmenter.ended

    def poll(self) -> None:
        """Read what the files hold now; wake the requests it satisfies."""
        if self.broken or self.ended:
            return
        try:
            changed = self._read()
        except (OSError, fmp4.BadFragment) as e:
            _log.warn("live {label}: its file cannot be read as HLS: {error}", label=self._label,
                      error=e)  # fmt: skip
            self.broken = True
            changed = True
        if changed:
            self.waiters.wake()

    def end(self) -> None:
        """The recorder wrote its last: read the rest, complete the last segment."""
        self.poll()
        if self.segmenter is not None and not self.segmenter.ended:
            self.segmenter.end()
        self.broken = self.broken or self.segmenter is None
        self.waiters.wake()

    def _read(self) -> bool:
        piece = self._source()
        changed = False
        if piece is not None and (not self._tails or self._tails[-1][0].path != piece.path):
            # The piece before is read to its end first: its encoder is gone.
            changed = bool(self._tails) and self._take(len(self._tails) - 1)
            self._tails.append((FileTail(piece.path), piece.start_ms))
        if not self._tails:
            return False
        return self._take(len(self._tails) - 1) or changed

    def _take(self, source: int) -> bool:
        tail, start_ms = self._tails[source]
        fragments = tail.read()
        if not fragments:
            return False
        if tail.track is None or tail.init is None:
            return False
        if self.info is None:
            self.info = tail.track
            self.segmenter = Segmenter(
                tail.track.timescale, self._part_target, self._target, tail.track.video
            )
        if tail.track.timescale != self.info.timescale:
            raise fmp4.BadFragment("a piece with another timescale")
        if not self.inits or self.inits[-1] != tail.init:
            self.inits.append(tail.init)
        init = len(self.inits) - 1
        shift = start_ms * self.info.timescale // 1000
        assert self.segmenter is not None
        for fragment in fragments:
            self.segmenter.add(self._chunk(source, fragment, shift), init)
        self._forget()
        return True

    @staticmethod
    def _chunk(source: int, fragment: Fragment, shift: int) -> Chunk:
        info = fragment.info
        return Chunk(
            source, fragment.offset, fragment.length, info.decode_time + shift, info.duration,
            info.key, shift, info,
        )  # fmt: skip

    def _forget(self) -> None:
        """Drop the bytes of what the window no longer holds."""
        assert self.segmenter is not None
        for number in [n for n in self._parts if self.segmenter.part(n) is None]:
            del self._parts[number]

    def _bytes(self, chunks: list[Chunk]) -> bytes:
        out = []
        for chunk in chunks:
            data = self._tails[chunk.source][0].pread(chunk.offset, chunk.length)
            out.append(fmp4.moved(data, chunk.info, chunk.shift))
        return b"".join(out)

    def part_bytes(self, number: int) -> bytes | None:
        """A complete part of the window, or None."""
        part = self.segmenter.part(number) if self.segmenter is not None else None
        if part is None:
            return None
        data = self._parts.get(number)
        if data is None:
            data = self._parts[number] = self._bytes(part.chunks)
        return data

    def segment_bytes(self, msn: int) -> bytes | None:
        """A complete segment of the window, or None: its parts' bytes, joined."""
        segment = self.segmenter.segment(msn) if self.segmenter is not None else None
        if segment is None:
            return None
        return b"".join(self.part_bytes(p.number) or b"" for p in segment.parts)

    def init_bytes(self, number: int) -> bytes | None:
        return self.inits[number] if 0 <= number < len(self.inits) else None

    def wait(self, ready: Callable[[], bool], timeout: float) -> Deferred[bool]:
        return self.waiters.wait(ready, timeout)

    def close(self) -> None:
        for tail, _ in self._tails:
            tail.close()
        self._parts.clear()
