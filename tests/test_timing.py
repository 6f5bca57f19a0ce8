"""Capture timing: the pure placement of frames and samples, and a real 10 fps client."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from livestream.recording.timing import (
    MAX_SLEW,
    CaptureTimeline,
    FramePacer,
    FrameTimeline,
    SlewedOffset,
)
from livestream.wire.kinds import SAMPLE_RATE
from tests.support.media import jpeg_frames, video_facts
from tests.support.server import start_server
from tests.support.websocket import CLOSE_MSG, connect_msg, open_client, stream_msg


def ticks_of(pacer: FramePacer, times: list[float]) -> list[int]:
    """The ticks each frame is written for (its repeats of the previous frame count for that)."""
    return [(p.repeat + 1 if p.show else 0) for p in map(pacer.place, times)]


class PacerTests(SynchronousTestCase):
    def test_slow_source_repeated_to_real_duration(self) -> None:
        """10 fps for 6 s at --fps 15: 90 ticks, the last frame shown one frame interval."""
        pacer = FramePacer(15)
        ticks_of(pacer, [i / 10 for i in range(60)])
        self.assertEqual(pacer.ticks + pacer.end(), 90)

    def test_fast_source_dropped(self) -> None:
        """30 fps into 15: every other frame, still one tick per 1/15 s (the last frame, at
        1.967 s, rounds to tick 30)."""
        pacer = FramePacer(15)
        written = ticks_of(pacer, [i / 30 for i in range(60)])
        self.assertEqual(sum(written), 31)
        self.assertEqual(written.count(0), 29)
        self.assertEqual(pacer.end(), 0)

    def test_stall_filled_by_the_previous_frame(self) -> None:
        pacer = FramePacer(10)
        placements = [pacer.place(t) for t in (0.0, 0.1, 1.1)]
        shown = [(p.repeat, p.show) for p in placements]
        self.assertEqual(shown, [(0, True), (0, True), (9, True)])

    def test_late_first_frame_covers_the_start(self) -> None:
        """A video that starts after the audio shows its first frame from 0."""
        pacer = FramePacer(15)
        self.assertEqual(pacer.place(1.0).repeat, 15)

    def test_end_reaches_the_audio(self) -> None:
        pacer = FramePacer(15)
        pacer.place(0.0)
        self.assertEqual(pacer.ticks + pacer.end(until=2.0), 30)

    def test_frames_mode_one_tick_per_frame(self) -> None:
        timeline = FrameTimeline()
        placements = [timeline.video(t, t) for t in (0.0, 0.0, 5.0, 4.0)]
        self.assertEqual({(p.repeat, p.show) for p in placements}, {(0, True)})
        self.assertEqual(timeline.ticks, 4)
        self.assertEqual(timeline.end(), 0)


class SlewTests(SynchronousTestCase):
    def test_moves_at_most_max_slew(self) -> None:
        offset = SlewedOffset(0.0)
        offset.measure(0.0, 0.0)
        offset.measure(1.0, 10.0)
        self.assertAlmostEqual(offset.value, 10 * MAX_SLEW)
        offset.measure(-1.0, 10.0)  # no time passed: no step
        self.assertAlmostEqual(offset.value, 10 * MAX_SLEW)

    def test_reaches_a_small_target(self) -> None:
        offset = SlewedOffset(0.0)
        offset.measure(0.0, 0.0)
        offset.measure(-0.001, 10.0)
        self.assertAlmostEqual(offset.value, -0.001)


class TimelineTests(SynchronousTestCase):
    def run_session(self, drift: float, seconds: int = 600, fps: int = 15) -> list[float]:
        """A client whose clock runs ``drift`` fast against its sound card: 10 fps video and
        100 ms audio chunks, both stamped by that clock. Returns, per frame, how far (s) its
        tick lies from the instant its capture belongs to on the audio's clock."""
        timeline = CaptureTimeline(fps)
        errors = []
        chunk = SAMPLE_RATE // 10
        for i in range(seconds * 10):
            true_time = i / 10
            stamp = true_time * (1 + drift) + 1000.0  # any epoch
            timeline.audio(stamp, true_time, chunk)
            placed = timeline.video(stamp + 0.05 * (1 + drift), true_time)
            self.assertTrue(placed.show)
            tick = timeline.pacer.ticks - 1
            errors.append(tick / fps - (true_time + 0.05))
        return errors

    def test_no_drift(self) -> None:
        self.assertLessEqual(max(map(abs, self.run_session(0.0))), 0.5 / 15 + 1e-9)

    def test_drift_of_a_tenth_of_a_percent_followed(self) -> None:
        """0.6 s of clock drift over ten minutes; every frame stays within one frame interval
        of its sound."""
        self.assertLessEqual(max(map(abs, self.run_session(0.001))), 1 / 15)

    def test_lead_silence_places_late_audio(self) -> None:
        """Video from 0, audio from 2 s: 2 s of silence go before the first sample."""
        timeline = CaptureTimeline(15)
        timeline.video(10.0, 10.0)
        self.assertEqual(timeline.audio(12.0, 12.0, 441), 2 * SAMPLE_RATE)
        self.assertEqual(timeline.audio(12.01, 12.01, 441), 0)


class CaptureRecordingTests(TestCase):
    """A real client at 10 fps for 6 s, paced in real time."""

    timeout = 120

    async def send_paced(self, port: int, stamps: bool) -> dict:
        frames = jpeg_frames(60, "160x120")
        client = await open_client(port)
        client.send(connect_msg("cam"))
        await client.event("CONNECTED")
        start = reactor.seconds()
        for i, frame in enumerate(frames):
            delay = start + i / 10 - reactor.seconds()
            if delay > 0:
                await deferLater(reactor, delay)
            fields = {"captureTime": 5_000 + i * 100, "seq": i} if stamps else {}
            client.send(stream_msg("VIDEO", frame, **fields))
        await deferLater(reactor, 0.1)
        client.send(CLOSE_MSG)
        return await client.event("CLOSED", timeout=60)

    async def record(self, timing: str, stamps: bool):
        media = Path(self.mktemp())
        _, port = await start_server(self, media, timing=timing)
        closed = await self.send_paced(port, stamps)
        return video_facts(media / "video" / closed["recordings"]["video"])

    def test_capture_with_timestamps_lasts_six_seconds(self):
        async def go():
            facts = await self.record("capture", stamps=True)
            self.assertEqual(facts.frames, 90)
            self.assertAlmostEqual(facts.duration, 6.0, delta=0.1)

        return ensureDeferred(go())

    def test_capture_by_arrival_lasts_six_seconds(self):
        async def go():
            facts = await self.record("capture", stamps=False)
            # Arrival jitter of a loaded machine: within two output frames.
            self.assertAlmostEqual(facts.frames, 90, delta=2)
            self.assertAlmostEqual(facts.duration, 6.0, delta=0.15)

        return ensureDeferred(go())

    def test_frames_mode_keeps_one_frame_per_frame(self):
        async def go():
            facts = await self.record("frames", stamps=True)
            self.assertEqual(facts.frames, 60)
            self.assertAlmostEqual(facts.duration, 4.0, delta=0.1)

        return ensureDeferred(go())
