"""A live track's fragments grouped into HLS parts and segments, and the window a playlist shows.

A *part* is one or more whole fragments, at most the part target long (a fragment longer than
the target is a part alone); a *segment* is a run of parts that starts, for video, with a sync
sample: every keyframe starts one, and one that would round to more than the target duration
is cut before it even without a keyframe (a client that never sends one still gets a playlist
that keeps the rule of EXTINF; such a segment is not independent). A segment is known to be
complete only when the fragment after it comes (or the track ends), so the playlist lists the
parts of the one being made, and a blocking reload waits on ``(msn, part)``.

Parts are numbered across the whole track (their URIs do not depend on which segment they
turn out to be in, so a preload hint is always right); segments by media sequence number from
0. Only the window is kept: a few segments (more than three target durations, as RFC 8216bis
§6.2.2 asks of a live playlist) and the parts of the newest ones. Pure: no Twisted, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from livestream.hls.fmp4 import FragmentInfo

# Segments kept in the playlist, and of those the newest whose parts it lists.
WINDOW = 7
PART_WINDOW = 4
# EXTINF rounded to the nearest integer must not exceed the target duration.
ROUNDING = 0.49


@dataclass(frozen=True)
class Chunk:
    """One fragment as it lies in its file: ``source`` counts the files of the track (a replaced
    encoder writes a new one); ``start`` is on the track's timeline (``shift`` ticks later than
    the fragment's own decode time, the start of the file's piece)."""

    source: int
    offset: int
    length: int
    start: int
    duration: int
    key: bool
    shift: int
    info: FragmentInfo


@dataclass
class Part:
    """``number`` counts the track's parts; ``index`` is its place in segment ``msn``."""

    number: int
    msn: int
    index: int
    chunks: list[Chunk] = field(default_factory=list)
    duration: int = 0
    complete: bool = False

    @property
    def independent(self) -> bool:
        return self.chunks[0].key


@dataclass
class Segment:
    msn: int
    init: int
    start: int
    parts: list[Part] = field(default_factory=list)
    duration: int = 0
    complete: bool = False

    @property
    def independent(self) -> bool:
        return bool(self.parts) and self.parts[0].independent


class Segmenter:
    """Takes a track's chunks in order; keeps the window of segments and parts to be served."""

    def __init__(self, timescale: int, part_target: float, target: int, video: bool) -> None:
        self.timescale = timescale
        self.part_target = part_target
        self.target = target
        self._video = video
        self._part_ticks = round(part_target * timescale)
        self._segment_ticks = int((target + ROUNDING) * timescale)
        self._target_ticks = target * timescale
        self.segments: deque[Segment] = deque()
        self._parts: dict[int, Part] = {}
        self._next_part = 0
        self._next_msn = 0
        self.ended = False
        # False once a segment had to start without a sync sample.
        self.all_independent = True

    @property
    def current(self) -> Segment | None:
        """The segment being made (its parts so far), if any."""
        if self.segments and not self.segments[-1].complete:
            return self.segments[-1]
        return None

    @property
    def next_part(self) -> int:
        """The number of the first part not complete yet: the one being filled (fragments of
        one frame, grouped), or else the next to be made. The preload hint names it: a hint
        past a part being filled would skip it, and a GET of that part would not wait."""
        segment = self.current
        if segment is not None and segment.parts and not segment.parts[-1].complete:
            return segment.parts[-1].number
        return self._next_part

    def add(self, chunk: Chunk, init: int) -> None:
        """Place one chunk (``init`` numbers the init segment it needs)."""
        if self.ended:
            raise ValueError("a chunk after the end")
        segment = self.current
        if segment is not None and self._starts_segment(segment, chunk, init):
            self._close_segment(segment)
            segment = None
        if segment is None:
            segment = Segment(self._next_msn, init, chunk.start)
            self._next_msn += 1
            self.segments.append(segment)
            if self._video and not chunk.key:
                self.all_independent = False
        part = segment.parts[-1] if segment.parts and not segment.parts[-1].complete else None
        if part is not None and part.duration + chunk.duration > self._part_ticks:
            part.complete = True
            part = None
        if part is None:
            part = Part(self._next_part, segment.msn, len(segment.parts))
            self._next_part += 1
            segment.parts.append(part)
            self._parts[part.number] = part
        part.chunks.append(chunk)
        part.duration += chunk.duration
        segment.duration += chunk.duration
        # A part that the next chunk of this length would overflow is complete now: it is
        # served without waiting for that chunk.
        if part.duration + chunk.duration > self._part_ticks:
            part.complete = True
        self._trim()

    def _starts_segment(self, segment: Segment, chunk: Chunk, init: int) -> bool:
        """Whether ``chunk`` begins a new segment after ``segment`` (one being made)."""
        if not segment.parts:
            return False
        if segment.init != init or segment.parts[-1].chunks[-1].source != chunk.source:
            return True
        if segment.duration + chunk.duration > self._segment_ticks:
            return True
        if self._video:
            return chunk.key
        # Sound can be cut anywhere: at the fragment nearest the target.
        return segment.duration + chunk.duration / 2 > self._target_ticks

    def end(self) -> None:
        """The track ended: its last part and segment are complete."""
        self.ended = True
        segment = self.current
        if segment is not None:
            self._close_segment(segment)

    @staticmethod
    def _close_segment(segment: Segment) -> None:
        if segment.parts:
            segment.parts[-1].complete = True
        segment.complete = True

    def _trim(self) -> None:
        while len(self.segments) > WINDOW:
            old = self.segments.popleft()
            for part in old.parts:
                self._parts.pop(part.number, None)

    def part(self, number: int) -> Part | None:
        """A complete part of the window."""
        part = self._parts.get(number)
        return part if part is not None and part.complete else None

    def segment(self, msn: int) -> Segment | None:
        """A complete segment of the window."""
        if not self.segments:
            return None
        at = msn - self.segments[0].msn
        if 0 <= at < len(self.segments) and self.segments[at].complete:
            return self.segments[at]
        return None

    def listed_parts(self) -> set[int]:
        """The msns whose parts the playlist lists: the newest segments'."""
        return {s.msn for s in list(self.segments)[-PART_WINDOW:]}

    @property
    def last_msn(self) -> int:
        """The media sequence number of the newest segment (being made, or complete); -1 before
        any."""
        return self._next_msn - 1

    def has(self, msn: int, part: int | None) -> bool:
        """Whether the playlist holds segment ``msn`` complete (``part`` None), or part ``part``
        of it complete, or anything later: what a blocking reload waits for."""
        if self.ended:
            return True
        if msn < self.last_msn:
            return True
        if msn > self.last_msn:
            return False
        newest = self.segments[-1]
        if newest.complete:
            return True
        if part is None:
            return False
        return sum(1 for p in newest.parts if p.complete) > part
