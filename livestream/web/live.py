"""Watching a session while it records: a viewer WebSocket that relays its chunks as they arrive.

``ws://host:8080/live/<recording>`` sends, in order: one text message
``{"eventType":"LIVE","recording":...,"fps":...}``; then each chunk the session accepts, as a binary
message in the binary STREAM form (``0x01`` + one JPEG frame, ``0x02`` + PCM s16le 44.1 kHz mono,
an even number of bytes); and ``{"eventType":"ENDED","recordings":{"video":...,"audio":...}}``
once the session's files are published, followed by a close with 1000. Nothing is re-encoded.

A session whose client sends H.264 or Opus is relayed in the encoded form the client sent:
``0x21`` + access unit, ``0x22`` + Opus packet, each after the 14-byte header of flags (bit 0:
keyframe), ``seq`` and ``timestamp`` (the client's, in microseconds). ``seq`` counts the chunks
of its kind the session accepted since this viewer joined, so a jump says chunks were dropped for
it. ``LIVE`` then also says ``videoCodec`` (the RFC 6381 string once the first keyframe came,
``"h264"`` before), and ``audioCodec: "opus"`` with ``opusHead`` (base64).

A viewer never slows the recording and never makes the daemon buffer without bound: when its
socket's send buffer is full, Twisted pauses the viewer (its push producer), which then keeps only
the latest JPEG frame and the last second of audio until the socket drains; older chunks are
dropped. H.264 frames cannot be decoded alone: a viewer that joins, or that was paused, gets
nothing of the video until the next keyframe, and the session's client is asked for one.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from typing import cast

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from livestream.auth.access import Access, select_subprotocol
from livestream.recording.passthrough import VIEWER
from livestream.sessions.outcome import Outcome
from livestream.sessions.session import Piece, Session
from livestream.wire.codes import NORMAL
from livestream.wire.kinds import BYTES_PER_SECOND, Codec, MediaKind
from livestream.wire.messages import ENCODED_HEADER, KEY_FLAG
from livestream.wire.opus import OpusHead

_log = Logger()

# The first byte of each relayed chunk: its kind, as in the binary STREAM form.
VIDEO = bytes([MediaKind.VIDEO.binary])
AUDIO = bytes([MediaKind.AUDIO.binary])
# What a paused viewer keeps of the audio: one second (of PCM; of Opus, by timestamp, and never
# more bytes than a second of PCM).
MAX_HELD_AUDIO = BYTES_PER_SECOND
MAX_HELD_OPUS_US = 1_000_000
# Over any --max-message-size a publisher can be given, so every chunk it sends can be relayed.
MAX_RELAYED = 1 << 30


@implementer(IPushProducer)
class ViewerProtocol(WebSocketServerProtocol):
    factory: ViewerFactory

    def __init__(self) -> None:
        super().__init__()
        self._session: Session | None = None
        self._paused = False
        self._frame: bytes | None = None
        self._audio = bytearray()
        # An odd trailing byte of PCM, held so that every message carries whole samples.
        self._odd = b""
        # H.264: no video is sent until a keyframe (the viewer joined, or dropped frames while
        # paused, mid-GOP).
        self._need_key = False
        # Encoded chunks of each kind the session accepted since this viewer joined.
        self._offered = dict.fromkeys(MediaKind, 0)
        # Opus packets held while paused: (timestamp, message), the newest second of them.
        self._opus: deque[tuple[int, bytes]] = deque()
        self._opus_bytes = 0
        self.dropped_frames = 0
        self.dropped_audio_bytes = 0

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.transport is None:
            raise RuntimeError("connectionMade without a transport")
        # Protocol types its transport as a bare ITransport; this one is the TCP connection (or
        # TLS over one) that the HTTP channel handed over, a consumer too, as Twisted's sockets
        # and TLS wrapper are.
        transport = cast(IConsumer, self.transport)
        # The HTTP channel registered itself before the upgrade; the viewer is the producer now,
        # so that a full send buffer pauses it.
        transport.unregisterProducer()
        transport.registerProducer(self, True)

    def onConnect(self, request) -> str | None:
        if not self.factory.access.origin_allowed(request.origin or None):
            raise ConnectionDeny(403, "origin not allowed")
        name = request.path.rstrip("/").rsplit("/", 1)[-1]
        self._session = self.factory.find(name)
        if self._session is None:
            raise ConnectionDeny(404, "no live session of that name")
        return select_subprotocol(request.protocols)

    def onOpen(self) -> None:
        session = self._session
        if session is None:
            raise RuntimeError("a viewer opened without the session onConnect found")
        live: dict[str, object] = {
            "eventType": "LIVE", "recording": session.name, "fps": self.factory.fps
        }  # fmt: skip
        if session.media.video is Codec.H264:
            live["videoCodec"] = session.video_codec or Codec.H264.value
            self._need_key = True
        if session.media.audio is Codec.OPUS:
            head = session.media.opus_head or OpusHead()
            live["audioCodec"] = Codec.OPUS.value
            live["opusHead"] = base64.b64encode(head.encode()).decode("ascii")
        self._send_json(live)
        session.watchers.append(self.chunk)
        session.finished().addCallback(self._ended)
        if self._need_key:
            # Mid-GOP now, most likely: the sooner a keyframe comes, the sooner there is a picture.
            session.request_keyframe(VIEWER)

    # autobahn annotates the payload as bytes, but passes the frame's data as received: a list of
    # the pieces it arrived in (WebSocketProtocol.onMessageFrameEnd, frame_data).
    def onMessageFrame(self, payload: list[bytes]) -> None:  # type: ignore[override]
        """Viewers have nothing to say: each frame is dropped as it arrives. Gathered, a message
        of many small frames could grow up to the (large, for sending) message limit."""

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """What a viewer sends is ignored."""

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._stop_watching()

    def _stop_watching(self) -> None:
        if self._session is not None and self.chunk in self._session.watchers:
            self._session.watchers.remove(self.chunk)

    def chunk(self, piece: Piece) -> None:
        """One chunk the session accepted: sent now, or held (latest only) while paused."""
        if self.state != self.STATE_OPEN:
            return
        if piece.timestamp is not None:
            self._encoded(piece)
            return
        kind, chunk = piece.kind, piece.data
        if kind is MediaKind.VIDEO:
            if not self._paused:
                self.sendMessage(VIDEO + chunk, isBinary=True)
                return
            if self._frame is not None:
                self.dropped_frames += 1
            self._frame = chunk
            return
        data = self._odd + chunk
        whole = len(data) & ~1
        self._odd = data[whole:]
        if not whole:
            return
        if not self._paused:
            self.sendMessage(AUDIO + data[:whole], isBinary=True)
            return
        self._audio += data[:whole]
        excess = len(self._audio) - MAX_HELD_AUDIO
        if excess > 0:
            del self._audio[:excess]
            self.dropped_audio_bytes += excess

    def _encoded(self, piece: Piece) -> None:
        """An H.264 access unit or an Opus packet, in the encoded binary form. Video goes from a
        keyframe on, so that every frame sent can be decoded; a paused viewer drops it all and
        starts again at the next keyframe."""
        seq = self._offered[piece.kind]
        self._offered[piece.kind] = (seq + 1) & 0xFFFFFFFF
        flags = KEY_FLAG if piece.key else 0
        header = ENCODED_HEADER.pack(piece.kind.encoded, flags, seq, piece.timestamp or 0)
        if piece.kind is MediaKind.VIDEO:
            if self._paused or (self._need_key and not piece.key):
                self.dropped_frames += 1
                self._need_key = True
                if not self._paused and self._session is not None:
                    self._session.request_keyframe(VIEWER)
                return
            self._need_key = False
            self.sendMessage(header + piece.data, isBinary=True)
            return
        message = header + piece.data
        if not self._paused:
            self.sendMessage(message, isBinary=True)
            return
        self._opus.append((piece.timestamp or 0, message))
        self._opus_bytes += len(message)
        newest = self._opus[-1][0]
        while self._opus and (
            newest - self._opus[0][0] >= MAX_HELD_OPUS_US or self._opus_bytes > MAX_HELD_AUDIO
        ):
            _, old = self._opus.popleft()
            self._opus_bytes -= len(old)
            self.dropped_audio_bytes += len(old) - ENCODED_HEADER.size

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        audio, self._audio = bytes(self._audio), bytearray()
        frame, self._frame = self._frame, None
        opus, self._opus, self._opus_bytes = self._opus, deque(), 0
        if self.state != self.STATE_OPEN:
            return
        if audio:
            self.sendMessage(AUDIO + audio, isBinary=True)
        for _, message in opus:
            self.sendMessage(message, isBinary=True)
        if frame is not None:
            self.sendMessage(VIDEO + frame, isBinary=True)
        if self._need_key and self._session is not None:
            self._session.request_keyframe(VIEWER)

    def stopProducing(self) -> None:
        self._stop_watching()
        self._frame = None
        self._audio = bytearray()
        self._opus, self._opus_bytes = deque(), 0

    def _ended(self, outcome: Outcome) -> None:
        self._stop_watching()
        if self.state != self.STATE_OPEN:
            return
        self.resumeProducing()
        recordings = {MediaKind.VIDEO: outcome.video, MediaKind.AUDIO: outcome.audio}
        self._send_json({"eventType": "ENDED", "recordings": recordings})
        self.sendClose(NORMAL, "recording finished")

    def _send_json(self, message: dict) -> None:
        self.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)


class ViewerFactory(WebSocketServerFactory):
    # autobahn's factories subclass Twisted's generic Factory without its type parameter, so a
    # protocol that names its own factory's type (ViewerProtocol.factory) cannot match it.
    protocol = ViewerProtocol  # type: ignore[assignment]

    def __init__(self, sessions, access: Access, fps: int) -> None:
        """``sessions``: what returns the live sessions now (the registry's ``sessions``)."""
        super().__init__()
        self._sessions = sessions
        self.access = access
        self.fps = fps
        self.setProtocolOptions(
            # The limit applies to what is sent too: room for any frame a publisher may send.
            maxMessagePayloadSize=MAX_RELAYED,
            # Viewers send nothing worth reading: a frame over this is refused unread.
            maxFramePayloadSize=4096,
            autoPingInterval=30,
            autoPingTimeout=60,
            failByDrop=False,
            allowNullOrigin=True,
        )

    def find(self, name: str) -> Session | None:
        return next((s for s in self._sessions() if s.name == name), None)
