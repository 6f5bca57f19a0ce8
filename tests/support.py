"""What the tests share: real media, a real WebSocket client, decoded checks, a real daemon."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

from livestream.recording import ffmpeg

ROOT = Path(__file__).resolve().parent.parent


@cache
def ffmpeg_exe() -> str:
    return ffmpeg.find(None)


@cache
def jpeg_frames(count: int, size: str = "320x240", source: str = "testsrc") -> tuple[bytes, ...]:
    """``count`` distinct JPEG frames of a moving test picture, made by real ffmpeg."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
             "-i", f"{source}=size={size}:rate=15", "-frames:v", str(count), "-q:v", "5",
             os.path.join(tmp, "f_%05d.jpg")],
            check=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return tuple(p.read_bytes() for p in sorted(Path(tmp).iterdir()))


def pcm(samples: int, seed: int = 0) -> bytes:
    """Deterministic s16le samples, different for each seed, so byte-identity is checkable."""
    return bytes((i * 7 + seed * 13 + (i >> 8)) & 0xFF for i in range(samples * 2))


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
        self._seen = 0

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


@dataclass(frozen=True)
class VideoFacts:
    codec: str
    pix_fmt: str
    rate: Fraction
    frames: int
    width: int
    height: int
    duration: float
    faststart: bool


def video_facts(path: Path) -> VideoFacts:
    """What a player sees: decoded frame count, codec, pixel format, rate, size, moov placement."""
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        facts = VideoFacts(
            codec=stream.codec_context.name,
            pix_fmt=stream.codec_context.pix_fmt,
            rate=stream.average_rate,
            frames=frames,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            duration=float(container.duration or 0) / 1e6,
            faststart=_moov_before_mdat(path),
        )
    return facts


def brightness(path: Path) -> list[tuple[float, float]]:
    """Each decoded frame's time and mean luma (0-255), for tests that mark frames by light."""
    levels = []
    with av.open(os.fspath(path)) as container:
        for frame in container.decode(video=0):
            plane = frame.planes[0]
            rows = bytes(plane)
            # Rows are padded to line_size; only the first width bytes are picture.
            luma = b"".join(
                rows[y * plane.line_size : y * plane.line_size + plane.width]
                for y in range(plane.height)
            )
            levels.append((float(frame.time), sum(luma) / len(luma)))
    return levels


def _moov_before_mdat(path: Path) -> bool:
    with open(path, "rb") as f:
        pos = 0
        while True:
            head = f.read(8)
            if len(head) < 8:
                return False
            size = int.from_bytes(head[:4], "big")
            kind = head[4:8]
            if kind == b"moov":
                return True
            if kind == b"mdat":
                return False
            if size == 1:
                size = int.from_bytes(f.read(8), "big")
            pos += size
            f.seek(pos)


@dataclass(frozen=True)
class WavFacts:
    rate: int
    channels: int
    sample_width: int
    samples: int
    data: bytes
    riff_size_ok: bool


def wav_facts(path: Path) -> WavFacts:
    """Parse the WAV by hand so a wrong RIFF or data size cannot be papered over."""
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE", raw[:16]
    riff = int.from_bytes(raw[4:8], "little")
    channels = int.from_bytes(raw[22:24], "little")
    rate = int.from_bytes(raw[24:28], "little")
    bits = int.from_bytes(raw[34:36], "little")
    assert raw[36:40] == b"data", raw[36:40]
    size = int.from_bytes(raw[40:44], "little")
    data = raw[44 : 44 + size]
    assert len(data) == size, (len(data), size)
    return WavFacts(rate, channels, bits // 8, size // 2, data, riff == len(raw) - 8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _DaemonProtocol(ProcessProtocol):
    def __init__(self, log: Path) -> None:
        self.log = open(log, "ab")  # noqa: SIM115 - closed when the process ends
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.log.write(data)
        self.log.flush()

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.log.close()
        self.ended.callback(getattr(reason.value, "exitCode", None))


class Daemon:
    """A real ``twistd -n livestream`` in a child process, as an operator runs it."""

    def __init__(
        self,
        workdir: Path,
        media: Path,
        port: int,
        *extra: str,
        listen: str | None = None,
        launcher: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        """``listen`` replaces the loopback TCP listener on ``port`` (which the daemon must still
        answer on); ``launcher`` is a command that runs twistd (systemd-socket-activate);
        ``env`` is added to the daemon's environment."""
        self.workdir = workdir
        self.media = media
        self.port = port
        self.extra = extra
        self.listen = listen or f"tcp:{port}:interface=127.0.0.1"
        self.launcher = launcher
        self.env = env or {}
        self.log = workdir / "twistd.out"
        self.proto: _DaemonProtocol | None = None

    @property
    def pid(self) -> int:
        return self.proto.transport.pid

    def start(self) -> None:
        self.proto = _DaemonProtocol(self.log)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        argv = [
            *self.launcher, twistd, "-n", "--pidfile=", "livestream",
            "--listen", self.listen,
            "--media", os.fspath(self.media),
            # The suite may run on a nearly full disk; the reserve has tests of its own.
            "--min-free-mb", "0", *self.extra,
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=os.fspath(ROOT), **self.env)
        reactor.spawnProcess(self.proto, argv[0], argv, env=env, path=os.fspath(self.workdir))

    async def listening(self, timeout: float = 30) -> None:
        """Wait until the daemon answers ``GET /recordings`` (a 401 of a daemon with
        authentication on is an answer too)."""
        deadline = reactor.seconds() + timeout
        while True:
            if self.proto.ended.called:
                raise AssertionError(f"daemon exited at start:\n{self.output()}")
            try:
                await get(self.port, "/recordings")
                return
            except ConnectionError:
                if reactor.seconds() > deadline:
                    raise AssertionError(f"daemon not listening:\n{self.output()}") from None
                await sleep(0.1)

    def signal(self, name: str) -> None:
        self.proto.transport.signalProcess(name)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds)


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


async def start_server(
    testcase,
    media: Path,
    *,
    fps: int = 15,
    access=None,
    listen: str = "tcp:{port}:interface=127.0.0.1",
    store=None,
    node: str = "test-node",
    upload_retry_max: float = 60.0,
    **overrides,
):
    """The daemon's whole service tree in this process, on a free loopback port; stopped (which
    finalizes live sessions) when the test ends. Returns (service, port).

    ``access`` is the who-may-connect policy (default: open), ``listen`` the endpoint with the
    port left as ``{port}``; ``webhooks`` and ``retention`` go to the Config, ``store`` is an
    objectstore.Location to upload recordings to; the other overrides go to its Limits."""
    from livestream.auth.access import OPEN
    from livestream.daemon.options import Config
    from livestream.daemon.service import build
    from livestream.sessions.limits import Limits

    port = free_port()
    config = Config(
        listen=(listen.format(port=port),),
        access=access or OPEN,
        media=media,
        fps=fps,
        ffmpeg=overrides.pop("ffmpeg", ffmpeg_exe()),
        preset=overrides.pop("preset", "ultrafast"),
        **{key: overrides.pop(key) for key in ("webhooks", "retention", "presign")
           if key in overrides},  # fmt: skip
        timing=overrides.pop("timing", "frames"),
        mux_audio=overrides.pop("mux_audio", False),
        resume_grace=overrides.pop("resume_grace", 30.0),
        # The suite's temp dir may sit on a fuller disk than any user's: no reserve unless asked.
        limits=Limits(**{"min_free_bytes": 0, **overrides}),
        store=store,
        node=node,
        upload_retry_max=upload_retry_max,
    )
    service = build(config, reactor)
    service.startService()
    testcase.addCleanup(lambda: service.stopService() if service.running else None)
    return service, port
