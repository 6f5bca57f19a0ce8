"""What the HTTP side answers when a request is not one it serves, or a route fails: JSON with
the fitting status, never a traceback, and a failure logged once."""

from __future__ import annotations

import json
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.support import pcm, record, start_server
from tests.test_http_api import raw


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
