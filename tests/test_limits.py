"""Limits against greedy, stalled and hostile clients, each while others keep recording."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase

from tests.support.disks import small_disk
from tests.support.http import get_json
from tests.support.media import jpeg_frames, pcm, video_facts, wav_facts
from tests.support.server import start_server
from tests.support.waiting import sleep
from tests.support.websocket import CLOSE_MSG, connect_msg, open_client, record, stream_msg


class RawClient(Protocol):
    """Bytes on a TCP connection, for what no WebSocket library will send."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()
        self._waiting: list[tuple[bytes, Deferred[None]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for marker, d in list(self._waiting):
            if marker in self.received:
                self._waiting.remove((marker, d))
                d.callback(None)

    def connectionLost(self, reason) -> None:
        self.lost.callback(None)

    def seen(self, marker: bytes, timeout: float = 10) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if marker in self.received:
            d.callback(None)
        else:
            self._waiting.append((marker, d))
        return d.addTimeout(timeout, reactor)


async def raw_connect(port: int) -> RawClient:
    return await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawClient())


UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class TimeLimitTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.media = Path(self.mktemp()).absolute()

    async def test_idle_session_is_finished_and_closed(self) -> None:
        _, port = await start_server(self, self.media, idle_timeout=0.6)
        client, connected, _ = await record(port, "quiet", jpeg_frames(8), [pcm(200)], close=False)
        error = await client.event("ERROR", timeout=5)
        closed = await client.event("CLOSED")
        _, code, _ = await client.closed
        self.assertEqual((error["code"], code), ("idle_timeout", 1008))
        name = connected["recording"]
        self.assertEqual(closed["recordings"], {"video": f"{name}.mp4", "audio": f"{name}.wav"})
        self.assertEqual(video_facts(self.media / "video" / f"{name}.mp4").frames, 8)

    async def test_connection_without_connect_is_closed(self) -> None:
        _, port = await start_server(self, self.media, idle_timeout=0.5)
        client = await open_client(port)
        self.assertEqual((await client.event("ERROR", timeout=5))["code"], "idle_timeout")
        _, code, _ = await client.closed
        self.assertEqual(code, 1008)

    async def test_session_duration_limit(self) -> None:
        _, port = await start_server(self, self.media, max_session_seconds=1.0)
        client, connected, _ = await record(port, "long", jpeg_frames(5), close=False)
        self.assertEqual((await client.event("ERROR", timeout=5))["code"], "limit_reached")
        closed = await client.event("CLOSED")
        _, code, _ = await client.closed
        self.assertEqual(code, 1008)
        self.assertEqual(
            video_facts(self.media / "video" / closed["recordings"]["video"]).frames, 5
        )

    async def test_stalled_request_headers_are_dropped(self) -> None:
        """A slowloris client is cut off at the deadline while a real session records."""
        _, port = await start_server(self, self.media, handshake_timeout=1.0)
        slow = await raw_connect(port)
        slow.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = reactor.seconds()
        for i in range(8):
            slow.transport.write(b"X-Drip-%d: a\r\n" % i)
            await sleep(0.1)
        _, _, closed = await record(port, "honest", jpeg_frames(5))
        await slow.lost.addTimeout(5, reactor)
        self.assertLess(reactor.seconds() - started, 3.0)
        self.assertEqual(
            video_facts(self.media / "video" / closed["recordings"]["video"]).frames, 5
        )


class SizeLimitTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.media = Path(self.mktemp()).absolute()

    async def test_64_mib_message_is_refused_from_its_header(self) -> None:
        """The announced length alone gets 1009: nothing of the payload needs to arrive."""
        _, port = await start_server(self, self.media)
        raw = await raw_connect(port)
        self.addCleanup(lambda: raw.lost if raw.transport.loseConnection() is None else None)
        raw.transport.write(UPGRADE)
        await raw.seen(b"\r\n\r\n")
        self.assertIn(b"101", raw.received.split(b"\r\n")[0])
        header = bytes([0x81, 0x80 | 127]) + (64 << 20).to_bytes(8, "big") + b"\0\0\0\0"
        raw.transport.write(header)
        await raw.seen(b"\x88")  # a close frame comes back
        close = raw.received[raw.received.index(b"\x88") :]
        self.assertEqual(int.from_bytes(close[2:4], "big"), 1009)

    async def test_session_byte_limit(self) -> None:
        frames = jpeg_frames(10)
        limit = sum(len(f) for f in frames[:6]) + 10
        _, port = await start_server(self, self.media, max_session_bytes=limit)
        client, _, _ = await record(port, "greedy", frames, close=False)
        self.assertEqual((await client.event("ERROR"))["code"], "limit_reached")
        closed = await client.event("CLOSED")
        _, code, _ = await client.closed
        self.assertEqual(code, 1008)
        self.assertEqual(
            video_facts(self.media / "video" / closed["recordings"]["video"]).frames, 6
        )

    async def test_sessions_beyond_the_maximum_are_refused(self) -> None:
        _, port = await start_server(self, self.media, max_sessions=2)
        first, _, _ = await record(port, "one", jpeg_frames(3), close=False)
        second, _, _ = await record(port, "two", jpeg_frames(3), close=False)
        flood = []
        for i in range(5):
            extra = await open_client(port)
            extra.send(connect_msg(f"extra-{i}"))
            flood.append(extra)
        for extra in flood:
            self.assertEqual((await extra.event("ERROR"))["code"], "too_many_sessions")
            _, code, _ = await extra.closed
            self.assertEqual(code, 1013)
        for client in (first, second):
            client.send(stream_msg("VIDEO", jpeg_frames(4)[3]))
            client.send(CLOSE_MSG)
            closed = await client.event("CLOSED")
            video = video_facts(self.media / "video" / closed["recordings"]["video"])
            self.assertEqual(video.frames, 4)


class DiskTests(TestCase):
    """On a real small filesystem (tmpfs; needs root to mount, skipped otherwise)."""

    timeout = 90

    async def test_new_sessions_refused_below_the_reserve(self) -> None:
        media = small_disk(self, 8)
        _, port = await start_server(self, media, min_free_bytes=16 << 20)
        client = await open_client(port)
        client.send(connect_msg("late"))
        self.assertEqual((await client.event("ERROR"))["code"], "insufficient_storage")
        _, code, _ = await client.closed
        self.assertEqual(code, 1013)

    async def test_disk_filling_up_finishes_sessions_and_the_daemon_goes_on(self) -> None:
        media = small_disk(self, 24)
        _, port = await start_server(self, media, min_free_bytes=12 << 20)
        client = await open_client(port)
        client.send(connect_msg("filler"))
        name = (await client.event("CONNECTED"))["recording"]
        frames = jpeg_frames(30, "640x480", "mandelbrot")
        error = client.event("ERROR", timeout=60)
        sent = 0
        while not error.called and sent < 3000:
            client.send(stream_msg("VIDEO", frames[sent % 30]))
            client.send(stream_msg("AUDIO", pcm(44100)))
            sent += 1
            await sleep(0.01)
        self.assertEqual((await error)["code"], "storage_full")
        closed = await client.event("CLOSED")
        _, code, _ = await client.closed
        self.assertEqual(code, 1011)
        self.assertEqual(closed["recordings"], {"video": f"{name}.mp4", "audio": f"{name}.wav"})
        self.assertGreater(video_facts(media / "video" / f"{name}.mp4").frames, 10)
        wav = wav_facts(media / "audio" / f"{name}.wav")
        self.assertTrue(wav.riff_size_ok)
        self.assertEqual(wav.data, pcm(44100) * (wav.samples // 44100))
        self.assertEqual(await get_json(port, "/recordings"),
                         {"video": [f"{name}.mp4"], "audio": [f"{name}.wav"]})  # fmt: skip

    async def test_out_of_space_mid_write_keeps_what_was_written(self) -> None:
        """With no reserve at all, a real ENOSPC ends the session with a valid WAV."""
        media = small_disk(self, 3)
        _, port = await start_server(self, media)
        client = await open_client(port)
        client.send(connect_msg("overflow"))
        name = (await client.event("CONNECTED"))["recording"]
        error = client.event("ERROR", timeout=30)
        for i in range(40):
            if error.called:
                break
            client.send(stream_msg("AUDIO", pcm(100_000, seed=i % 3)))
            await sleep(0.01)
        self.assertEqual((await error)["code"], "storage_full")
        closed = await client.event("CLOSED")
        self.assertEqual(closed["recordings"]["audio"], f"{name}.wav")
        wav = wav_facts(media / "audio" / f"{name}.wav")
        self.assertTrue(wav.riff_size_ok)
        self.assertGreater(wav.samples, 100_000)
        self.assertEqual(os.listdir(media / "temp"), [])
