"""No route takes a request body: one over the bound is answered 413 before it is stored, with
or without a token, declared by Content-Length or sent in chunks."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from livestream.auth.access import Access
from livestream.auth.tokens import Verifier
from livestream.web.bodies import MAX_BODY
from tests.support.http import exchange, status_and_document
from tests.support.server import start_server

SECRET = b"0123456789abcdef0123456789abcdef-bodies"


class BodyTests(TestCase):
    timeout = 30

    async def serve(self, **kwargs) -> int:
        _, port = await start_server(self, Path(self.mktemp()).absolute(), **kwargs)
        return port

    async def test_a_declared_large_body_is_refused_before_it_is_sent(self) -> None:
        port = await self.serve(access=Access(Verifier(SECRET)))
        for method, path in (("POST", "/"), ("DELETE", "/recordings/video/a_1.mp4")):
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 30}\r\n"
                "Expect: 100-continue\r\n\r\n"
            )
            answer = await deferToThread(exchange, port, head)
            status, document = status_and_document(answer)
            self.assertEqual(status, b"HTTP/1.1 413 Content Too Large", method)
            self.assertEqual(document["error"], "body_too_large")
            self.assertNotIn(b"100 Continue", answer)

    async def test_a_chunked_body_is_refused_once_it_passes_the_bound(self) -> None:
        port = await self.serve()
        chunk = b"%x\r\n%s\r\n" % (MAX_BODY, bytes(MAX_BODY))
        head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        answer = await deferToThread(exchange, port, head, chunk * 2 + b"0\r\n\r\n")
        self.assertEqual(answer.split(b"\r\n")[0], b"HTTP/1.1 413 Content Too Large")

    async def test_a_small_body_is_let_through(self) -> None:
        port = await self.serve()
        head = (
            "DELETE /recordings/video/a_1.mp4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Length: {MAX_BODY}\r\n\r\n"
        )
        answer = await deferToThread(exchange, port, head, bytes(MAX_BODY))
        self.assertTrue(answer.startswith(b"HTTP/1.1 404 Not Found\r\n"), answer)
        self.assertIn(b'{"error": "not_found", "message": "no such recording"}', answer)
