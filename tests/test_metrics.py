"""``GET /metrics`` of a running server: what was sent is what is counted."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase, TestCase

from livestream.auth.access import Access
from livestream.auth.tokens import Verifier, mint
from livestream.ops.metrics import Metrics
from livestream.recording.ffmpeg import FFmpegResult
from livestream.sessions.events import (
    EncoderFailed,
    Events,
    Recovered,
    SessionEnded,
    SessionStarted,
)
from livestream.sessions.outcome import Outcome
from tests.support.http import get
from tests.support.media import jpeg_frames, pcm
from tests.support.metrics import parse, scrape
from tests.support.server import start_server
from tests.support.websocket import CLOSE_MSG, connect_msg, open_client, record, stream_msg

SECRET = b"m" * 32


class MetricsOfARunningServerTests(TestCase):
    timeout = 90

    async def test_counts_equal_what_was_sent(self) -> None:
        _, port = await start_server(self, Path(self.mktemp()))
        frames = jpeg_frames(12)
        audio = [pcm(2940, seed=i) for i in range(5)]
        await record(port, "cam-1", frames=frames, audio=audio)

        client = await open_client(port)
        client.send(connect_msg("cam-2"))
        await client.event("CONNECTED")
        live_frames = jpeg_frames(3)
        for frame in live_frames:
            client.send(stream_msg("VIDEO", frame))
        client.send(stream_msg("VIDEO", b"\xff\xd8 not a jpeg"))
        client.send("{not json")
        # Replies come in order: once both errors are back, every frame before them is counted.
        self.assertEqual((await client.event("ERROR"))["code"], "invalid_jpeg")
        self.assertEqual((await client.event("ERROR"))["code"], "invalid_json")

        live = await scrape(port)
        self.assertEqual(live[("livestream_live_sessions", ())], 1)
        self.assertEqual(live[("livestream_sessions_started_total", ())], 2)
        self.assertEqual(live[("livestream_frames_received_total", ())], 12 + 3)
        sent = sum(map(len, frames)) + sum(map(len, audio)) + sum(map(len, live_frames))
        self.assertEqual(live[("livestream_bytes_received_total", ())], sent)
        self.assertEqual(live[("livestream_errors_total", (("code", "invalid_jpeg"),))], 1)
        self.assertEqual(live[("livestream_errors_total", (("code", "invalid_json"),))], 1)
        self.assertEqual(live[("livestream_recordings_total", (("kind", "video"),))], 1)
        self.assertEqual(live[("livestream_recordings_total", (("kind", "audio"),))], 1)
        self.assertEqual(live[("livestream_finalize_seconds_count", ())], 1)

        client.send(CLOSE_MSG)
        await client.event("CLOSED")
        # Ended but maybe not yet closed: the session's frames count once, whichever it is.
        ended = await scrape(port)
        self.assertEqual(ended[("livestream_frames_received_total", ())], 15)
        self.assertEqual(ended[("livestream_bytes_received_total", ())], sent)
        self.assertEqual(ended[("livestream_recordings_total", (("kind", "video"),))], 2)
        self.assertEqual(ended[("livestream_finalize_seconds_count", ())], 2)
        self.assertEqual(ended[("livestream_finalize_seconds_bucket", (("le", "+Inf"),))], 2)
        self.assertGreater(ended[("livestream_finalize_seconds_sum", ())], 0)
        await client.closed
        self.assertEqual((await scrape(port))[("livestream_live_sessions", ())], 0)

    async def test_needs_the_metrics_scope_when_auth_is_on(self) -> None:
        _, port = await start_server(self, Path(self.mktemp()), access=Access(Verifier(SECRET)))
        self.assertEqual((await get(port, "/metrics")).code, 401)
        read_only = mint(SECRET, ["read"], 300)
        refused = await get(port, "/metrics", {"Authorization": f"Bearer {read_only}"})
        self.assertEqual(refused.code, 403)
        allowed = mint(SECRET, ["metrics"], 300)
        samples = await scrape(port, {"Authorization": f"Bearer {allowed}"})
        self.assertEqual(samples[("livestream_sessions_started_total", ())], 0)

    async def test_two_servers_in_one_process_count_apart(self) -> None:
        _, one = await start_server(self, Path(self.mktemp()))
        _, two = await start_server(self, Path(self.mktemp()))
        await record(one, "a", audio=[pcm(100)])
        self.assertEqual((await scrape(one))[("livestream_sessions_started_total", ())], 1)
        self.assertEqual((await scrape(two))[("livestream_sessions_started_total", ())], 0)


class MetricsFromEventsTests(SynchronousTestCase):
    """What the hub reports that a test cannot easily make a server do."""

    def test_encoder_failures_recoveries_and_webhook_figures(self) -> None:
        events = Events()

        class Hooks:
            delivered, failed, dropped, pending = 3, 2, 1, 4

        metrics = Metrics(events, lambda: (), Hooks())
        events.emit(SessionStarted("a_1", "a", "p"))
        events.emit(EncoderFailed("a_1", FFmpegResult(1, None, "boom")))
        events.emit(SessionEnded("a_1", "a", "p", Outcome("close", "a_1.mp4", None, 4, 0, True, 9),
                                 2.0, 7.0))  # fmt: skip
        events.emit(Recovered("b_2", {"video": "b_2.mp4", "audio": "b_2.wav"}))
        got = parse(metrics.render().decode("utf-8"))
        self.assertEqual(got[("livestream_encoder_failures_total", ())], 1)
        self.assertEqual(got[("livestream_finalize_failures_total", ())], 1)
        self.assertEqual(got[("livestream_recoveries_total", ())], 1)
        self.assertEqual(got[("livestream_recordings_total", (("kind", "video"),))], 2)
        self.assertEqual(got[("livestream_recordings_total", (("kind", "audio"),))], 1)
        self.assertEqual(got[("livestream_finalize_seconds_bucket", (("le", "5.0"),))], 0)
        self.assertEqual(got[("livestream_finalize_seconds_bucket", (("le", "10.0"),))], 1)
        self.assertEqual(got[("livestream_frames_received_total", ())], 4)
        self.assertEqual(got[("livestream_webhook_deliveries_total", ())], 3)
        self.assertEqual(got[("livestream_webhook_failures_total", ())], 2)
        self.assertEqual(got[("livestream_webhook_dropped_total", ())], 1)
        self.assertEqual(got[("livestream_webhook_queue", ())], 4)
