"""HTTP requests to a daemon on the loopback, each over a fresh connection that closes after the
answer, so no pooled connection outlives a test: through treq, or written byte for byte where no
client may normalise the request (``raw`` on the reactor, ``exchange`` on a blocking socket, for
a thread)."""

from __future__ import annotations

import json
import socket

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol
from twisted.web.client import HTTPConnectionPool


async def get(port: int, path: str, headers: dict[str, str] | None = None):
    """GET over a fresh connection that closes after the answer; ConnectionError if nothing
    listens."""
    try:
        return await treq.get(
            f"http://127.0.0.1:{port}{path}",
            headers=headers,
            timeout=10,
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
    except (ConnectError, ConnectionRefusedError) as e:
        raise ConnectionError(str(e)) from None


async def get_json(port: int, path: str) -> object:
    response = await get(port, path)
    assert response.code == 200, response.code
    return await response.json()


class _Raw(Protocol):
    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.done.callback(self.received)


async def raw(port: int, method: str, target: str, headers: str = "") -> tuple[int, dict, bytes]:
    """A request sent byte for byte (no client normalises the path); returns status, headers
    (lower-case names) and the body exactly as received, until the server closes."""
    request = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n"
    proto = _Raw(request.encode("latin-1"))
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10), proto)
    data = await proto.done.addTimeout(10, reactor)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(
        (k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])
    )
    if fields.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return int(lines[0].split()[1]), fields, body


def _dechunk(data: bytes) -> bytes:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        body, data = body + data[:size], data[size + 2 :]


def exchange(port: int, head: str, body: bytes = b"") -> bytes:
    """Send a request as written; what the server answers until it closes (or resets)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode("ascii") + body)
        try:
            for data in iter(lambda: s.recv(65536), b""):
                answer += data
        except ConnectionResetError:
            pass
    return answer


def status_and_document(answer: bytes) -> tuple[bytes, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)
