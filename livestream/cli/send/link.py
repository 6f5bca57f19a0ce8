"""The session of ``livestream-send`` on the server, kept across dropped connections.

``CONNECT`` asks for resume; a server that offers it (a ``resumeToken`` in ``CONNECTED``)
acknowledges what it has recorded, and when the connection drops (without a close from the
server, and before ``CLOSED``) the link comes back with the token, waits for the ``ACK``, has
the outbox send again what was not acknowledged, and goes on; a ``CLOSE`` that may not have
arrived is sent again after it. A server without resume gets the seed protocol's behaviour: a
drop ends the session.

``CONNECT`` also names the codecs of what the client encoded itself (H.264, Opus, with the
OpusHead); a server that does not echo them in ``CONNECTED`` does not know the extension, and
the link gives up at once rather than stream what would record nothing useful.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import cast

import pybase64
from twisted.internet.defer import Deferred, TimeoutError, ensureDeferred, fail, succeed
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.task import deferLater

from livestream.cli.send.client import (
    ResumeFailed,
    SendFactory,
    SendProtocol,
    ServerGone,
    Target,
    endpoint,
    reason,
)
from livestream.cli.send.outbox import Outbox
from livestream.wire.kinds import Codec, MediaKind

# Coming back: the first attempt after 0.25 s, waits doubling to 2 s, each attempt given 5 s,
# and no more attempts 60 s after the drop (the server's grace is 30 s unless configured).
RETRY_FIRST = 0.25
RETRY_MAX = 2.0
ATTEMPT_TIMEOUT = 5.0
GIVE_UP_AFTER = 60.0
# How long to wait for a server that does not know the codecs asked for to see the CLOSE.
ABANDON_TIMEOUT = 2.0


class Link:
    def __init__(
        self,
        reactor,
        where: Target,
        cafile: str | None,
        client_id: str,
        token: str | None,
        binary: bool,
        on_error: Callable[[dict], None],
        codecs: dict[MediaKind, Codec] | None = None,
    ) -> None:
        """``on_error`` gets each ``ERROR`` the server sends about the session; ``codecs`` says
        what each kind sent is when it is not the seed's JPEG or PCM."""
        self._reactor = reactor
        self._where = where
        self._cafile = cafile
        self._id = client_id
        self._token = token
        self._binary = binary
        self._on_error = on_error
        self._codecs = {kind: codec for kind, codec in (codecs or {}).items() if codec.encoded}
        # The server's KEYFRAME_REQUESTs: counted, not obeyed (the encoder makes a keyframe
        # every second anyway).
        self.keyframe_requests = 0
        self.recording: str | None = None
        self.resume_token: str | None = None
        self.reconnecting = False
        self.resumes = 0
        # The server's CLOSED, whenever it came (after our CLOSE, or before: a limit, shutdown).
        self.closed_reply: dict | None = None
        # Fires with how it ended once the session cannot go on (no more connections).
        self.lost: Deferred[ServerGone] = Deferred()
        # Called when ``status`` changes (the progress line shows it at once).
        self.on_change: Callable[[], None] = lambda: None
        self._proto: SendProtocol | None = None
        self._outbox: Outbox | None = None
        self._acked: dict[MediaKind, int | None] = dict.fromkeys(MediaKind)
        self._sent_before = 0
        self._closing = False
        self._closers: list[Deferred[dict]] = []
        self._gone: ServerGone | None = None

    @property
    def resumable(self) -> bool:
        return self.resume_token is not None

    @property
    def bytes_out(self) -> int:
        return self._sent_before + (self._proto.bytes_out if self._proto else 0)

    def status(self) -> str:
        if self.reconnecting:
            return "reconnecting"
        if self.resumes:
            again = self._outbox.resent if self._outbox is not None else 0
            return (f"resumed after {self.resumes} drop{'s' if self.resumes > 1 else ''} "
                    f"({again} chunks sent again)")  # fmt: skip
        return ""

    async def open(self, timeout: float, opus_head: bytes | None = None) -> dict:
        """Connect and ``CONNECT`` (with ``opus_head``, the Opus stream's identification
        header, when audio is Opus); the ``CONNECTED`` reply. Raises what connecting raises,
        :class:`ServerGone` when the server refuses or does not know the codecs asked for,
        TimeoutError after ``timeout``."""
        hello: dict[str, object] = {"eventType": "CONNECT", "id": self._id, "resume": True}
        if self._token:
            hello["token"] = self._token
        for kind, codec in self._codecs.items():
            hello[f"{kind}Codec"] = codec.value
        if opus_head is not None and self._codecs.get(MediaKind.AUDIO) == Codec.OPUS:
            hello["opusHead"] = pybase64.b64encode(opus_head).decode("ascii")
        proto = await self._connect(hello, timeout)
        connected = proto.connected_reply
        assert connected is not None
        for kind, codec in self._codecs.items():
            if connected.get(f"{kind}Codec") != codec.value:
                # Tell it we are done (CLOSE) before sending anything it cannot use, and wait
                # (briefly) for the connection to close so the CLOSE is not lost on exit.
                proto.send_close()
                proto.sendClose(1000)
                closing = proto.factory.closed.addTimeout(ABANDON_TIMEOUT, self._reactor)
                await closing.addErrback(lambda _: None)
                raise ServerGone(
                    f"the server does not know the encoded-media extension: CONNECTED does "
                    f'not say {kind}Codec "{codec}" (an older livestream?)'
                )
        self.recording = connected.get("recording")
        self.resume_token = connected.get("resumeToken")
        self._adopt(proto)
        return connected

    def carry(self, outbox: Outbox) -> None:
        """Send ``outbox``'s media over this link, on whichever connection is current."""
        self._outbox = outbox
        assert self._proto is not None
        self._proto.registerProducer(outbox, True)

    def send_media(self, kind: MediaKind, seq: int, at: Fraction, key: bool, data: bytes) -> bool:
        assert self._proto is not None
        return self._proto.send_media(kind, seq, at, key, data)

    def close(self) -> Deferred[dict]:
        """``CLOSE`` once the outbox is drained; fires with ``CLOSED``, or fails with
        :class:`ServerGone` if the session ends without it."""
        if self._gone is not None:
            return fail(self._gone)
        if self.closed_reply is not None:
            return succeed(self.closed_reply)
        self._closing = True
        if not self.reconnecting:
            self._close_when_drained()
        d: Deferred[dict] = Deferred()
        self._closers.append(d)
        return d

    async def _connect(self, hello: dict, timeout: float) -> SendProtocol:
        factory = SendFactory(
            self._where, hello, self._binary, self._ack, self._on_error, self._closed,
            self._keyframe_request, self._codecs,
        )  # fmt: skip
        connected = endpoint(self._reactor, self._where, self._cafile, timeout).connect(factory)
        # IStreamClientEndpoint.connect is typed to give any IProtocol; it gives the protocol
        # this factory built (wrapClientTLS unwraps its TLS layer), a SendProtocol.
        proto = cast(SendProtocol, await connected)
        await proto.ready.addTimeout(timeout, self._reactor)
        return proto

    def _adopt(self, proto: SendProtocol) -> None:
        if self._proto is not None:
            self._sent_before += self._proto.bytes_out
        self._proto = proto
        if self._outbox is not None:
            proto.registerProducer(self._outbox, True)
        proto.factory.closed.addCallback(self._lost, proto)

    def _close_when_drained(self) -> None:
        proto = self._proto
        assert self._outbox is not None and proto is not None

        def close(_: None) -> None:
            # A drop in between leaves it to the resume that follows.
            if proto is self._proto and not self.reconnecting:
                proto.send_close()

        self._outbox.drained().addCallback(close)

    def _ack(self, ack: dict) -> None:
        self._acked = {kind: ack.get(kind) for kind in MediaKind}
        if self._outbox is not None:
            self._outbox.acknowledge(self._acked[MediaKind.VIDEO], self._acked[MediaKind.AUDIO])

    def _keyframe_request(self, request: dict) -> None:
        self.keyframe_requests += 1

    def _closed(self, reply: dict) -> None:
        self.closed_reply = reply
        closers, self._closers = self._closers, []
        for d in closers:
            d.callback(reply)

    def _lost(self, gone: ServerGone, proto: SendProtocol) -> None:
        if proto is not self._proto:
            return
        if self._outbox is not None:
            self._outbox.stopProducing()
        if gone.dropped and self.resumable and self.closed_reply is None:
            ensureDeferred(self._resume(gone))
        else:
            self._end(gone)

    async def _resume(self, gone: ServerGone) -> None:
        self.reconnecting = True
        self.on_change()
        hello = {"eventType": "CONNECT", "id": self._id, "resumeToken": self.resume_token}
        deadline = self._reactor.seconds() + GIVE_UP_AFTER
        wait, last = RETRY_FIRST, str(gone)
        while (left := deadline - self._reactor.seconds()) > 0:
            await deferLater(self._reactor, min(wait, left))
            wait = min(2 * wait, RETRY_MAX)
            try:
                proto = await self._connect(hello, ATTEMPT_TIMEOUT)
            except ResumeFailed as e:
                self.reconnecting = False
                self._end(ServerGone(
                    f"the connection was lost and the server could not resume the session "
                    f"({e}); {self._what_is_kept()}"
                ))  # fmt: skip
                return
            except TimeoutError:
                last = f"no answer within {ATTEMPT_TIMEOUT:g} s"
                continue
            except (ConnectError, DNSLookupError) as e:
                last = reason(e)
                continue
            except ServerGone as e:
                last = str(e)
                continue
            self.reconnecting = False
            self.resumes += 1
            self._adopt(proto)
            assert self._outbox is not None
            self._outbox.resend()
            if self._closing:
                self._close_when_drained()
            self.on_change()
            return
        self.reconnecting = False
        self._end(ServerGone(f"the connection was lost and could not be resumed within "
                             f"{GIVE_UP_AFTER:g} s ({last}); {self._what_is_kept()}"))  # fmt: skip

    def _what_is_kept(self) -> str:
        """Where what the server acknowledged should be: a session not resumed is finished by
        the server with what it had, under the name CONNECTED gave."""
        files = [f"{self.recording}{kind.suffix}" for kind, seq in self._acked.items()
                 if seq is not None]  # fmt: skip
        if not files:
            return f"the server had acknowledged nothing of recording {self.recording}"
        return "what the server acknowledged should be in " + " and ".join(files)

    def _end(self, gone: ServerGone) -> None:
        self._gone = gone
        if self._outbox is not None:
            self._outbox.discard()
        closers, self._closers = self._closers, []
        for d in closers:
            d.errback(gone)
        self.lost.callback(gone)
