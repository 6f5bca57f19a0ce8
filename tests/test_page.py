"""The page's routes without a browser: the page and its assets, /api/config, and the viewer
WebSocket at /live/<recording> that relays a live session's chunks as they arrive."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from livestream.auth.access import Access
from livestream.auth.tokens import Verifier, mint
from livestream.sessions.session import Piece
from livestream.web.live import AUDIO, MAX_HELD_AUDIO, VIDEO, ViewerProtocol
from livestream.web.page import STATIC
from livestream.wire.kinds import MediaKind
from tests.support.http import get
from tests.support.media import jpeg_frames, pcm
from tests.support.server import start_server
from tests.support.waiting import sleep
from tests.support.websocket import CLOSE_MSG, HandshakeRefused, connect_msg, open_client

SECRET = b"0123456789abcdef0123456789abcdef-page"


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
