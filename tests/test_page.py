"""The page's routes without a browser: the page and its assets, /api/config, and the viewer
WebSocket at /live/<recording> that relays a live session's chunks as they arrive."""

from __future__ import annotations

import base64
import json
import socket
import struct
from pathlib import Path
from types import SimpleNamespace

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from livestream.auth.access import Access
from livestream.auth.tokens import Verifier, mint
from livestream.sessions.session import SEED_MEDIA, Media, Piece
from livestream.web.live import AUDIO, MAX_HELD_AUDIO, VIDEO, ViewerProtocol
from livestream.web.page import STATIC
from livestream.wire.kinds import Codec, MediaKind
from livestream.wire.opus import OpusHead
from tests.support.http import get
from tests.support.media import h264_access_units, is_keyframe, jpeg_frames, opus_packets, pcm
from tests.support.server import start_server
from tests.support.waiting import sleep
from tests.support.websocket import CLOSE_MSG, HandshakeRefused, connect_msg, open_client

SECRET = b"0123456789abcdef0123456789abcdef-page"
ENCODED = struct.Struct(">BBIq")
ENCODED_MEDIA = Media(Codec.H264, Codec.OPUS, OpusHead(pre_skip=120))


def encoded(kind: int, seq: int, timestamp: int, chunk: bytes, key: bool = False) -> bytes:
    """The encoded binary form: kind, flags (bit 0: key), seq, timestamp (µs), chunk."""
    return ENCODED.pack(kind, 1 if key else 0, seq, timestamp) + chunk


class _Viewer(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.client = self
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.messages.append(payload if isBinary else json.loads(payload))
        waiting, self.factory.waiting = self.factory.waiting, []
        for d in waiting:
            d.callback(None)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(HandshakeRefused(0, reason or ""))
        self.factory.closed.callback(code)


async def open_viewer(port: int, path: str) -> WebSocketClientFactory:
    """A viewer of ``path``; its factory collects ``messages`` (dicts, or bytes for binary)."""
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}")
    factory.protocol = _Viewer
    factory.opened, factory.closed = Deferred(), Deferred()
    factory.messages, factory.waiting = [], []
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10).connect(factory)
    await factory.opened.addTimeout(10, reactor)
    return factory


async def until(factory: WebSocketClientFactory, count: int) -> list:
    """The viewer's messages once there are ``count`` of them."""
    while len(factory.messages) < count:
        d: Deferred[None] = Deferred()
        factory.waiting.append(d)
        await d.addTimeout(10, reactor)
    return factory.messages


def raw_get(port: int, target: str) -> bytes:
    """A request line sent as written (clients normalise ``..`` away before sending)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return b"".join(iter(lambda: s.recv(65536), b""))


class PageRoutesTests(TestCase):
    timeout = 30

    async def serve(self, **kwargs) -> int:
        _, port = await start_server(self, Path(self.mktemp()).absolute(), **kwargs)
        return port

    async def test_browsers_get_the_page_and_other_clients_a_line(self) -> None:
        port = await self.serve()
        page = await get(port, "/", headers={"Accept": "text/html,application/xhtml+xml,*/*"})
        self.assertEqual(page.code, 200)
        self.assertEqual(page.headers.getRawHeaders("content-type"), ["text/html; charset=utf-8"])
        self.assertEqual(await page.content(), (STATIC / "index.html").read_bytes())
        # Opened as /?token=, the page must not hand its URL on as the Referer of what it loads.
        self.assertEqual(page.headers.getRawHeaders("referrer-policy"), ["no-referrer"])
        plain = await get(port, "/")
        self.assertEqual(plain.headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
        self.assertIn(b"connect a WebSocket", await plain.content())

    async def test_assets_with_their_types_and_revalidation(self) -> None:
        port = await self.serve()
        types = {
            "app.js": "text/javascript; charset=utf-8",
            "worklet.js": "text/javascript; charset=utf-8",
            "style.css": "text/css; charset=utf-8",
        }
        for name, kind in types.items():
            response = await get(port, f"/static/{name}")
            self.assertEqual(response.code, 200, name)
            self.assertEqual(response.headers.getRawHeaders("content-type"), [kind])
            self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-cache"])
            self.assertEqual(await response.content(), (STATIC / name).read_bytes())
            modified = response.headers.getRawHeaders("last-modified")[0]
            again = await get(port, f"/static/{name}", headers={"If-Modified-Since": modified})
            self.assertEqual(again.code, 304, name)
        # The page loads only what the package ships: no CDN.
        for name in ("index.html", "app.js"):
            self.assertNotIn("https://", (STATIC / name).read_text())

    async def test_nothing_but_the_assets(self) -> None:
        port = await self.serve()
        for path in ("/static/", "/static/missing.js", "/static/nested/app.js"):
            response = await get(port, path)
            self.assertEqual(response.code, 404, path)
            self.assertEqual((await response.json())["error"], "not_found")
        for target in ("/static/../page.py", "/static/%2e%2e/page.py", "/static/..%2fpage.py"):
            answer = await deferToThread(raw_get, port, target)
            self.assertNotIn(b"import", answer, target)
            self.assertRegex(answer.split(b"\r\n")[0], rb" 40\d ", target)

    async def test_config_tells_the_rate_and_whether_a_token_is_needed(self) -> None:
        open_port = await self.serve(fps=25, resume_grace=7.5)
        response = await get(open_port, "/api/config")
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])
        self.assertEqual(await response.json(), {"fps": 25, "auth": False, "resumeGrace": 7.5})
        # Open with authentication on: the page needs it to know it must ask for a token.
        auth_port = await self.serve(access=Access(Verifier(SECRET)))
        response = await get(auth_port, "/api/config")
        self.assertEqual(
            (response.code, await response.json()),
            (200, {"fps": 15, "auth": True, "resumeGrace": 30.0}),
        )

    async def test_a_viewer_gets_each_chunk_as_it_arrives(self) -> None:
        port = await self.serve(fps=10)
        frames = jpeg_frames(3)
        publisher = await open_client(port)
        publisher.send(connect_msg("cam"))
        name = (await publisher.event("CONNECTED"))["recording"]
        viewer = await open_viewer(port, f"/live/{name}")
        self.assertEqual(await until(viewer, 1), [{"eventType": "LIVE", "recording": name,
                                                   "fps": 10}])  # fmt: skip
        audio = pcm(1000)
        publisher.send_binary(b"\x01" + frames[0])
        publisher.send_binary(b"\x02" + audio[:3])  # an odd byte waits for the next chunk
        publisher.send_binary(b"\x02" + audio[3:])
        publisher.send_binary(b"\x01" + frames[1])
        messages = await until(viewer, 5)
        self.assertEqual(
            messages[1:],
            [VIDEO + frames[0], AUDIO + audio[:2], AUDIO + audio[2:], VIDEO + frames[1]],
        )
        publisher.send(CLOSE_MSG)
        await publisher.event("CLOSED")
        ended = (await until(viewer, 6))[5]
        files = {"video": f"{name}.mp4", "audio": f"{name}.wav"}
        self.assertEqual(ended, {"eventType": "ENDED", "recordings": files})
        self.assertEqual(await viewer.closed.addTimeout(10, reactor), 1000)

    async def test_a_viewer_of_h264_starts_at_a_keyframe(self) -> None:
        """A session of H.264 and Opus: the viewer joins mid-GOP, the client is asked for a
        keyframe ("viewer"), and the viewer's video starts at the next keyframe, each chunk in
        the encoded form with the client's timestamp and key flag; Opus from the start."""
        port = await self.serve(fps=15)
        head, packets = opus_packets(1)
        units = h264_access_units(16)  # a keyframe at 0 and at 15
        publisher = await open_client(port)
        publisher.send(json.dumps({
            "eventType": "CONNECT", "id": "cam", "videoCodec": "h264", "audioCodec": "opus",
            "opusHead": base64.b64encode(head).decode("ascii"),
        }))  # fmt: skip
        name = (await publisher.event("CONNECTED"))["recording"]
        viewer = await open_viewer(port, f"/live/{name}")
        self.assertEqual((await until(viewer, 1))[0], {
            "eventType": "LIVE", "recording": name, "fps": 15, "videoCodec": "h264",
            "audioCodec": "opus", "opusHead": base64.b64encode(head).decode("ascii"),
        })  # fmt: skip
        viewer.closed.addErrback(lambda _: None)
        for seq in range(3):  # the keyframe and two deltas, before the viewer is watching
            publisher.send_binary(encoded(0x21, seq, seq * 66_666, units[seq], seq == 0))
        publisher.send(CLOSE_MSG)  # ends after everything above: a marker for "all relayed"
        await publisher.event("CLOSED")
        messages = await until(viewer, 5)
        # A session's first frame is its keyframe: this viewer, watching from before it, gets
        # all three, numbered from its joining.
        self.assertEqual(messages[1:4], [
            encoded(0x21, seq, seq * 66_666, units[seq], seq == 0) for seq in range(3)
        ])  # fmt: skip
        self.assertEqual(messages[4]["eventType"], "ENDED")

        # A second session, joined after its keyframe: deltas are skipped until the next one.
        publisher = await open_client(port)
        publisher.send(json.dumps({"eventType": "CONNECT", "id": "cam2", "videoCodec": "h264",
                                   "audioCodec": "opus"}))  # fmt: skip
        name = (await publisher.event("CONNECTED"))["recording"]
        for seq in range(3):
            publisher.send_binary(encoded(0x21, seq, seq * 66_666, units[seq], seq == 0))
        viewer = await open_viewer(port, f"/live/{name}")
        live = (await until(viewer, 1))[0]
        self.assertTrue(live["videoCodec"].startswith("avc1.42"), live)  # known by now
        self.assertEqual((await publisher.event("KEYFRAME_REQUEST"))["reason"], "viewer")
        for seq in range(3, 16):
            publisher.send_binary(
                encoded(0x21, seq, seq * 66_666, units[seq], is_keyframe(units[seq]))
            )
        publisher.send_binary(encoded(0x22, 0, 1_000_000, packets[0]))
        messages = await until(viewer, 3)
        # seq counts what the session accepted since the viewer joined: 12 deltas were skipped.
        self.assertEqual(messages[1], encoded(0x21, 12, 15 * 66_666, units[15], True))
        self.assertEqual(messages[2], encoded(0x22, 0, 1_000_000, packets[0]))
        publisher.send(CLOSE_MSG)
        await publisher.event("CLOSED")
        self.assertEqual((await until(viewer, 4))[3]["eventType"], "ENDED")

    async def test_only_live_sessions_and_only_as_a_websocket(self) -> None:
        port = await self.serve()
        with self.assertRaises(HandshakeRefused):
            await open_viewer(port, "/live/nobody_1")
        plain = await get(port, "/live/nobody_1")
        self.assertEqual((plain.code, (await plain.json())["error"]), (400, "websocket_expected"))

    async def test_what_a_viewer_sends_is_dropped_as_it_arrives(self) -> None:
        """A viewer's frames are small, but one message may have any number of them: the
        daemon must not gather them into a message it then ignores."""
        service, port = await start_server(self, Path(self.mktemp()).absolute())
        publisher = await open_client(port)
        publisher.send(connect_msg("cam"))
        name = (await publisher.event("CONNECTED"))["recording"]
        viewer = await open_viewer(port, f"/live/{name}")
        await until(viewer, 1)
        (session,) = service.getServiceNamed("sessions").sessions
        (watching,) = session.watchers
        server_side = watching.__self__
        sent = 256 * 4096
        viewer.client.beginMessage(isBinary=True)
        for _ in range(sent // 4096):
            viewer.client.beginMessageFrame(4096)
            viewer.client.sendMessageFrameData(bytes(4096))
        for _ in range(200):
            if getattr(server_side, "message_data_total_length", 0) >= sent:
                break
            await sleep(0.05)
        self.assertEqual(server_side.message_data_total_length, sent)
        self.assertEqual(sum(map(len, server_side.message_data)), 0)
        viewer.client.endMessage()
        frame = jpeg_frames(1)[0]
        publisher.send_binary(b"\x01" + frame)
        self.assertEqual((await until(viewer, 2))[1], VIDEO + frame)
        viewer.closed.addErrback(lambda _: None)
        publisher.send(CLOSE_MSG)
        await publisher.event("CLOSED")

    async def test_watching_needs_read(self) -> None:
        port = await self.serve(access=Access(Verifier(SECRET)))
        publisher = await open_client(port, f"/?token={mint(SECRET, ('publish',), 300)}")
        publisher.send(connect_msg("cam"))
        name = (await publisher.event("CONNECTED"))["recording"]
        for token in ("", mint(SECRET, ("publish",), 300)):
            with self.assertRaises(HandshakeRefused):
                await open_viewer(port, f"/live/{name}?token={token}")
        viewer = await open_viewer(port, f"/live/{name}?token={mint(SECRET, ('read',), 300)}")
        self.assertEqual((await until(viewer, 1))[0]["eventType"], "LIVE")
        viewer.closed.addErrback(lambda _: None)
        publisher.send(CLOSE_MSG)
        await publisher.event("CLOSED")


class SlowViewerTests(SynchronousTestCase):
    """A viewer whose socket is full is paused: it keeps the latest frame and the last second of
    audio, so memory stays bounded and the recording never waits for it."""

    def setUp(self) -> None:
        self.viewer = ViewerProtocol()
        self.viewer.state = ViewerProtocol.STATE_OPEN
        self.sent: list[bytes] = []
        self.viewer.sendMessage = lambda payload, isBinary: self.sent.append(payload)

    def test_paused_keeps_the_latest_frame_and_the_last_second(self) -> None:
        self.viewer.pauseProducing()
        for frame in (b"f1", b"f2", b"f3"):
            self.viewer.chunk(Piece(MediaKind.VIDEO, frame))
        audio = pcm(MAX_HELD_AUDIO)  # two seconds
        self.viewer.chunk(Piece(MediaKind.AUDIO, audio))
        self.assertEqual(self.sent, [])
        self.viewer.resumeProducing()
        self.assertEqual(self.sent, [AUDIO + audio[-MAX_HELD_AUDIO:], VIDEO + b"f3"])
        self.assertEqual((self.viewer.dropped_frames, self.viewer.dropped_audio_bytes),
                         (2, MAX_HELD_AUDIO))  # fmt: skip
        self.viewer.chunk(Piece(MediaKind.VIDEO, b"f4"))
        self.assertEqual(self.sent[-1], VIDEO + b"f4")

    def test_a_closed_viewer_is_sent_nothing(self) -> None:
        self.viewer.state = ViewerProtocol.STATE_CLOSED
        self.viewer.chunk(Piece(MediaKind.VIDEO, b"f1"))
        self.viewer.pauseProducing()
        self.viewer.resumeProducing()
        self.assertEqual(self.sent, [])


class _Session:
    """What a viewer uses of a session: its name, media, codec string, watchers, its end, and
    the keyframe requests made of it."""

    def __init__(self, media: Media, video_codec: str | None = None) -> None:
        self.name = "cam_1"
        self.media = media
        self.video_codec = video_codec
        self.watchers: list = []
        self.asked: list[str] = []

    def request_keyframe(self, reason: str) -> None:
        self.asked.append(reason)

    def finished(self) -> Deferred:
        return Deferred()


class EncodedViewerTests(SynchronousTestCase):
    """Relaying an H.264 and Opus session: the encoded form, keyframes first, bounded."""

    def open(self, media: Media = ENCODED_MEDIA, video_codec: str | None = None) -> _Session:
        self.viewer = ViewerProtocol()
        self.viewer.factory = SimpleNamespace(fps=15)
        self.viewer.state = ViewerProtocol.STATE_OPEN
        self.sent: list = []
        self.viewer.sendMessage = lambda payload, isBinary: self.sent.append(
            payload if isBinary else json.loads(payload)
        )
        session = _Session(media, video_codec)
        self.viewer._session = session
        self.viewer.onOpen()
        return session

    def frame(self, timestamp: int, key: bool = False) -> Piece:
        return Piece(MediaKind.VIDEO, b"au%d" % timestamp, timestamp, key)

    def test_live_names_the_codecs(self) -> None:
        self.open()
        head = base64.b64encode(OpusHead(pre_skip=120).encode()).decode("ascii")
        self.assertEqual(self.sent, [{"eventType": "LIVE", "recording": "cam_1", "fps": 15,
                                      "videoCodec": "h264", "audioCodec": "opus",
                                      "opusHead": head}])  # fmt: skip
        self.open(Media(Codec.H264), "avc1.42c01f")
        self.assertEqual(self.sent[0]["videoCodec"], "avc1.42c01f")
        self.assertNotIn("audioCodec", self.sent[0])
        # Opus without an opusHead in CONNECT: the default the server records with.
        self.open(Media(Codec.H264, Codec.OPUS))
        self.assertEqual(base64.b64decode(self.sent[0]["opusHead"]), OpusHead().encode())
        # JPEG and PCM: as before, nothing asked of the client.
        session = self.open(SEED_MEDIA)
        self.assertEqual(self.sent, [{"eventType": "LIVE", "recording": "cam_1", "fps": 15}])
        self.assertEqual(session.asked, [])

    def test_joining_mid_gop_waits_for_a_keyframe_and_asks_for_one(self) -> None:
        session = self.open()
        self.assertEqual(session.asked, ["viewer"])
        self.viewer.chunk(self.frame(1))
        self.viewer.chunk(self.frame(2))
        self.viewer.chunk(Piece(MediaKind.AUDIO, b"opus", 5))
        self.viewer.chunk(self.frame(3, key=True))
        self.viewer.chunk(self.frame(4))
        self.assertEqual(self.sent[1:], [encoded(0x22, 0, 5, b"opus"),
                                         encoded(0x21, 2, 3, b"au3", key=True),
                                         encoded(0x21, 3, 4, b"au4")])  # fmt: skip
        # Asked on each skipped frame too: the session sends at most one request a second.
        self.assertEqual(session.asked, ["viewer"] * 3)
        self.assertEqual(self.viewer.dropped_frames, 2)

    def test_a_paused_viewer_drops_video_until_the_next_keyframe(self) -> None:
        session = self.open()
        self.viewer.chunk(self.frame(1, key=True))
        self.viewer.pauseProducing()
        # Nothing of the video is held: no frame after a dropped one decodes alone.
        for t in (2, 3, 4):
            self.viewer.chunk(self.frame(t, key=t == 3))
        self.viewer.resumeProducing()
        self.assertEqual(session.asked, ["viewer", "viewer"])  # asked again once drained
        self.viewer.chunk(self.frame(5))
        self.viewer.chunk(self.frame(6, key=True))
        self.assertEqual(self.sent[1:], [encoded(0x21, 0, 1, b"au1", key=True),
                                         encoded(0x21, 5, 6, b"au6", key=True)])  # fmt: skip
        self.assertEqual(self.viewer.dropped_frames, 4)

    def test_a_paused_viewer_keeps_the_last_second_of_opus(self) -> None:
        self.open()
        self.viewer.pauseProducing()
        packets = [Piece(MediaKind.AUDIO, bytes(40), n * 20_000) for n in range(100)]  # 2 s
        for packet in packets:
            self.viewer.chunk(packet)
        self.assertEqual(self.sent[1:], [])
        self.viewer.resumeProducing()
        self.assertEqual(self.sent[1:], [encoded(0x22, n, n * 20_000, bytes(40))
                                         for n in range(50, 100)])  # fmt: skip
        self.assertEqual(self.viewer.dropped_audio_bytes, 50 * 40)

    def test_held_opus_is_bounded_in_bytes_too(self) -> None:
        """Timestamps are the client's: packets all stamped alike still cannot pile up."""
        self.open()
        self.viewer.pauseProducing()
        for _ in range(200):
            self.viewer.chunk(Piece(MediaKind.AUDIO, bytes(1000), 0))
        self.viewer.resumeProducing()
        self.assertLessEqual(sum(map(len, self.sent[1:])), MAX_HELD_AUDIO)
        self.assertGreater(len(self.sent), 50)
