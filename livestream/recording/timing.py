"""Where each received chunk belongs on a session's timeline, for ``--timing capture``.

Pure bookkeeping, no I/O and no Twisted: times come in as arguments (the client's capture time
in seconds, or the arrival time standing in for it), decisions go out as counts.

- The *master clock* is the audio's sample count: sample ``n`` of the session plays at
  ``n / 44100`` s, because that is how the WAV and the muxed AAC play it. Before any audio has
  arrived, and in sessions without audio, the server's clock is the master.
- Video frames are placed on that timeline through an offset from their source clock (the
  client's, or the arrival clock). The offset is measured at every audio chunk (or, without
  audio, at every frame against the server's clock) and *slewed*: it moves toward the
  measurement by at most :data:`MAX_SLEW` seconds per second, so a drifting client clock is
  followed smoothly and a network stall never makes the picture jump.
- The video is written at a constant rate: each frame goes to the output tick nearest its time
  (tick ``k`` plays at ``k / fps`` s). A late frame repeats the previous one to fill the gap; a
  frame whose tick is already written is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from livestream.wire.kinds import SAMPLE_RATE

# The most the video clock is bent toward the master clock: 0.5 %, 5 ms a second. Far above
# real clock drift (a crystal is off by 0.01 % to 0.1 %), far below what an eye notices.
MAX_SLEW = 0.005
# The end of the video: the last frame is shown for one mean frame interval, at most this long.
MAX_LAST_FRAME = 1.0


class SlewedOffset:
    """An offset that follows its measurements at a bounded rate."""

    def __init__(self, value: float, max_rate: float = MAX_SLEW) -> None:
        self.value = value
        self._max_rate = max_rate
        self._at: float | None = None

    def measure(self, target: float, at: float) -> None:
        """Move toward ``target``; ``at`` is the source time, so the step is bounded by the time
        passed since the previous measurement (a burst of chunks moves it by nothing)."""
        if self._at is None:
            self._at = at
            return
        step = self._max_rate * max(0.0, at - self._at)
        self._at = max(self._at, at)
        self.value += min(step, max(-step, target - self.value))


@dataclass(frozen=True)
class Placement:
    """How to write one frame: repeat the previous frame ``repeat`` times first, then this frame
    once if ``show``; a frame not shown still becomes the one later repeats show."""

    repeat: int
    show: bool


class FramePacer:
    """Constant-rate output ticks from frames at arbitrary times (seconds on the timeline)."""

    def __init__(self, fps: int) -> None:
        self.fps = fps
        self.ticks = 0
        self._first: float | None = None
        self._last: float | None = None
        self._count = 0

    def place(self, t: float) -> Placement:
        tick = max(0, math.floor(t * self.fps + 0.5))
        if self._first is None:
            self._first = t
        self._last = max(t, self._last if self._last is not None else t)
        self._count += 1
        if tick < self.ticks:
            return Placement(0, False)
        # The first frame also covers the ticks before it (there is nothing older to show).
        repeat = tick - self.ticks
        self.ticks = tick + 1
        return Placement(repeat, True)

    def end(self, until: float = 0.0) -> int:
        """Ticks of the last frame that close the video: it is shown for one mean frame interval,
        and the video lasts at least ``until`` (the end of the audio)."""
        if self._first is None or self._last is None:
            return 0
        interval = 1.0 / self.fps
        if self._count > 1:
            interval = (self._last - self._first) / (self._count - 1)
        end = max(self._last + min(interval, MAX_LAST_FRAME), until)
        return max(0, math.floor(end * self.fps + 0.5) - self.ticks)


class CaptureTimeline:
    """One session's timeline: frames to ticks, audio to sample positions."""

    def __init__(self, fps: int, max_slew: float = MAX_SLEW) -> None:
        self.pacer = FramePacer(fps)
        self._max_slew = max_slew
        # Source time + offset = timeline time; set by the first chunk of either kind.
        self._offset: SlewedOffset | None = None
        self._server_zero = 0.0
        self._audio_seen = False
        # Samples on the timeline so far: silence put before or between the audio, and audio.
        self.samples = 0

    def _start(self, source: float, arrival: float) -> SlewedOffset:
        if self._offset is None:
            self._offset = SlewedOffset(-source, self._max_slew)
            self._server_zero = arrival
        return self._offset

    def video(self, source: float, arrival: float) -> Placement:
        return self.pacer.place(self.time_of(source, arrival))

    def time_of(self, source: float, arrival: float) -> float:
        """Where a frame captured at ``source`` falls on the timeline, in seconds."""
        offset = self._start(source, arrival)
        if not self._audio_seen:
            offset.measure((arrival - self._server_zero) - source, source)
        return source + offset.value

    def audio(self, source: float, arrival: float, samples: int) -> int:
        """Account for a chunk of ``samples``; returns the samples of silence that place it (the
        first chunk, when the video began before it). Audio is contiguous after that: the
        sample count is the clock, and the video's offset follows it."""
        offset = self._start(source, arrival)
        lead = 0
        if not self._audio_seen:
            self._audio_seen = True
            start = source + offset.value
            if start > arrival - self._server_zero + MAX_LEAD:
                # Sound that claims to start far later than it came (another epoch, a hostile
                # timestamp) starts where it came: not after hours or centuries of silence.
                start = arrival - self._server_zero
            lead = max(0, round(start * SAMPLE_RATE) - self.samples)
            self.samples += lead
        offset.measure(self.samples / SAMPLE_RATE - source, source)
        self.samples += samples
        return lead

    def end(self) -> int:
        """Ticks of the last frame to add so the video lasts as long as what was captured."""
        return self.pacer.end(self.samples / SAMPLE_RATE)


class FrameTimeline:
    """``--timing frames``, the seed's rule: every received frame is one output tick, and the
    audio is every sample in order from 0."""

    def __init__(self) -> None:
        self.ticks = 0

    def video(self, source: float, arrival: float) -> Placement:
        self.ticks += 1
        return Placement(0, True)

    def audio(self, source: float, arrival: float, samples: int) -> int:
        return 0

    def end(self) -> int:
        return 0


Timeline = CaptureTimeline | FrameTimeline


def timeline(mode: str, fps: int) -> Timeline:
    return CaptureTimeline(fps) if mode == CAPTURE else FrameTimeline()


# How far an encoded stream's timestamps may run ahead of the server's clock, counted from its
# first frame, before they are taken for a jump: far over any client's buffering or drift.
MAX_LEAD = 10.0


class EncodedClock:
    """Times of frames that arrive encoded (never repeated or dropped: each is in the
    recording), on the session's timeline; each after the one before.

    With ``--timing frames`` frame ``k`` is at ``k / fps``. With ``--timing capture`` a frame is
    at its capture time on the timeline, as a JPEG frame would be, but not rounded to a tick. A
    timestamp that goes back, or runs ahead of the server's clock by more than
    :data:`MAX_LEAD` since the first frame (an hour's jump), is a discontinuity: the frame is
    put one frame interval after the one before, and the frames after it follow from there.
    """

    def __init__(self, timeline: Timeline, fps: int) -> None:
        self._timeline = timeline
        self._interval = 1.0 / fps
        self._count = 0
        # Added to every source time since the last discontinuity.
        self._shift = 0.0
        self._first: tuple[float, float] | None = None
        self._last: float | None = None

    def place(self, source: float, arrival: float) -> tuple[float, str | None]:
        """The frame's time in seconds, and what was wrong with its timestamp, if anything."""
        if not isinstance(self._timeline, CaptureTimeline):
            self._count += 1
            return (self._count - 1) * self._interval, None
        problem = None
        shifted = source + self._shift
        if self._first is None or self._last is None:
            self._first = (shifted, arrival)
        elif shifted <= self._last:
            problem = f"went back {self._last - shifted:.3f} s"
        elif shifted - self._first[0] > arrival - self._first[1] + MAX_LEAD:
            problem = f"jumped {shifted - self._last:.3f} s ahead of the server's clock"
        if problem is not None and self._last is not None:
            self._shift += self._last + self._interval - shifted
            shifted = self._last + self._interval
        self._last = shifted
        return self._timeline.time_of(shifted, arrival), problem

    def end(self) -> float:
        """The end of the audio on the timeline: the video lasts at least as long."""
        if isinstance(self._timeline, CaptureTimeline):
            return self._timeline.samples / SAMPLE_RATE
        return 0.0


FRAMES = "frames"
CAPTURE = "capture"
TIMING_MODES = (FRAMES, CAPTURE)
