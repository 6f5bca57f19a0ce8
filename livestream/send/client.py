"""The WebSocket side of ``livestream-send``: connect (ws:// or wss://), speak the seed protocol
(``CONNECT``, ``STREAM``, ``CLOSE``, JSON or the binary fast path) and read the server's replies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pybase64
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.util import parse_url
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS

from livestream.send.outbox import AUDIO, VIDEO

BINARY_KIND = {VIDEO: b"\x01", AUDIO: b"\x02"}
# The server's replies are small JSON objects; nothing it sends is larger.
MAX_REPLY = 64 * 1024


class ServerGone(Exception):
    """The connection ended before the reply being waited for; the message says how, in one
    line (the server's last ERROR when it sent one)."""


@dataclass(frozen=True)
class Target:
    url: str
    secure: bool
    host: str
    port: int


def target(url: str) -> Target:
    """Check a ``ws://`` or ``wss://`` URL; ValueError with a readable message otherwise."""
    try:
        secure, host, port, _, _, _ = parse_url(url)
    except Exception as e:  # parse_url raises plain Exceptions for most mistakes
        raise ValueError(f"{url!r} is not a ws:// or wss:// URL ({e})") from None
    return Target(url, secure, host, port)


def endpoint(reactor, where: Target, cafile: str | None, timeout: float) -> IStreamClientEndpoint:
    """A TCP endpoint, wrapped in TLS for wss:// that verifies the server's certificate for its
    host name: against the system's trust store, or against the CA in ``cafile`` alone."""
    tcp = HostnameEndpoint(reactor, where.host, where.port, timeout=timeout)
    if not where.secure:
        return tcp
    trust = None
    if cafile is not None:
        with open(cafile, "rb") as f:
            trust = Certificate.loadPEM(f.read())
    return wrapClientTLS(optionsForClientTLS(where.host, trustRoot=trust), tcp)


class SendProtocol(WebSocketClientProtocol):
    factory: SendFactory

    def __init__(self) -> None:
        super().__init__()
        self.bytes_out = 0
        self.error: dict | None = None
        self.gone: ServerGone | None = None
        self._waiting: dict[str, Deferred[dict]] = {}
        self._replies: dict[str, dict] = {}

    def onOpen(self) -> None:
        self.factory.opened.callback(self)
        connect: dict[str, str] = {"eventType": "CONNECT", "id": self.factory.client_id}
        if self.factory.token:
            connect["token"] = self.factory.token
        self._send_json(connect)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            reply = json.loads(payload)
            kind = reply["eventType"]
        except (ValueError, KeyError, TypeError):
            return
        if kind == "ERROR":
            # session_closed answers what was still in flight when the server ended the
            # session; how it ended (the close, or the ERROR before) is what to report.
            if reply.get("code") != "session_closed":
                self.error = reply
            self.factory.on_error(reply)
            return
        waiter = self._waiting.pop(kind, None)
        if waiter is not None:
            waiter.callback(reply)
        else:
            self._replies[kind] = reply

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        gone = self.gone = ServerGone(self._how_it_ended(code, reason))
        if not self.factory.opened.called:
            self.factory.opened.errback(gone)
        for waiter in self._waiting.values():
            waiter.errback(gone)
        self._waiting.clear()
        self.factory.closed.callback(gone)

    def _how_it_ended(self, code: int | None, reason: str | None) -> str:
        if self.error is not None:
            return f"{self.error.get('code')}: {self.error.get('message')}"
        if reason and "upgrade failed" in reason:
            return f"the server refused the WebSocket: {reason.split('upgrade failed', 1)[1]}"
        if code is None or code == 1006:
            return "the connection was lost"
        return f"the server closed the connection ({code}{': ' + reason if reason else ''})"

    def reply(self, kind: str) -> Deferred[dict]:
        """The reply of ``kind`` (``CONNECTED``, ``CLOSED``); fails with :class:`ServerGone`
        when the connection ends first."""
        if kind in self._replies:
            return succeed(self._replies.pop(kind))
        if self.gone is not None:
            return fail(self.gone)
        return self._waiting.setdefault(kind, Deferred())

    def unclaimed(self, kind: str) -> dict | None:
        """A reply of ``kind`` that came without being waited for (``CLOSED`` before the
        server closes with 1012 or 1008), or None."""
        return self._replies.pop(kind, None)

    def send_media(self, kind: str, data: bytes) -> None:
        if self.factory.binary:
            payload = BINARY_KIND[kind] + data
            self.sendMessage(payload, isBinary=True)
        else:
            chunk = pybase64.b64encode(data).decode("ascii")
            payload = json.dumps(
                {"eventType": "STREAM", "mediaSourceType": kind, "encodedMediaChunk": chunk}
            ).encode("ascii")
            self.sendMessage(payload, isBinary=False)
        self.bytes_out += len(payload)

    def send_close(self) -> None:
        self._send_json({"eventType": "CLOSE"})

    def _send_json(self, message: dict) -> None:
        payload = json.dumps(message).encode("utf-8")
        self.sendMessage(payload, isBinary=False)
        self.bytes_out += len(payload)


class SendFactory(WebSocketClientFactory):
    protocol = SendProtocol

    def __init__(
        self, where: Target, client_id: str, token: str | None, binary: bool, on_error
    ) -> None:
        super().__init__(where.url)
        self.client_id = client_id
        self.token = token
        self.binary = binary
        self.on_error = on_error
        self.opened: Deferred[SendProtocol] = Deferred()
        self.closed: Deferred[ServerGone] = Deferred()
        self.setProtocolOptions(
            openHandshakeTimeout=30, closeHandshakeTimeout=10,
            maxMessagePayloadSize=MAX_REPLY, maxFramePayloadSize=MAX_REPLY,
        )  # fmt: skip
