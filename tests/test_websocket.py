"""The seed's clients against the whole daemon: real sockets, real ffmpeg, decoded recordings."""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path

from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.fakes import stand_in
from tests.support.http import get, get_json
from tests.support.media import jpeg_frames, pcm, video_facts, wav_facts
from tests.support.server import start_server
from tests.support.waiting import sleep
from tests.support.websocket import CLOSE_MSG, connect_msg, open_client, record, stream_msg

NAME = re.compile(r"^[A-Za-z0-9._-]+_[0-9]{13}$")


class RecordingTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.media = Path(self.mktemp()).absolute()

    async def serve(self, **options) -> int:
        self.service, port = await start_server(self, self.media, **options)
        return port

    def temp_files(self) -> list[str]:
        return sorted(os.listdir(self.media / "temp"))

    async def test_seed_client_gets_mp4_and_wav(self) -> None:
        """The seed README's session: JPEG frames and PCM in, H.264 MP4 and WAV out, listed."""
        port = await self.serve()
        frames = jpeg_frames(45)
        audio = [pcm(2940, seed=i) for i in range(45)]
        _, connected, closed = await record(port, "user@example.com", frames, audio)

        self.assertEqual(connected["id"], "user@example.com")
        name = connected["recording"]
        self.assertRegex(name, NAME)
        self.assertTrue(name.startswith("user_example.com_"))
        self.assertEqual(closed["recordings"], {"video": f"{name}.mp4", "audio": f"{name}.wav"})
        self.assertEqual(
            await get_json(port, "/recordings"),
            {"video": [f"{name}.mp4"], "audio": [f"{name}.wav"]},
        )
        video = video_facts(self.media / "video" / f"{name}.mp4")
        self.assertEqual(
            (video.codec, video.pix_fmt, video.rate, video.frames, video.width, video.height),
            ("h264", "yuv420p", Fraction(15), 45, 320, 240),
        )
        self.assertAlmostEqual(video.duration, 3.0, delta=0.1)
        self.assertTrue(video.faststart, "moov must come before mdat")
        wav = wav_facts(self.media / "audio" / f"{name}.wav")
        self.assertEqual((wav.rate, wav.channels, wav.sample_width), (44100, 1, 2))
        self.assertTrue(wav.riff_size_ok)
        self.assertEqual(wav.data, b"".join(audio))
        self.assertEqual(self.temp_files(), [])

    async def test_configured_rate_keeps_one_frame_per_frame(self) -> None:
        port = await self.serve(fps=25)
        _, _, closed = await record(port, "cam", jpeg_frames(40))
        video = video_facts(self.media / "video" / closed["recordings"]["video"])
        self.assertEqual((video.rate, video.frames), (Fraction(25), 40))
        self.assertIsNone(closed["recordings"]["audio"])

    async def test_odd_sizes_and_size_changes_still_record(self) -> None:
        """libx264 refuses odd sizes; the old server lost such recordings whole."""
        port = await self.serve()
        frames = jpeg_frames(10, "641x481") + jpeg_frames(10, "320x240") + jpeg_frames(5, "97x55")
        _, _, closed = await record(port, "odd", frames)
        video = video_facts(self.media / "video" / closed["recordings"]["video"])
        self.assertEqual((video.frames, video.width, video.height), (25, 640, 480))
        self.assertEqual(video.pix_fmt, "yuv420p")

    async def test_audio_only_and_empty_sessions(self) -> None:
        port = await self.serve()
        _, _, closed = await record(port, "mic", audio=[pcm(1000), pcm(1001, seed=1)])
        self.assertIsNone(closed["recordings"]["video"])
        wav = wav_facts(self.media / "audio" / closed["recordings"]["audio"])
        self.assertEqual(wav.data, pcm(1000) + pcm(1001, seed=1))
        _, _, closed = await record(port, "nothing")
        self.assertEqual(closed["recordings"], {"video": None, "audio": None})
        self.assertEqual(self.temp_files(), [])

    async def test_binary_stream_records_the_same(self) -> None:
        """The binary fast path (kind byte + raw chunk) gives what the JSON path gives."""
        port = await self.serve()
        frames = jpeg_frames(30)
        audio = [pcm(1470, seed=i) for i in range(30)]
        client = await open_client(port)
        client.send(connect_msg("fast"))
        await client.event("CONNECTED")
        for frame, chunk in zip(frames, audio, strict=True):
            client.send_binary(b"\x01" + frame)
            client.send_binary(b"\x02" + chunk)
        client.send(CLOSE_MSG)
        closed = await client.event("CLOSED")
        video = video_facts(self.media / "video" / closed["recordings"]["video"])
        self.assertEqual((video.frames, video.codec, video.pix_fmt), (30, "h264", "yuv420p"))
        wav = wav_facts(self.media / "audio" / closed["recordings"]["audio"])
        self.assertEqual(wav.data, b"".join(audio))

    async def test_same_id_at_once_never_shares_a_file(self) -> None:
        port = await self.serve()
        clients = [await open_client(port) for _ in range(4)]
        for client in clients:
            client.send(connect_msg("same"))
        names = [(await c.event("CONNECTED"))["recording"] for c in clients]
        self.assertEqual(len(set(names)), 4)
        for i, client in enumerate(clients):
            client.send(stream_msg("VIDEO", jpeg_frames(4)[i]))
            client.send(stream_msg("AUDIO", pcm(100, seed=i)))
            client.send(CLOSE_MSG)
        for i, client in enumerate(clients):
            closed = await client.event("CLOSED")
            wav = wav_facts(self.media / "audio" / closed["recordings"]["audio"])
            self.assertEqual(wav.data, pcm(100, seed=i))
        listing = await get_json(port, "/recordings")
        self.assertEqual(len(listing["video"]), 4)


class EndingTests(TestCase):
    """Each way a session ends gives complete, listed files, finalized exactly once."""

    timeout = 120

    def setUp(self) -> None:
        self.media = Path(self.mktemp()).absolute()

    async def wait_listed(self, port: int, count: int) -> dict:
        for _ in range(300):
            listing = await get_json(port, "/recordings")
            if len(listing["video"]) + len(listing["audio"]) >= count:
                return listing
            await sleep(0.05)
        self.fail(f"not listed: {listing}")

    async def test_client_vanishing_without_close(self) -> None:
        _, port = await start_server(self, self.media)
        frames = jpeg_frames(30)
        client, connected, _ = await record(port, "gone", frames, [pcm(500)], close=False)
        client.vanish()
        listing = await self.wait_listed(port, 2)
        name = connected["recording"]
        self.assertEqual(listing, {"video": [f"{name}.mp4"], "audio": [f"{name}.wav"]})
        self.assertEqual(video_facts(self.media / "video" / f"{name}.mp4").frames, 30)
        self.assertEqual(os.listdir(self.media / "temp"), [])

    async def test_close_then_disconnect_finalizes_once(self) -> None:
        service, port = await start_server(self, self.media)
        client, connected, _ = await record(port, "hasty", jpeg_frames(20), close=False)
        client.send(CLOSE_MSG)
        client.vanish()
        listing = await self.wait_listed(port, 1)
        self.assertEqual(listing["video"], [connected["recording"] + ".mp4"])
        self.assertEqual(video_facts(self.media / "video" / listing["video"][0]).frames, 20)
        for _ in range(100):
            if not service.getServiceNamed("sessions").sessions:
                break
            await sleep(0.05)
        self.assertEqual(service.getServiceNamed("sessions").sessions, ())
        self.assertEqual(os.listdir(self.media / "temp"), [])

    async def test_close_handshake_while_replies_are_pending(self) -> None:
        """A reply to a closing connection must not stop the processing of what came before."""
        _, port = await start_server(self, self.media)
        frames = jpeg_frames(40)
        client, connected, _ = await record(port, "leaving", frames[:20], close=False)
        client.send("not json")
        for frame in frames[20:]:
            client.send(stream_msg("VIDEO", frame))
        client.send("still not json")
        client.proto.sendClose(1000)
        await client.closed
        listing = await self.wait_listed(port, 1)
        self.assertEqual(video_facts(self.media / "video" / listing["video"][0]).frames, 40)

    async def test_service_stop_finishes_live_sessions_with_1012(self) -> None:
        service, port = await start_server(self, self.media)
        client, connected, _ = await record(port, "live", jpeg_frames(25), [pcm(300)], close=False)
        await sleep(0.2)
        stopping = service.stopService()
        closed = await client.event("CLOSED")
        _, code, _ = await client.closed
        await stopping
        self.assertEqual(code, 1012)
        name = connected["recording"]
        self.assertEqual(closed["recordings"], {"video": f"{name}.mp4", "audio": f"{name}.wav"})
        self.assertEqual(video_facts(self.media / "video" / f"{name}.mp4").frames, 25)
        self.assertEqual(os.listdir(self.media / "temp"), [])


class BadInputTests(TestCase):
    """Hostile or broken messages get an ERROR each; the connection and other sessions go on."""

    timeout = 120

    async def test_each_bad_message_gets_its_error(self) -> None:
        media = Path(self.mktemp()).absolute()
        _, port = await start_server(self, media)
        bystander, by_connected, _ = await record(port, "bystander", jpeg_frames(10), close=False)
        client = await open_client(port)
        cases = [
            ("STREAM before CONNECT", stream_msg("AUDIO", pcm(10)), "not_connected"),
            ("CLOSE before CONNECT", CLOSE_MSG, "not_connected"),
            ("not JSON", "{nope", "invalid_json"),
            ("JSON null", "null", "invalid_message"),
            ("a list", "[1, 2]", "invalid_message"),
            ("unknown eventType", '{"eventType": "DANCE"}', "unknown_event_type"),
            ("eventType not a string", '{"eventType": 7}', "invalid_message"),
            ("id missing", '{"eventType": "CONNECT"}', "invalid_id"),
            ("id a number", connect_msg(42), "invalid_id"),
            ("id null", connect_msg(None), "invalid_id"),
            ("id empty", connect_msg(""), "invalid_id"),
            ("id too long", connect_msg("x" * 10000), "invalid_id"),
        ]
        for label, text, code in cases:
            client.send(text)
            error = await client.event("ERROR")
            self.assertEqual(error["code"], code, label)
            self.assertIsInstance(error["message"], str)
        client.send(connect_msg("../../etc/passwd"))
        name = (await client.event("CONNECTED"))["recording"]
        self.assertTrue(name.startswith(".._.._etc_passwd_") or name.startswith("_"), name)
        self.assertNotIn("/", name)
        stream_cases = [
            ('{"eventType": "STREAM", "mediaSourceType": "SMELL", "encodedMediaChunk": "AAAA"}',
             "invalid_media_source_type"),
            ('{"eventType": "STREAM", "mediaSourceType": null}', "invalid_media_source_type"),
            ('{"eventType": "STREAM", "mediaSourceType": "AUDIO", "encodedMediaChunk": "%%%"}',
             "invalid_base64"),
            ('{"eventType": "STREAM", "mediaSourceType": "AUDIO", "encodedMediaChunk": 5}',
             "invalid_chunk"),
            ('{"eventType": "STREAM", "mediaSourceType": "AUDIO", "encodedMediaChunk": ""}',
             "invalid_chunk"),
            (stream_msg("VIDEO", b"\x89PNG\r\n\x1a\n not a jpeg"), "invalid_jpeg"),
            (connect_msg("again"), "already_connected"),
        ]  # fmt: skip
        frames = jpeg_frames(6)
        for (text, code), frame in zip(stream_cases, frames, strict=False):
            client.send(stream_msg("VIDEO", frame))
            client.send(text)
            self.assertEqual((await client.event("ERROR"))["code"], code, text)
        client.send_binary(b"\x07\x01\x02")
        self.assertEqual((await client.event("ERROR"))["code"], "invalid_media_source_type")
        client.send_binary(b"\x01")
        self.assertEqual((await client.event("ERROR"))["code"], "invalid_chunk")
        client.send(CLOSE_MSG)
        closed = await client.event("CLOSED")
        self.assertEqual(video_facts(media / "video" / closed["recordings"]["video"]).frames, 6)
        # Nothing but the tree's own directories (and the daemon's index).
        self.assertEqual(sorted(os.listdir(media)), [".index", "audio", "posters", "temp", "video"])

        bystander.send(CLOSE_MSG)
        by_closed = await bystander.event("CLOSED")
        self.assertEqual(by_closed["recordings"]["video"], by_connected["recording"] + ".mp4")
        self.assertEqual(video_facts(media / "video" / by_closed["recordings"]["video"]).frames, 10)

    async def test_invalid_utf8_text_closes_with_1007(self) -> None:
        media = Path(self.mktemp()).absolute()
        _, port = await start_server(self, media)
        client = await open_client(port)
        client.proto.sendMessage(b'{"eventType": "CONNECT", "id": "\xff\xfe"}', isBinary=False)
        self.assertEqual((await client.event("ERROR"))["code"], "invalid_utf8")
        _, code, _ = await client.closed
        self.assertEqual(code, 1007)

    async def test_oversized_message_closes_with_1009(self) -> None:
        media = Path(self.mktemp()).absolute()
        _, port = await start_server(self, media, max_message_size=64 * 1024)
        client = await open_client(port)
        client.send(connect_msg("big"))
        await client.event("CONNECTED")
        client.send(stream_msg("AUDIO", bytes(100 * 1024)))
        _, code, _ = await client.closed
        self.assertEqual(code, 1009)
        for _ in range(100):
            if (await get_json(port, "/recordings"))["audio"] == [] and not os.listdir(
                media / "temp"
            ):
                break
            await sleep(0.05)
        self.assertEqual(os.listdir(media / "temp"), [])


class EncoderTests(TestCase):
    timeout = 120

    async def test_slow_encoder_pauses_the_socket_and_loses_nothing(self) -> None:
        """While ffmpeg does not read, the daemon stops reading the client instead of buffering."""
        tmp = Path(self.mktemp()).absolute()
        slow = stand_in(tmp / "bin", 'case "$*" in *pipe:0*) sleep 3;; esac\nexec "$REAL" "$@"')
        service, port = await start_server(self, tmp / "media", ffmpeg=slow)
        frames = jpeg_frames(120, "640x480", "mandelbrot")
        sent = sum(len(f) for f in frames)
        client, connected, _ = await record(port, "flood", frames, close=False)
        await sleep(1.5)
        (session,) = service.getServiceNamed("sessions").sessions
        accepted = session.frames
        self.assertLess(accepted, 30, f"{accepted} of 120 frames ({sent} bytes) taken in a stall")
        client.send(CLOSE_MSG)
        closed = await client.event("CLOSED", timeout=90)
        video = video_facts(tmp / "media" / "video" / closed["recordings"]["video"])
        self.assertEqual(video.frames, 120)

    async def test_encoders_that_keep_dying_are_given_up_and_what_they_wrote_is_kept(self) -> None:
        """Every encoder of this ffmpeg is killed 0.6 s after it starts: the first two are
        replaced, the third is not (three deaths in a minute); the pieces are joined."""
        tmp = Path(self.mktemp()).absolute()
        dying = stand_in(
            tmp / "bin",
            'case "$*" in *pipe:0*) exec timeout -s KILL 0.6 "$REAL" "$@";; esac\n'
            'exec "$REAL" "$@"',
        )
        _, port = await start_server(self, tmp / "media", ffmpeg=dying)
        client = await open_client(port)
        client.send(connect_msg("fragile"))
        await client.event("CONNECTED")
        frames = jpeg_frames(60)
        for i, frame in enumerate(frames):
            client.send(stream_msg("VIDEO", frame))
            client.send(stream_msg("AUDIO", pcm(2940, seed=i)))
            await sleep(1 / 15)
        client.send(CLOSE_MSG)
        closed = await client.event("CLOSED")
        errors = [e["code"] for e in client.events if e["eventType"] == "ERROR"]
        self.assertEqual(errors, ["encoder_replaced"] * 2 + ["encoder_failed"])
        video = video_facts(tmp / "media" / "video" / closed["recordings"]["video"])
        self.assertGreater(video.frames, 5)
        self.assertLess(video.frames, 60)
        wav = wav_facts(tmp / "media" / "audio" / closed["recordings"]["audio"])
        self.assertEqual(wav.samples, 60 * 2940)

    async def test_encoder_failing_at_the_end_is_reported_before_closed(self) -> None:
        """A non-zero exit after the input ends is the client's business too."""
        tmp = Path(self.mktemp()).absolute()
        failing = stand_in(
            tmp / "bin",
            '"$REAL" "$@"; status=$?\ncase "$*" in *pipe:0*) echo "muxer: disk on fire" >&2; '
            "exit 1;; esac\nexit $status",
        )
        _, port = await start_server(self, tmp / "media", ffmpeg=failing)
        logged: list[str] = []
        observer = lambda event: logged.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        client, _, _ = await record(port, "unlucky", jpeg_frames(15), close=False)
        client.send(CLOSE_MSG)
        error = await client.event("ERROR")
        closed = await client.event("CLOSED")
        self.assertEqual(error["code"], "encoder_failed")
        self.assertNotIn("disk on fire", error["message"])
        self.assertTrue(any("exit status 1: muxer: disk on fire" in line for line in logged))
        video = video_facts(tmp / "media" / "video" / closed["recordings"]["video"])
        self.assertEqual(video.frames, 15)


class HTTPTests(TestCase):
    timeout = 60

    async def test_root_without_upgrade_explains_itself(self) -> None:
        _, port = await start_server(self, Path(self.mktemp()).absolute())
        response = await get(port, "/")
        self.assertEqual(response.code, 200)
        self.assertIn(b"WebSocket", await response.content())
        self.assertEqual(await get_json(port, "/recordings"), {"video": [], "audio": []})


del reactor
