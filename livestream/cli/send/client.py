"""The WebSocket side of ``livestream-send``: connect (ws:// or wss://), speak the seed protocol
(``CONNECT``, ``STREAM``, ``CLOSE``, JSON or the binary fast path) with its ``seq`` and
``captureTime`` fields, or an encoded chunk's ``timestamp`` and ``key``, and read the server's
replies (``CONNECTED``, ``ACK``, ``ERROR``, ``KEYFRAME_REQUEST``, ``CLOSED``). One protocol is
one connection; :mod:`livestream.cli.send.link` keeps a session going across several.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from fractions import Fraction

import pybase64
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.util import parse_url
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS

from livestream.wire.kinds import MediaKind
from livestream.wire.messages import ENCODED_HEADER, KEY_FLAG, TIMED_HEADER

# The server's replies are small JSON objects; nothing it sends is larger. Bounds each frame
# it sends (autobahn checks maxFramePayloadSize on incoming frames only).
MAX_REPLY = 64 * 1024
# autobahn checks maxMessagePayloadSize on what is sent as well as on what is received, so it
# must let the largest chunk out: the splitters pass at most 64 MiB, a third more in base64,
# plus the JSON around it. (A 1080p keyframe is over 64 KiB: a bound of MAX_REPLY refused it.)
MAX_MESSAGE = 96 * 1024 * 1024


class ServerGone(Exception):
    """The connection ended before the reply being waited for; the message says how, in one
    line (the server's last ERROR when it sent one). ``dropped``: it ended without a close from
    the server (a network failure, the server's process gone), which a resume may mend."""

    def __init__(self, message: str, dropped: bool = False) -> None:
        super().__init__(message)
        self.dropped = dropped


class ResumeFailed(Exception):
    """The server answered a resume with ``resume_failed``: the session is over."""


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


def reason(error: Exception) -> str:
    """ "Connection was refused by other side: 111: Connection refused." -> "Connection refused"."""
    text = str(error).strip().rstrip(".")
    return re.sub(r"^\d+: ", "", text.split(": ", 1)[-1])


class SendProtocol(WebSocketClientProtocol):
    factory: SendFactory

    def __init__(self) -> None:
        super().__init__()
        self.bytes_out = 0
        self.error: dict | None = None
        self.connected_reply: dict | None = None
        # CONNECTED, once the server has also said what it holds (the ACK that follows a
        # CONNECTED with a resume token); cancelling it drops the connection.
        self.ready: Deferred[dict] = Deferred(lambda _: self.dropConnection(abort=True))

    def onOpen(self) -> None:
        self._send_json(self.factory.hello)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            reply = json.loads(payload)
            kind = reply["eventType"]
        except (ValueError, KeyError, TypeError):
            return
        if kind == "ERROR":
            if reply.get("code") == "resume_failed" and not self.ready.called:
                # Not fatal for the server (a plain CONNECT could follow); this client is done.
                self.ready.errback(ResumeFailed(f"resume_failed: {reply.get('message')}"))
                self.dropConnection(abort=True)
                return
            # session_closed answers what was still in flight when the server ended the
            # session; how it ended (the close, or the ERROR before) is what to report.
            if reply.get("code") != "session_closed":
                self.error = reply
            self.factory.on_error(reply)
        elif kind == "CONNECTED" and self.connected_reply is None:
            self.connected_reply = reply
            if "resumeToken" not in reply:
                self.ready.callback(reply)
        elif kind == "ACK":
            self.factory.on_ack(reply)
            if self.connected_reply is not None and not self.ready.called:
                self.ready.callback(self.connected_reply)
        elif kind == "KEYFRAME_REQUEST":
            self.factory.on_keyframe_request(reply)
        elif kind == "CLOSED":
            self.factory.on_closed(reply)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        gone = ServerGone(self._how_it_ended(code, reason), dropped=code in (None, 1006))
        if not self.ready.called:
            self.ready.errback(gone)
        self.factory.closed.callback(gone)

    def _how_it_ended(self, code: int | None, reason: str | None) -> str:
        if self.error is not None:
            return f"{self.error.get('code')}: {self.error.get('message')}"
        if reason and "upgrade failed" in reason:
            return f"the server refused the WebSocket: {reason.split('upgrade failed', 1)[1]}"
        if code is None or code == 1006:
            return "the connection was lost"
        return f"the server closed the connection ({code}{': ' + reason if reason else ''})"

    def send_media(self, kind: MediaKind, seq: int, at: Fraction, key: bool, data: bytes) -> bool:
        """Send one chunk with its ``seq`` and its time ``at`` (seconds on the client's clock):
        as ``captureTime`` (ms) for JPEG and PCM, as ``timestamp`` (whole µs) with ``key`` (video)
        for an encoded kind. False when the connection is no longer open (closing, or gone) and
        nothing was sent."""
        if self.state != self.STATE_OPEN:
            return False
        binary = self.factory.binary
        if kind in self.factory.encoded:
            timestamp = int(at * 1_000_000)  # exact: the outbox keeps times in whole µs
            if binary:
                # The encoded form: a 14-byte header of kind, flags, seq and timestamp.
                flags = KEY_FLAG if key and kind == MediaKind.VIDEO else 0
                payload = ENCODED_HEADER.pack(kind.encoded, flags, seq, timestamp) + data
            else:
                fields: dict[str, object] = {"timestamp": timestamp}
                if kind == MediaKind.VIDEO:
                    fields["key"] = key
                payload = self._stream_json(kind, seq, data, fields)
        elif binary:
            # The timed form: a 13-byte header of kind, seq and captureTime.
            payload = TIMED_HEADER.pack(kind.timed, seq, float(at * 1000)) + data
        else:
            payload = self._stream_json(kind, seq, data, {"captureTime": float(at * 1000)})
        self.sendMessage(payload, isBinary=binary)
        self.bytes_out += len(payload)
        return True

    @staticmethod
    def _stream_json(kind: MediaKind, seq: int, data: bytes, fields: dict[str, object]) -> bytes:
        chunk = pybase64.b64encode(data).decode("ascii")
        return json.dumps({
            "eventType": "STREAM", "mediaSourceType": kind.wire, "encodedMediaChunk": chunk,
            "seq": seq, **fields,
        }).encode("ascii")  # fmt: skip

    def send_close(self) -> None:
        self._send_json({"eventType": "CLOSE"})

    def _send_json(self, message: dict) -> None:
        if self.state == self.STATE_OPEN:
            payload = json.dumps(message).encode("utf-8")
            self.sendMessage(payload, isBinary=False)
            self.bytes_out += len(payload)


class SendFactory(WebSocketClientFactory):
    """One connection: ``hello`` is its CONNECT; the server's ``ACK``, ``ERROR`` and ``CLOSED``
    go to the callbacks; ``closed`` fires with how the connection ended. The kinds in
    ``encoded`` are sent as the client encoded them (H.264, Opus): with a timestamp."""

    # autobahn's factories subclass Twisted's generic Factory without its type parameter, so a
    # protocol that names its own factory's type (SendProtocol.factory) cannot match it.
    protocol = SendProtocol  # type: ignore[assignment]

    def __init__(
        self,
        where: Target,
        hello: dict,
        binary: bool,
        on_ack: Callable[[dict], None],
        on_error: Callable[[dict], None],
        on_closed: Callable[[dict], None],
        on_keyframe_request: Callable[[dict], None] = lambda _: None,
        encoded: Collection[MediaKind] = (),
    ) -> None:
        super().__init__(where.url)
        self.hello = hello
        self.binary = binary
        self.on_ack = on_ack
        self.on_error = on_error
        self.on_closed = on_closed
        self.on_keyframe_request = on_keyframe_request
        self.encoded = frozenset(encoded)
        self.closed: Deferred[ServerGone] = Deferred()
        self.setProtocolOptions(
            openHandshakeTimeout=30, closeHandshakeTimeout=10,
            maxMessagePayloadSize=MAX_MESSAGE, maxFramePayloadSize=MAX_REPLY,
        )  # fmt: skip
