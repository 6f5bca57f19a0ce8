"""Header values that are not UTF-8 (HTTP allows any octet in them) get the reply any bad value
gets, never a 500 and a traceback in the log."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from livestream.auth.access import Access
from livestream.auth.tokens import Verifier
from tests.support.http import exchange
from tests.support.server import start_server

SECRET = b"0123456789abcdef0123456789abcdef-headers"


def request(path: str, header: bytes) -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
    return head + header + b"\r\n\r\n"


class HeaderBytesTests(TestCase):
    timeout = 30

    async def serve(self, **kwargs) -> int:
        _, port = await start_server(self, Path(self.mktemp()).absolute(), **kwargs)
        return port

    async def answer(self, port: int, path: str, header: bytes) -> bytes:
        answer = await deferToThread(exchange, port, "", request(path, header))
        return answer.split(b"\r\n")[0]

    async def test_authorization(self) -> None:
        port = await self.serve(access=Access(Verifier(SECRET)))
        for value in (b"Bearer \xff\xfe", b"B\xe9arer x"):
            status = await self.answer(port, "/recordings", b"Authorization: " + value)
            self.assertEqual(status, b"HTTP/1.1 401 Unauthorized", value)

    async def test_accept_and_upgrade(self) -> None:
        port = await self.serve()
        cases = (
            ("/", b"Accept: text/html\xff", b"HTTP/1.1 200 OK"),
            ("/live/nobody_1", b"Upgrade: websocket\xff", b"HTTP/1.1 400 Bad Request"),
        )
        for path, header, want in cases:
            self.assertEqual(await self.answer(port, path, header), want, header)
