"""A WebSocket client written like the seed's clients, the messages it sends, and whole sessions.

The client also reads the replies the seed never sent (``CONNECTED``, ``ERROR``, ``CLOSED``), so a
test can wait for each one, and tells a handshake the server refused from one that failed.
"""

from __future__ import annotations

import base64
import json
import re

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS


def connect_msg(client_id: object) -> str:
    return json.dumps({"eventType": "CONNECT", "id": client_id})


def stream_msg(kind: str, chunk: bytes, **fields: object) -> str:
    """A STREAM message; ``fields`` adds optional ones (``seq``, ``captureTime``)."""
    return json.dumps(
        {
            "eventType": "STREAM",
            "mediaSourceType": kind,
            "encodedMediaChunk": base64.b64encode(chunk).decode("ascii"),
            **fields,
        }
    )


CLOSE_MSG = json.dumps({"eventType": "CLOSE"})
# How Autobahn's client reports a handshake the server answered with an HTTP error.
_REFUSED = re.compile(r"upgrade failed \[(\d{3})\]: ([^\"]*)")


class HandshakeRefused(ConnectionError):
    """The server answered the WebSocket handshake with an HTTP error ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"handshake refused: {status} {reason}")
        self.status = status
        self.reason = reason


class _ClientProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.client._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.client._received(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.client._closed_with(wasClean, code, reason)


class Client:
    """A WebSocket client written like the seed's clients, that also reads the new replies."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.proto: _ClientProtocol | None = None
        self.opened: Deferred[Client] = Deferred()
        self.closed: Deferred[tuple[bool, int | None, str | None]] = Deferred()
        self._waiters: list[tuple[str, Deferred[dict]]] = []

    def _opened(self, proto: _ClientProtocol) -> None:
        self.proto = proto
        self.opened.callback(self)

    def _received(self, event: dict) -> None:
        self.events.append(event)
        self._wake()

    def _wake(self) -> None:
        for kind, d in list(self._waiters):
            match = next((e for e in self.events if e["eventType"] == kind), None)
            if match is not None:
                self.events.remove(match)
                self._waiters.remove((kind, d))
                d.callback(match)

    def _closed_with(self, clean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            refused = _REFUSED.search(reason or "")
            self.opened.errback(
                HandshakeRefused(int(refused[1]), refused[2])
                if refused
                else ConnectionError(f"WebSocket did not open: {code} {reason}")
            )
        if not self.closed.called:
            self.closed.callback((clean, code, reason))
        for _, d in self._waiters:
            d.errback(ConnectionError(f"closed ({code}) while waiting; got {self.events}"))
        self._waiters.clear()

    def event(self, kind: str, timeout: float = 30) -> Deferred[dict]:
        """The next reply of ``kind`` (``CONNECTED``, ``ERROR``, ``CLOSED``)."""
        d: Deferred[dict] = Deferred()
        self._waiters.append((kind, d))
        self._wake()
        if not d.called and self.closed.called:
            self._waiters.remove((kind, d))
            d.errback(ConnectionError(f"already closed; got {self.events}"))
        return d.addTimeout(timeout, reactor)

    def send(self, text: str) -> None:
        self.proto.sendMessage(text.encode("utf-8"), isBinary=False)

    def send_binary(self, data: bytes) -> None:
        self.proto.sendMessage(data, isBinary=True)

    def vanish(self) -> None:
        """Close the TCP connection (after what was sent) with neither CLOSE nor close handshake,
        as a crashed client does."""
        self.proto.transport.loseConnection()

    def drop(self) -> None:
        """Reset the connection at once, discarding whatever is still unsent."""
        self.proto.transport.abortConnection()


async def open_client(
    port: int,
    path: str = "/",
    timeout: float = 10,
    *,
    protocols: list[str] | None = None,
    origin: str | None = None,
    tls=None,
) -> Client:
    """A connected client; ``tls`` (client TLS options for "localhost") makes it wss://.
    A refused handshake raises :class:`HandshakeRefused`."""
    client = Client()
    url = f"wss://localhost:{port}{path}" if tls else f"ws://127.0.0.1:{port}{path}"
    factory = WebSocketClientFactory(url, origin=origin, protocols=protocols)
    factory.protocol = _ClientProtocol
    factory.client = client
    factory.setProtocolOptions(openHandshakeTimeout=timeout)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=timeout)
    await (wrapClientTLS(tls, endpoint) if tls else endpoint).connect(factory)
    return await client.opened.addTimeout(timeout, reactor)


async def record(port: int, client_id: str, frames=(), audio=(), close: bool = True):
    """Send a whole session the seed's way; return (client, CONNECTED, CLOSED or None)."""
    client = await open_client(port)
    client.send(connect_msg(client_id))
    connected = await client.event("CONNECTED")
    for i in range(max(len(frames), len(audio))):
        if i < len(frames):
            client.send(stream_msg("VIDEO", frames[i]))
        if i < len(audio):
            client.send(stream_msg("AUDIO", audio[i]))
    if not close:
        return client, connected, None
    client.send(CLOSE_MSG)
    closed = await client.event("CLOSED", timeout=60)
    return client, connected, closed


async def stream_without_close(port: int, client_id: str, frames, audio):
    """A session that sends everything but CLOSE, and knows the daemon has handled all of it.

    A second CONNECT is refused with a recoverable ERROR; messages are handled in order, so once
    that reply is back every STREAM before it has reached the session's recorders.
    """
    client, connected, _ = await record(port, client_id, frames, audio, close=False)
    client.send(connect_msg(client_id))
    reply = await client.event("ERROR")
    assert reply["code"] == "already_connected", reply
    return client, connected["recording"]
