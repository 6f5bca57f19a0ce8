"""Live sessions fed by another client at the server's rate, for the tests that watch them: JPEG
frames and PCM as the seed's clients send them, or H.264 and Opus as an encoder client does
(one that cannot answer keyframe requests). A :class:`Feeder` keeps when it sent each frame, so
a test shown frame ``n`` (bench.numbered's frames say their number) knows how late it is.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Callable, Sequence

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from tests.support.media import is_keyframe, opus_packets, pcm
from tests.support.websocket import CLOSE_MSG, Client, connect_msg, open_client

FPS = 15
ENCODED = struct.Struct(">BBIq")


class Feeder:
    """Calls ``send(n)`` for frame n = 0, 1, ... at FPS a second, frame n due ``n / FPS`` after
    frame 0 (the session's timeline, as the daemon times frames; one the reactor was late for
    goes at once); after ``count`` frames (then ``sent`` fires), or at :meth:`close`, stops
    and sends CLOSE (after ``count`` only if ``close``: else the session stays open, idle)."""

    def __init__(self, publisher: Client, name: str, send: Callable[[int], None],
                 count: int | None, close: bool = True) -> None:  # fmt: skip
        self.name = name
        self.sent_at: list[float] = []  # time.time() when frame n was sent
        self.sent: Deferred[None] = Deferred()
        # The client's connection: what else the server tells it (KEYFRAME_REQUEST).
        self.publisher = publisher
        self._send = send
        self._count = count
        self._close_after = close
        self._next: IDelayedCall | None = None
        self._closing = False
        self._result: object = None
        self._waiting: list[Deferred] = []

    def start(self) -> None:
        self._tick()

    def _tick(self) -> None:
        now = time.time()
        due = int((now - self.sent_at[0]) * FPS) + 1 if self.sent_at else 1
        while len(self.sent_at) < due:
            if self._count is not None and len(self.sent_at) >= self._count:
                self.sent.callback(None)
                if self._close_after:
                    self.close()
                return
            self.sent_at.append(time.time())
            self._send(len(self.sent_at) - 1)
        wait = self.sent_at[0] + len(self.sent_at) / FPS - time.time()
        self._next = reactor.callLater(max(0.0, wait), self._tick)

    def close(self) -> None:
        """Stop sending and CLOSE the session (once)."""
        if self._closing:
            return
        self._closing = True
        if self._next is not None and self._next.active():
            self._next.cancel()
        self.publisher.send(CLOSE_MSG)
        self.publisher.event("CLOSED", timeout=60).addBoth(self._closed)

    def _closed(self, result: object) -> None:
        self._result = result
        for d in self._waiting:
            d.errback(result) if isinstance(result, Failure) else d.callback(result)
        self._waiting.clear()

    def ended(self) -> Deferred:
        """The CLOSED reply, once it came (CLOSE sent first if it was not)."""
        self.close()
        if isinstance(self._result, Failure):
            return defer.fail(self._result)
        if self._result is not None:
            return defer.succeed(self._result)
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d


async def _feeder(testcase, port: int, connect: str, send: Callable[[Client, int], None],
                  count: int | None, token: str | None, close: bool = True) -> Feeder:  # fmt: skip
    publisher = await open_client(port, f"/?token={token}" if token else "/")
    publisher.send(connect)
    name = (await publisher.event("CONNECTED"))["recording"]
    feeder = Feeder(publisher, name, lambda n: send(publisher, n), count, close)
    feeder.start()
    testcase.addCleanup(feeder.ended)
    return feeder


async def feed_jpeg(testcase, port: int, frames: Sequence[bytes], *, count: int | None = None,
                    token: str | None = None, close: bool = True) -> Feeder:  # fmt: skip
    """JPEG ``frames`` in turn (again from the first after the last) and a frame's worth of
    PCM with each, by client ``camera``; ``token`` in the WebSocket's URL, as a client of a
    server with authentication on sends it. Closed when the test ends, or after ``count``
    (unless not ``close``)."""

    def send(publisher: Client, n: int) -> None:
        publisher.send_binary(b"\x01" + frames[n % len(frames)])
        publisher.send_binary(b"\x02" + pcm(44100 // FPS, seed=n))

    return await _feeder(testcase, port, connect_msg("camera"), send, count, token, close)


async def feed_h264(testcase, port: int, units: Sequence[bytes], *,
                    count: int | None = None) -> Feeder:  # fmt: skip
    """H.264 access ``units`` in turn (each keyframe flagged) and Opus in 20 ms packets, by
    client ``encoder``, timestamped on the frame clock. Closed when the test ends, or after
    ``count`` frames."""
    head, packets = opus_packets(2)
    connect = json.dumps({
        "eventType": "CONNECT", "id": "encoder", "videoCodec": "h264", "audioCodec": "opus",
        "opusHead": base64.b64encode(head).decode("ascii"),
    })  # fmt: skip
    frame_us, packet_us = 1_000_000 // FPS, 20_000
    audio = [0]

    def send(publisher: Client, n: int) -> None:
        unit = units[n % len(units)]
        publisher.send_binary(ENCODED.pack(0x21, int(is_keyframe(unit)), n, n * frame_us) + unit)
        while audio[0] * packet_us < (n + 1) * frame_us:
            a = audio[0]
            packet = packets[a % len(packets)]
            publisher.send_binary(ENCODED.pack(0x22, 0, a, a * packet_us) + packet)
            audio[0] += 1

    return await _feeder(testcase, port, connect, send, count, None)
