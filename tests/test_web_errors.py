"""What the HTTP side answers when a request is not one it serves, or a route fails: JSON with
the fitting status, never a traceback, and a failure logged once."""

from __future__ import annotations

import json
from pathlib import Path

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from livestream.auth.access import OPEN
from livestream.library.index import RecordingIndex
from livestream.library.tree import MediaTree
from livestream.web.page import Page
from livestream.web.site import make_site
from tests.support.http import exchange, raw, status_and_document
from tests.support.media import pcm
from tests.support.server import start_server
from tests.support.websocket import record


class DiskOnFire(Exception):
    pass


class BrokenIndex(RecordingIndex):
    """An index whose listing fails in a way no route expects."""

    def seed_listing(self) -> Deferred[Path]:
        return fail(DiskOnFire("/srv/media: the disk is on fire"))


class RootMethodTests(TestCase):
    timeout = 30

    async def test_root_answers_get_and_head_only(self) -> None:
        _, port = await start_server(self, Path(self.mktemp()).absolute())
        for method in ("GET", "HEAD"):
            status, headers, body = await raw(port, method, "/")
            self.assertEqual(status, 200, method)
            self.assertEqual(headers["content-type"], "text/plain; charset=utf-8", method)
        for method in ("POST", "PUT", "DELETE", "PATCH", "TRACE", "OPTIONS", "FOO"):
            status, headers, body = await raw(port, method, "/", "Content-Length: 0\r\n")
            self.assertEqual(status, 405, method)
            self.assertEqual(headers["allow"], "GET, HEAD", method)
            self.assertEqual(headers["content-type"], "application/json", method)
            self.assertEqual(json.loads(body)["error"], "method_not_allowed", method)
        # An upgrade is a GET: asked for with another method, it is refused like any other.
        upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        status, headers, _ = await raw(port, "POST", "/", upgrade + "Content-Length: 0\r\n")
        self.assertEqual((status, headers["allow"]), (405, "GET, HEAD"))
        _, connected, closed = await record(port, "after-405", audio=[pcm(441)])
        self.assertEqual(closed["recordings"]["audio"], connected["recording"] + ".wav")

    async def test_allow_lists_the_methods_in_order(self) -> None:
        _, port = await start_server(self, Path(self.mktemp()).absolute())
        for path, allowed in (("/healthz", "GET, HEAD"),
                              ("/recordings/video/a_1.mp4", "DELETE, GET, HEAD")):  # fmt: skip
            status, headers, _ = await raw(port, "PUT", path, "Content-Length: 0\r\n")
            self.assertEqual((status, headers["allow"]), (405, allowed), path)


class InternalErrorTests(TestCase):
    timeout = 30

    def serve(self, store: MediaTree) -> int:
        store.ensure()
        index = BrokenIndex(reactor, store)
        index.startService()
        self.addCleanup(index.stopService)
        site = make_site(store, WebSocketServerFactory(), Page(lambda: (), OPEN, 15), index=index)
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        return listening.getHost().port

    async def test_a_failing_route_is_a_json_500_and_one_logged_failure(self) -> None:
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        port = self.serve(MediaTree(Path(self.mktemp()).absolute()))
        status, headers, body = await raw(port, "GET", "/recordings?token=abc")
        self.assertEqual(status, 500)
        self.assertEqual(headers["content-type"], "application/json")
        document = json.loads(body)
        self.assertEqual(document["error"], "internal_error")
        self.assertIsInstance(document["message"], str)
        for secret in (b"Traceback", b"DiskOnFire", b"on fire", b"/srv/media"):
            self.assertNotIn(secret, body)
        self.assertEqual(len(self.flushLoggedErrors(DiskOnFire)), 1)
        failures = [e for e in logged if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertEqual((failures[0]["method"], failures[0]["path"]), ("GET", "/recordings"))
        # Routing's own answers are not failures.
        status, _, body = await raw(port, "GET", "/nowhere")
        self.assertEqual((status, json.loads(body)["error"]), (404, "not_found"))
        status, _, _ = await raw(port, "PUT", "/recordings", "Content-Length: 0\r\n")
        self.assertEqual(status, 405)
        self.assertEqual(len([e for e in logged if "log_failure" in e]), 1)


class NonUtf8URLTests(TestCase):
    timeout = 30

    async def test_a_path_or_host_that_is_not_utf8_is_a_json_400(self) -> None:
        _, port = await start_server(self, Path(self.mktemp()).absolute())
        for path in ("/recordings/audio/%ff_1.wav", "/recordings/video/%c3%28_1.mp4", "/%ff"):
            status, headers, body = await raw(port, "GET", path)
            self.assertEqual(status, 400, path)
            self.assertEqual(headers["content-type"], "application/json", path)
            self.assertEqual(json.loads(body)["error"], "bad_url", path)
        request = b"GET /recordings HTTP/1.1\r\nHost: h\xffst\r\nConnection: close\r\n\r\n"
        status, document = status_and_document(await deferToThread(exchange, port, "", request))
        self.assertEqual((status, document["error"]), (b"HTTP/1.1 400 Bad Request", "bad_url"))
        # Nothing logged as an error (trial would fail the test on it), and UTF-8 still routes.
        self.assertEqual(self.flushLoggedErrors(), [])
        status, _, body = await raw(port, "GET", "/recordings/audio/%c3%a9_1.wav")
        self.assertEqual((status, json.loads(body)["error"]), (404, "not_found"))
