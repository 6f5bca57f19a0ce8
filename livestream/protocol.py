"""The WebSocket side: bytes in, messages to a Session, replies out.

Nothing a client sends may raise out of here: every refusal becomes an ``ERROR`` reply, and a
reply to a connection that is already closing is dropped without stopping the processing of what
that client sent before it left.
"""

from __future__ import annotations

import json

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from livestream import messages
from livestream.access import OPEN, Access, Refused
from livestream.messages import Close, Connect, ProtocolError, Stream
from livestream.registry import SessionRegistry
from livestream.session import SHUTDOWN, Outcome, Session

_log = Logger()

GOING_AWAY = 1001
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012
NORMAL = 1000


@implementer(IPushProducer)
class SocketValve:
    """Lets an encoder's stdin pause and resume reading from the client's socket.

    It stands between the two so that an encoder that dies (its pipe then calls
    ``stopProducing``) only reopens the valve instead of dropping the client, and so the socket is
    never left paused once the session stops feeding the encoder.
    """

    def __init__(self, transport) -> None:
        self._transport = transport
        self.paused = False

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        self.resumeProducing()


class RecordingProtocol(WebSocketServerProtocol):
    factory: RecordingFactory

    def __init__(self) -> None:
        super().__init__()
        self._session: Session | None = None
        self._valve: SocketValve | None = None
        self._peer = "?"
        self._token: str | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        # Twisted Web's channel registered itself as the producer of this transport before the
        # upgrade; left there, it would resume reading whenever our replies drain and defeat the
        # back-pressure of the encoder.
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()
        self._valve = SocketValve(self.transport)

    def onConnect(self, request) -> str | None:
        self._peer = request.peer
        try:
            self._token, subprotocol = self.factory.access.handshake(
                request.origin or None, request.params, request.protocols
            )
        except Refused as e:
            raise ConnectionDeny(e.status, e.message) from None
        return subprotocol

    def failHandshake(self, reason: str, code: int = 400, responseHeaders=None) -> None:
        """Autobahn's own log line of a refused handshake does not say whose it was: log it once,
        with the client's address, and answer as Autobahn does."""
        _log.info(
            "refused the WebSocket handshake of {peer}: {code} {reason}",
            peer=self.peer, code=code, reason=reason,
        )  # fmt: skip
        self.wasNotCleanReason = reason
        self.sendHttpErrorResponse(code, reason, responseHeaders)
        self.dropConnection(abort=False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            if isBinary:
                self._handle(messages.parse_binary(payload))
            else:
                self._handle(messages.parse_text(payload.decode("utf-8")))
        except ProtocolError as e:
            self._refuse(e)
        except Exception:
            _log.failure("unexpected error handling a message from {peer}", peer=self._peer)
            self._refuse(
                ProtocolError("internal_error", "the server failed", close_code=INTERNAL_ERROR)
            )

    def _handle(self, msg: messages.Message) -> None:
        if isinstance(msg, Stream):
            if self._session is None:
                raise ProtocolError("not_connected", "send CONNECT before STREAM")
            self._session.stream(msg.kind, msg.chunk)
        elif isinstance(msg, Connect):
            if self._session is not None:
                raise ProtocolError("already_connected", "this connection already sent CONNECT")
            grant = self.factory.access.authorize_publish(msg.id, msg.token or self._token)
            self._session = self.factory.registry.open(
                msg.id, self._peer, self._valve, self._send_error, grant=grant
            )
            self._session.finished().addCallback(self._finished)
            self._send({"eventType": "CONNECTED", "id": msg.id, "recording": self._session.name})
        elif isinstance(msg, Close):
            if self._session is None:
                raise ProtocolError("not_connected", "send CONNECT before CLOSE")
            if self._session.ending:
                raise ProtocolError("session_closed", "this recording is already closing")
            self._session.finish("close")

    def _finished(self, outcome: Outcome) -> None:
        self._valve.resumeProducing()
        if self.state != self.STATE_OPEN:
            return
        self._send(
            {"eventType": "CLOSED", "recordings": {"video": outcome.video, "audio": outcome.audio}}
        )
        if outcome.reason == SHUTDOWN:
            self._close(SERVICE_RESTART, "server restarting")
        else:
            self._close(NORMAL, "recording finished")

    def _refuse(self, error: ProtocolError) -> None:
        _log.info(
            "refused a message from {peer}: {code}: {message}",
            peer=self._peer, code=error.code, message=error.message,
        )  # fmt: skip
        self._send_error(error.code, error.message)
        if error.close_code is not None:
            self._close(error.close_code, error.message)

    def _close(self, code: int, reason: str) -> None:
        """Start the close handshake with any RFC 6455 code.

        Autobahn's ``sendClose`` admits only 1000 and 3000-4999 from applications, but the protocol
        promises 1008, 1011 and 1012 too; ``sendCloseFrame`` is the same step without that check.
        """
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code, reason.encode("utf-8")[:123], isReply=False)

    def _send_error(self, code: str, message: str) -> None:
        self._send({"eventType": "ERROR", "code": code, "message": message})

    def _send(self, event: dict[str, object]) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(json.dumps(event).encode("utf-8"), isBinary=False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        # Autobahn leaves this timer armed when the peer vanishes mid-handshake.
        if self.closeHandshakeTimeoutCall is not None:
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None
        if self._valve is not None:
            self._valve.resumeProducing()
        if self._session is not None:
            self._session.connection_lost()


class RecordingFactory(WebSocketServerFactory):
    protocol = RecordingProtocol

    def __init__(
        self, registry: SessionRegistry, max_message_size: int, access: Access = OPEN, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.registry = registry
        self.access = access
        self.setProtocolOptions(
            maxMessagePayloadSize=max_message_size,
            maxFramePayloadSize=max_message_size,
            openHandshakeTimeout=10,
            # Longer than any encoder stall: while reading is paused, pongs and close frames wait.
            closeHandshakeTimeout=60,
            autoPingInterval=30,
            autoPingTimeout=90,
            # Tell a client why it is dropped (1009 too big, 1002 bad framing) with a close frame.
            failByDrop=False,
            # Setting any option resets this to False, refusing pages opened from a file; which
            # origins may connect is the Access policy's call (onConnect).
            allowNullOrigin=True,
        )
