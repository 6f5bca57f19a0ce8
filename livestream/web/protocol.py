"""The WebSocket side: bytes in, messages to a Session, replies out.

Nothing a client sends may raise out of here: every refusal becomes an ``ERROR`` reply, and a
reply to a connection that is already closing is dropped without stopping the processing of what
that client sent before it left.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from typing import cast

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from livestream.auth.access import OPEN, Access, Refused
from livestream.sessions.events import ErrorSent
from livestream.sessions.limits import Limits
from livestream.sessions.outcome import CLOSE, IDLE, LIMIT, SHUTDOWN, STORAGE, Outcome
from livestream.sessions.registry import SessionRegistry
from livestream.sessions.session import Media, Session
from livestream.web.hls import live_playlist
from livestream.wire import messages
from livestream.wire.codes import (
    INTERNAL_ERROR,
    NORMAL,
    POLICY_VIOLATION,
    SERVICE_RESTART,
    Refusal,
)
from livestream.wire.kinds import AUDIO, VIDEO
from livestream.wire.messages import Close, Connect, ProtocolError, Stream

_log = Logger()

# The close that follows CLOSED, by why the session ended.
CLOSE_CODES = {
    SHUTDOWN: (SERVICE_RESTART, "server restarting"),
    LIMIT: (POLICY_VIOLATION, "session limit reached"),
    IDLE: (POLICY_VIOLATION, "idle for too long"),
    STORAGE: (INTERNAL_ERROR, "server storage full or failing"),
}


# How often a resumable client hears which chunks are safe (only when that changed).
ACK_INTERVAL = 0.5

# What the kernel may hold unread for one client. Loopback and LAN autotuning grow it to several
# MiB, which a paused (back-pressured) socket then fills: memory per session, and a backlog the
# encoder must drain after CLOSE. 256 KiB (the kernel doubles it) still carries a 640x480 15 fps
# stream over a 100 ms path.
RECEIVE_BUFFER = 256 * 1024


def _cap_receive_buffer(transport) -> None:
    """Cap SO_RCVBUF of the TCP socket under ``transport`` (through TLS if need be)."""
    while transport is not None and not hasattr(transport, "socket"):
        transport = getattr(transport, "transport", None)
    sock = getattr(transport, "socket", None)
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)


def _utf8(payload: bytes) -> str:
    """The text of a text message; Autobahn's own UTF-8 pass is off, this is the only one."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("invalid_utf8", "a text message must be UTF-8") from None


@implementer(IPushProducer)
class SocketValve:
    """Lets an encoder's stdin pause and resume reading from the client's socket.

    It stands between the two so that an encoder that dies (its pipe then calls
    ``stopProducing``) only reopens the valve instead of dropping the client, and so the socket is
    never left paused once the session stops feeding the encoder.
    """

    def __init__(self, transport: IPushProducer) -> None:
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
        self._idle: IDelayedCall | None = None
        self._refusals: Counter[str] = Counter()
        self._token: str | None = None
        self._acks: LoopingCall | None = None
        self._acked: dict[str, int | None] | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        transport = self.transport
        if transport is None:
            raise RuntimeError("connectionMade without a transport")
        # Twisted Web's channel registered itself as the producer of this transport before the
        # upgrade; left there, it would resume reading whenever our replies drain and defeat the
        # back-pressure of the encoder. (The casts: Protocol types its transport as a bare
        # ITransport; this one is the TCP connection, or TLS over one, that the channel handed
        # over, a consumer and a push producer too, as Twisted's sockets and TLS wrapper are.)
        cast(IConsumer, transport).unregisterProducer()
        self._valve = SocketValve(cast(IPushProducer, transport))
        _cap_receive_buffer(transport)

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

    @property
    def valve(self) -> SocketValve:
        """The valve on this connection's socket, there from ``connectionMade`` on."""
        if self._valve is None:
            raise RuntimeError("the connection is not made yet: no valve")
        return self._valve

    def onOpen(self) -> None:
        self._idle = self.factory.clock.callLater(self.factory.idle_timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        if self.valve.paused:
            # Quiet because we stopped reading while the encoder catches up: not idle.
            self._idle = self.factory.clock.callLater(self.factory.idle_timeout, self._idle_expired)
            return
        self._idle = None
        if self._session is None:
            self._refuse(ProtocolError("idle_timeout", "no CONNECT in time"))
        else:
            self._session.idle()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._idle is not None:
            self._idle.reset(self.factory.idle_timeout)
        try:
            if isBinary:
                self._handle(messages.parse_binary(payload))
            else:
                self._handle(messages.parse_text(_utf8(payload)))
        except Refusal as e:
            self._refuse(e)
        except Exception:
            _log.failure("unexpected error handling a message from {peer}", peer=self._peer)
            self._refuse(ProtocolError("internal_error", "the server failed"))

    def _handle(self, msg: messages.Message) -> None:
        if isinstance(msg, Stream):
            if self._session is None:
                raise ProtocolError("not_connected", "send CONNECT before STREAM")
            chunk = messages.check_codec(msg, self._session.media.codec(msg.kind))
            if chunk.timestamp is not None:
                self._session.stream_encoded(
                    chunk.kind, chunk.chunk, chunk.timestamp, bool(chunk.key), chunk.seq
                )
            else:
                self._session.stream(chunk.kind, chunk.chunk, chunk.capture_time, chunk.seq)
        elif isinstance(msg, Connect):
            if self._session is not None:
                raise ProtocolError("already_connected", "this connection already sent CONNECT")
            if msg.resume_token is not None:
                self._resume(msg, msg.resume_token)
                return
            grant = self.factory.access.authorize_publish(msg.id, msg.token or self._token)
            self._session = self.factory.registry.open(
                msg.id, self._peer, self._valve, self._send_error, grant=grant,
                resumable=msg.resume, media=Media(msg.video_codec, msg.audio_codec, msg.opus_head),
            )  # fmt: skip
            self._session.attach(self, self._valve, self._send_error, self._send_keyframe_request)
            self._connected(self._session, msg.id)
        elif isinstance(msg, Close):
            if self._session is None:
                raise ProtocolError("not_connected", "send CONNECT before CLOSE")
            if self._session.ending:
                raise ProtocolError("session_closed", "this recording is already closing")
            self._session.finish(CLOSE)

    def _resume(self, msg: Connect, resume_token: str) -> None:
        """Continue a session whose connection dropped (``msg`` carries ``resume_token``). The
        resume token is the credential: it was given only to the client that opened the session
        (authorized then), is unguessable, and works for that one session within its grace
        period."""
        session = self.factory.registry.resume(resume_token, msg.id)
        displaced = session.attach(self, self._valve, self._send_error, self._send_keyframe_request)
        if isinstance(displaced, RecordingProtocol):
            displaced.displace()
        self._session = session
        _log.info("session {name} resumed from {peer}", name=session.name, peer=self._peer)
        self._connected(session, msg.id)
        session.resumed()

    def _connected(self, session: Session, client_id: str) -> None:
        """Reply CONNECTED for ``session``, just opened or resumed as this one's session."""
        session.finished().addCallback(self._finished)
        reply: dict[str, object] = {
            "eventType": "CONNECTED", "id": client_id, "recording": session.name,
            "playlist": live_playlist(session.name),
        }  # fmt: skip
        if session.resume_token is not None:
            reply["resumeToken"] = session.resume_token
        # Said only when asked for: a client learns that this server records what it encoded.
        for field, codec in (
            ("videoCodec", session.media.video),
            ("audioCodec", session.media.audio),
        ):
            if codec.encoded:
                reply[field] = codec.value
        self._reply(reply)
        if session.resume_token is not None:
            self._ack()
            self._acks = LoopingCall(self._ack)
            self._acks.clock = self.factory.clock
            self._acks.start(ACK_INTERVAL, now=False)

    def _ack(self) -> None:
        """Tell a resumable client what is safe: every chunk up to these sequence numbers is
        in the encoder's pipe or the WAV, and survives this connection."""
        if self._session is None:
            return
        acked = self._session.acknowledged
        if acked != self._acked:
            self._acked = acked
            self._reply({"eventType": "ACK", **acked})

    def displace(self) -> None:
        """A resumed connection took this one's session: let go of it, and drop the socket
        (often already dead, its loss not yet noticed)."""
        self._session = None
        self.dropConnection(abort=True)

    def _finished(self, outcome: Outcome) -> None:
        self.valve.resumeProducing()
        if self.state != self.STATE_OPEN:
            return
        if self._acks is not None:
            self._ack()
        self._reply(
            {"eventType": "CLOSED", "recordings": {VIDEO: outcome.video, AUDIO: outcome.audio}}
        )
        self._close(*CLOSE_CODES.get(outcome.reason, (NORMAL, "recording finished")))

    def _refuse(self, error: Refusal) -> None:
        """Reply ERROR, and close if the refusal's code says so (:mod:`livestream.wire.codes`);
        log the first refusal of each kind per connection (a flood logs once)."""
        self._refusals[error.code] += 1
        if self._refusals[error.code] == 1:
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

    def _send_keyframe_request(self, reason: str) -> None:
        self._reply({"eventType": "KEYFRAME_REQUEST", "reason": reason})

    def _send_error(self, code: str, message: str) -> None:
        self.factory.registry.events.emit(ErrorSent(code, self._peer))
        self._reply({"eventType": "ERROR", "code": code, "message": message})

    def _reply(self, event: dict[str, object]) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(json.dumps(event).encode("utf-8"), isBinary=False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        # Autobahn leaves this timer armed when the peer vanishes mid-handshake.
        if self.closeHandshakeTimeoutCall is not None:
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        repeated = {code: n - 1 for code, n in self._refusals.items() if n > 1}
        if repeated:
            _log.info("{peer} also had {repeated} further refusals", peer=self._peer,
                      repeated=repeated)  # fmt: skip
        if self._acks is not None and self._acks.running:
            self._acks.stop()
        if self._valve is not None:
            self._valve.resumeProducing()
        if self._session is not None:
            self._session.connection_lost(self)


class RecordingFactory(WebSocketServerFactory):
    # autobahn's factories subclass Twisted's generic Factory without its type parameter, so a
    # protocol that names its own factory's type (RecordingProtocol.factory) cannot match it.
    protocol = RecordingProtocol  # type: ignore[assignment]

    def __init__(
        self, clock: IReactorTime, registry: SessionRegistry, limits: Limits, access: Access = OPEN
    ) -> None:
        super().__init__()
        self.clock = clock
        self.registry = registry
        self.idle_timeout = limits.idle_timeout
        self.access = access
        self.setProtocolOptions(
            # Refused when the frame header announces it, before any of it is buffered.
            maxMessagePayloadSize=limits.max_message_size,
            maxFramePayloadSize=limits.max_message_size,
            openHandshakeTimeout=limits.handshake_timeout,
            # Longer than any encoder stall: while reading is paused, pongs and close frames wait.
            closeHandshakeTimeout=max(60.0, limits.ping_timeout),
            autoPingInterval=limits.ping_interval,
            autoPingTimeout=limits.ping_timeout,
            # Tell a client why it is dropped (1009 too big, 1002 bad framing) with a close frame.
            failByDrop=False,
            # Decoding the text validates it anyway (and answers 1007); no need to do it twice.
            utf8validateIncoming=False,
            # Setting any option resets this to False, refusing pages opened from a file; which
            # origins may connect is the Access policy's call (onConnect).
            allowNullOrigin=True,
        )
