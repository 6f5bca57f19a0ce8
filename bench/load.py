"""Load generator: real WebSocket clients on 127.0.0.1 that record the way the seed's clients do.

Each client connects, sends ``CONNECT``, then JPEG frames (and optionally PCM audio, 1/fps s of
samples per frame) paced at a frame rate or as fast as the server takes them, then ``CLOSE``, and
waits until its recording is ready. It writes down when it first sent, when the kernel had taken
its last frame, when it sent ``CLOSE``, and when the files were ready.

Clients of the encoded-media extension (``EncodedMedia``, ``--video-codec h264``) send H.264
access units instead (kind ``0x21``: flags, seq, timestamp in µs, the access unit), made once by
a real encoder (``bench.encoded``), with PCM in the timed form (``0x12``) or Opus packets
(``0x22``, ``--audio-codec opus``); timestamps are the frame's index / fps on a clock with a
random epoch per client. Their ``KEYFRAME_REQUEST`` messages are counted and otherwise ignored.

Why raw sockets and asyncio rather than a WebSocket library: the generator must not be the
bottleneck, and it must know when bytes left it. Every message is framed once, up front (client
frames are masked with the all-zero key, which RFC 6455 allows and which makes masking a copy), and
each send waits until the transport buffer is empty, so "sent" means "handed to the kernel" and an
unpaced sender is slowed by TCP back-pressure exactly as far as the server reads.

"Ready" depends on the server: livestream replies ``CLOSED`` once the files are complete and
listed; the old server replies nothing, so there the client polls ``GET /recordings`` and looks at
the listed files themselves until the MP4 has its index and the WAV all its samples.

Usable as a library (``run_clients``) and as a command: ``python -m bench.load --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import random
import secrets
import socket
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Protocol

from bench import encoded
from livestream.library import bmff
from livestream.wire.kinds import BLOCK_BYTES, SAMPLE_RATE, MediaKind

HOST = "127.0.0.1"
WAV_HEADER = 44

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
ZERO_MASK = b"\0\0\0\0"
MAX_SERVER_MESSAGE = 1 << 20
# Loopback TCP autotunes send buffers up to megabytes; a client's sends would then "complete"
# long before the server read them. A bounded send buffer keeps "handed to the kernel" close to
# "taken by the server", so back-pressure shows in the send times and not in CLOSE-to-ready.
SEND_BUFFER = 256 * 1024

# The one-byte kinds of the binary fast path (the daemon's table); --binary-kinds can set others,
# to measure a client that sends something else.
BINARY_VIDEO = MediaKind.VIDEO.binary
BINARY_AUDIO = MediaKind.AUDIO.binary
TIMED_AUDIO = MediaKind.AUDIO.timed
# The encoded-media extension's kind bytes (README: H.264 and Opus): a flags byte (bit 0: key),
# seq (uint32), timestamp (int64 µs), then the access unit or packet.
H264_KIND = MediaKind.VIDEO.encoded
OPUS_KIND = MediaKind.AUDIO.encoded
ENCODED_HEADER = struct.Struct("!BBIq")
TIMED_HEADER = struct.Struct("!BId")


def now() -> float:
    return time.perf_counter()


# --------------------------------------------------------------------------------------------
# What clients send, made and framed once


def find_ffmpeg() -> str:
    """The daemon's own choice of ffmpeg, so the benchmark needs nothing the daemon does not."""
    from livestream.recording import ffmpeg

    return ffmpeg.find(None)


def make_jpegs(
    ffmpeg: str, count: int, size: str, source: str, quality: int, rate: int = 15
) -> tuple[bytes, ...]:
    """``count`` distinct JPEG frames of moving test content, made by real ffmpeg.

    ``mandelbrot`` at quality 3 gives about 95 KB per 640x480 frame (the "100 KB frame" of issue
    3); ``testsrc2`` compresses far better (about 26 KB).
    """
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as tmp:
        subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi",
             "-i", f"{source}=size={size}:rate={rate}", "-frames:v", str(count),
             "-q:v", str(quality), str(Path(tmp) / "f_%05d.jpg")],
            check=True, stdin=subprocess.DEVNULL, timeout=300,
        )  # fmt: skip
        return tuple(p.read_bytes() for p in sorted(Path(tmp).glob("f_*.jpg")))


def pcm_tone(samples: int) -> bytes:
    """A 440 Hz tone, s16le mono: real-looking audio whose length is all that is checked."""
    step = 2 * math.pi * 440 / SAMPLE_RATE
    return struct.pack(f"<{samples}h", *(int(12000 * math.sin(i * step)) for i in range(samples)))


def chunk_samples(index: int, fps: float) -> int:
    """Samples that go with frame ``index``: 1/fps s, rounded so that no sample drifts away."""
    return math.floor((index + 1) * SAMPLE_RATE / fps) - math.floor(index * SAMPLE_RATE / fps)


def ws_head(opcode: int, n: int) -> bytes:
    """The header of one final client frame of ``n`` payload bytes, with the all-zero mask."""
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + ZERO_MASK


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked with the all-zero key (RFC 6455 5.3: masked == payload)."""
    return ws_head(opcode, len(payload)) + payload


def text_frame(doc: dict[str, object]) -> bytes:
    return ws_frame(OP_TEXT, json.dumps(doc, separators=(",", ":")).encode("utf-8"))


def close_frame(code: int = 1000, reason: bytes = b"") -> bytes:
    return ws_frame(OP_CLOSE, struct.pack("!H", code) + reason)


@dataclass(frozen=True)
class Wire:
    """How a STREAM chunk is put on the wire: the seed's JSON text, or issue 3's binary frames."""

    name: str = "json"
    video_kind: int = BINARY_VIDEO
    audio_kind: int = BINARY_AUDIO

    def stream(self, kind: str, chunk: bytes) -> bytes:
        if self.name == "binary":
            tag = self.video_kind if kind == "VIDEO" else self.audio_kind
            return ws_frame(OP_BINARY, bytes([tag]) + chunk)
        encoded = base64.b64encode(chunk).decode("ascii")
        return text_frame(
            {"eventType": "STREAM", "mediaSourceType": kind, "encodedMediaChunk": encoded}
        )


@dataclass(frozen=True)
class Sent:
    """The messages that go with one frame, and what they carry."""

    messages: tuple[bytes, ...]
    samples: int  # PCM: samples at 44.1 kHz; Opus: samples at 48 kHz (960 a packet)
    packets: int = 0  # Opus packets


class Source(Protocol):
    """What clients send: ``frame(i, epoch_us)`` gives frame i's messages (its video and the
    audio that goes with it) on a client clock that starts at ``epoch_us``."""

    @property
    def fps(self) -> float: ...

    @property
    def wire(self) -> str: ...

    @property
    def video_codec(self) -> str | None: ...

    @property
    def audio_codec(self) -> str | None: ...

    def connect_fields(self) -> dict[str, object]: ...

    def frame(self, index: int, epoch_us: int, audio: bool) -> Sent: ...


@dataclass(frozen=True)
class Media:
    """Every STREAM message a client sends, framed once; clients cycle through the frames."""

    video: tuple[bytes, ...]
    audio: dict[int, bytes]
    fps: float
    wire: str
    jpeg_bytes: float
    video_codec = None
    audio_codec = None

    def connect_fields(self) -> dict[str, object]:
        return {}

    def frame(self, index: int, epoch_us: int, audio: bool) -> Sent:
        video = self.video[index % len(self.video)]
        if not audio:
            return Sent((video,), 0)
        samples = chunk_samples(index, self.fps)
        return Sent((video, self.audio[samples]), samples)

    @classmethod
    def prepare(cls, jpegs: Sequence[bytes], fps: float, wire: Wire) -> Media:
        lengths = {chunk_samples(i, fps) for i in range(max(1, math.ceil(fps)) * 2)}
        tone = pcm_tone(max(lengths))
        return cls(
            video=tuple(wire.stream("VIDEO", j) for j in jpegs),
            audio={n: wire.stream("AUDIO", tone[: n * BLOCK_BYTES]) for n in lengths},
            fps=fps,
            wire=wire.name,
            jpeg_bytes=statistics.fmean(len(j) for j in jpegs),
        )


def opus_packets_before(index: int, fps: float) -> int:
    """Opus packets (20 ms) that start before frame ``index`` does (at index / fps s)."""
    return math.ceil(index * 1_000_000 / fps / encoded.OPUS_FRAME_US - 1e-9)


@dataclass(frozen=True)
class EncodedMedia:
    """H.264 access units, and PCM (timed form) or Opus packets, framed at each send.

    Each message carries its own seq and timestamp, so it cannot be framed once for every
    client; what can is: the base64 (JSON) or the WebSocket header (binary) of every chunk,
    so a send is one small header packed and two copies."""

    clip: encoded.H264Clip
    opus: encoded.OpusClip | None
    fps: float
    wire: str
    _video_heads: tuple[bytes, ...]
    _video_b64: tuple[str, ...]
    _audio: dict[int, bytes]  # PCM chunks by sample count
    _audio_heads: tuple[bytes, ...]  # binary: per Opus packet; per PCM length below
    _pcm_heads: dict[int, bytes]

    video_codec = "h264"

    @property
    def audio_codec(self) -> str | None:
        return "opus" if self.opus is not None else None

    @property
    def video_bytes(self) -> float:
        return self.clip.mean_bytes

    @classmethod
    def prepare(
        cls, clip: encoded.H264Clip, opus: encoded.OpusClip | None, fps: float, wire: str
    ) -> EncodedMedia:
        units = clip.units
        heads = tuple(ws_head(OP_BINARY, ENCODED_HEADER.size + len(u.data)) for u in units)
        b64 = (
            tuple(base64.b64encode(u.data).decode("ascii") for u in units) if wire == "json" else ()
        )
        lengths = {chunk_samples(i, fps) for i in range(max(1, math.ceil(fps)) * 2)}
        tone = pcm_tone(max(lengths))
        pcm = {n: tone[: n * BLOCK_BYTES] for n in lengths}
        pcm_heads = {n: ws_head(OP_BINARY, TIMED_HEADER.size + len(c)) for n, c in pcm.items()}
        packets = opus.packets if opus is not None else ()
        opus_heads = tuple(ws_head(OP_BINARY, ENCODED_HEADER.size + len(p)) for p in packets)
        return cls(clip, opus, fps, wire, heads, b64, pcm, opus_heads, pcm_heads)

    def connect_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {"videoCodec": "h264"}
        if self.opus is not None:
            fields["audioCodec"] = "opus"
            fields["opusHead"] = base64.b64encode(self.opus.head).decode("ascii")
        return fields

    def frame(self, index: int, epoch_us: int, audio: bool) -> Sent:
        n = index % len(self.clip.units)
        unit = self.clip.units[n]
        ts = epoch_us + round(index * 1_000_000 / self.fps)
        if self.wire == "json":
            doc = {"eventType": "STREAM", "mediaSourceType": "VIDEO",
                   "encodedMediaChunk": self._video_b64[n], "timestamp": ts, "key": unit.key,
                   "seq": index}  # fmt: skip
            messages = [text_frame(doc)]
        else:
            head = ENCODED_HEADER.pack(H264_KIND, 1 if unit.key else 0, index, ts)
            messages = [self._video_heads[n] + head + unit.data]
        if not audio:
            return Sent(tuple(messages), 0)
        if self.opus is None:
            return self._pcm(index, epoch_us, messages)
        return self._opus(index, epoch_us, messages)

    def _pcm(self, index: int, epoch_us: int, messages: list[bytes]) -> Sent:
        samples = chunk_samples(index, self.fps)
        first = math.floor(index * SAMPLE_RATE / self.fps)
        at_ms = (epoch_us + first * 1_000_000 / SAMPLE_RATE) / 1000
        chunk = self._audio[samples]
        if self.wire == "json":
            messages.append(text_frame({
                "eventType": "STREAM", "mediaSourceType": "AUDIO", "seq": index,
                "encodedMediaChunk": base64.b64encode(chunk).decode("ascii"),
                "captureTime": at_ms,
            }))  # fmt: skip
        else:
            head = TIMED_HEADER.pack(TIMED_AUDIO, index, at_ms)
            messages.append(self._pcm_heads[samples] + head + chunk)
        return Sent(tuple(messages), samples)

    def _opus(self, index: int, epoch_us: int, messages: list[bytes]) -> Sent:
        assert self.opus is not None
        packets = self.opus.packets
        first, end = opus_packets_before(index, self.fps), opus_packets_before(index + 1, self.fps)
        for j in range(first, end):
            packet = packets[j % len(packets)]
            ts = epoch_us + j * encoded.OPUS_FRAME_US
            if self.wire == "json":
                messages.append(text_frame({
                    "eventType": "STREAM", "mediaSourceType": "AUDIO", "seq": j,
                    "encodedMediaChunk": base64.b64encode(packet).decode("ascii"),
                    "timestamp": ts,
                }))  # fmt: skip
            else:
                head = ENCODED_HEADER.pack(OPUS_KIND, 0, j, ts)
                messages.append(self._audio_heads[j % len(packets)] + head + packet)
        count = end - first
        return Sent(tuple(messages), count * encoded.OPUS_FRAME_SAMPLES, count)


# --------------------------------------------------------------------------------------------
# A minimal RFC 6455 client


class WebSocketError(Exception):
    """The server broke the protocol or refused the upgrade."""


@dataclass(frozen=True)
class Received:
    at: float
    text: str


class WebSocket:
    """A client connection: sends pre-framed bytes, reads server frames in a task of its own.

    Text messages land in ``messages`` with the time they were read; pings are answered; a close
    frame is echoed once and ends the connection.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.messages: asyncio.Queue[Received] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.bytes_sent = 0
        self._close_sent = False
        self._eof_sent = False
        self._task = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(
        cls, port: int, host: str = HOST, timeout: float = 10.0, sndbuf: int = SEND_BUFFER
    ) -> WebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.setblocking(False)
        async with asyncio.timeout(timeout):
            try:
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
            except BaseException:
                sock.close()
                raise
            reader, writer = await asyncio.open_connection(sock=sock)
            try:
                await _handshake(reader, writer, host, port)
            except BaseException:
                writer.close()
                raise
        # Drain returns only once the kernel has taken every byte: "sent" means sent.
        writer.transport.set_write_buffer_limits(high=0)
        return cls(reader, writer)

    async def send(self, frame: bytes) -> None:
        if self.closed.is_set():
            raise ConnectionResetError("the server closed the WebSocket")
        self._writer.write(frame)
        self.bytes_sent += len(frame)
        await self._writer.drain()

    @property
    def local_port(self) -> int:
        """This end's port: the daemon names the connection's peer ``tcp4:127.0.0.1:<it>``."""
        return int(self._writer.get_extra_info("sockname")[1])

    async def vanish(self, timeout: float = 15.0) -> None:
        """End the connection after what was sent with a FIN, with neither CLOSE nor a close
        handshake, as a client whose process exited does: the server reads everything sent,
        then the end. A half-close, then the server's own close awaited (at most ``timeout``):
        closing at once with a reply unread would send an RST instead (Linux), which drops
        whatever the kernel had not delivered yet."""
        self._close_sent = True
        if self._writer.can_write_eof():
            self._eof_sent = True
            self._writer.write_eof()
            try:
                await asyncio.wait_for(self.closed.wait(), timeout)
            except TimeoutError:
                pass
        self._writer.close()
        await self._stop_reading()

    async def cut(self) -> None:
        """Reset the connection at once (SO_LINGER 0: an RST), discarding whatever the kernel
        had not sent yet, as a link that breaks does."""
        self._close_sent = True
        sock = self._writer.get_extra_info("socket")
        try:
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # already closed (by the server): nothing left to reset
        self._writer.transport.abort()
        await self._stop_reading()

    async def _stop_reading(self) -> None:
        self._task.cancel()
        await asyncio.wait({self._task}, timeout=1.0)

    async def close(self, timeout: float = 5.0) -> None:
        """Close handshake from our side if the server has not started one, then drop TCP."""
        try:
            if not self._close_sent and not self.closed.is_set():
                self._close_sent = True
                self._writer.write(close_frame())
                await asyncio.wait_for(self.closed.wait(), timeout)
        except (OSError, TimeoutError):
            pass
        finally:
            self._writer.close()
            self._task.cancel()
            # wait() neither raises the reader's end nor swallows a cancellation of our caller.
            await asyncio.wait({self._task}, timeout=1.0)

    async def _read_loop(self) -> None:
        parts: list[bytes] = []
        try:
            while True:
                fin, opcode, payload = await _read_frame(self._reader)
                if opcode == OP_CLOSE:
                    self._closed_by_server(payload)
                    return
                if opcode == OP_PING and not self._eof_sent:
                    self._writer.write(ws_frame(OP_PONG, payload))
                elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                    parts.append(payload)
                    if fin:
                        text = b"".join(parts).decode("utf-8", "replace")
                        parts.clear()
                        self.messages.put_nowait(Received(now(), text))
        except (asyncio.IncompleteReadError, OSError, WebSocketError):
            pass
        finally:
            self.closed.set()

    def _closed_by_server(self, payload: bytes) -> None:
        self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        if not self._close_sent:
            self._close_sent = True
            self._writer.write(close_frame(self.close_code if self.close_code != 1005 else 1000))


async def _handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
) -> None:
    key = base64.b64encode(secrets.token_bytes(16))
    writer.write(
        b"GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (host.encode(), port, key)
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    if " 101 " not in status + " ":
        raise WebSocketError(f"upgrade refused: {status}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    expected = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    if headers.get("sec-websocket-accept") != expected:
        raise WebSocketError("bad Sec-WebSocket-Accept")


async def _read_frame(reader: asyncio.StreamReader) -> tuple[bool, int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    if n > MAX_SERVER_MESSAGE:
        raise WebSocketError(f"server frame of {n} bytes")
    key = await reader.readexactly(4) if b1 & 0x80 else None
    payload = await reader.readexactly(n)
    if key is not None:  # servers must not mask, but a masked frame is still readable
        mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
        payload = (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")
    return bool(b0 & 0x80), b0 & 0x0F, payload


async def http_get_json(port: int, path: str, timeout: float = 5.0) -> object:
    """The JSON body of a 200 answer to GET (:func:`http_request`)."""
    return json.loads(await http_get(port, path, timeout))


async def http_get(port: int, path: str, timeout: float = 5.0) -> bytes:
    """The body of a 200 answer to GET over HTTP/1.0 (the body ends at EOF)."""
    answer = await http_request(port, path, timeout=timeout)
    if answer.status != 200:
        raise WebSocketError(f"GET {path}: {answer.status_line}")
    return answer.body


@dataclass(frozen=True)
class HttpAnswer:
    """One HTTP answer: the status, the headers (names in lower case), and the body (empty if
    it was only counted)."""

    status: int
    status_line: str
    headers: dict[str, str]
    body: bytes
    body_bytes: int


async def http_request(
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    keep_body: bool = True,
    method: str = "GET",
) -> HttpAnswer:
    """GET (or ``method``, without a body) over HTTP/1.0, so neither server uses chunked
    encoding and the body ends at EOF.

    Any status is returned, not raised, so a caller can time a 304 or read a 400's reason;
    ``keep_body=False`` counts the body's bytes and drops them, for a client that fetches a
    large document in a loop only to load the server."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
        try:
            request = f"{method} {path} HTTP/1.0\r\nHost: {HOST}:{port}\r\n{extra}\r\n"
            writer.write(request.encode())
            await writer.drain()
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                raise WebSocketError(f"GET {path}: no HTTP answer") from e
            parts: list[bytes] = []
            count = 0
            while chunk := await reader.read(1 << 20):
                count += len(chunk)
                if keep_body:
                    parts.append(chunk)
        finally:
            writer.close()
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    fields = status_line.split(" ", 2)
    status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
    found = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return HttpAnswer(status, status_line, found, b"".join(parts), count)


# --------------------------------------------------------------------------------------------
# Clients


@dataclass(frozen=True)
class ClientPlan:
    client_id: str
    frames: int
    pace_fps: float | None  # None: unpaced, each message as soon as the previous one is sent
    audio: bool
    phase: float = 0.0  # paced: offset into the first frame period, so clients don't send in step


@dataclass
class ClientResult:
    """What one client did and saw; times are ``time.perf_counter()`` seconds."""

    client_id: str
    frames_sent: int = 0
    samples_sent: int = 0  # PCM: at 44.1 kHz; Opus: at 48 kHz, before the decoder's pre-skip
    packets_sent: int = 0  # Opus packets
    bytes_sent: int = 0  # every WebSocket frame, headers included: what went on the wire
    t_first_send: float | None = None
    t_last_frame: float | None = None
    t_close_sent: float | None = None
    t_ready: float | None = None
    video: str | None = None
    audio: str | None = None
    max_lag: float | None = None
    errors: list[str] = field(default_factory=list)
    close_code: int | None = None
    failure: str | None = None
    connected: dict[str, object] | None = None  # the CONNECTED reply
    keyframe_requests: int = 0
    opus_pre_skip: int | None = None  # an Opus session: the OpusHead's pre-skip

    @property
    def close_to_ready(self) -> float | None:
        if self.t_ready is None or self.t_close_sent is None:
            return None
        return self.t_ready - self.t_close_sent


class Readiness(Protocol):
    """How a client learns that its recording is ready after it sent CLOSE."""

    async def wait(self, ws: WebSocket, result: ClientResult, deadline: float) -> None: ...


class ReplyReadiness:
    """livestream: ready when the ``CLOSED`` reply arrives (it names the files)."""

    async def wait(self, ws: WebSocket, result: ClientResult, deadline: float) -> None:
        while (remaining := deadline - now()) > 0:
            try:
                message = await asyncio.wait_for(ws.messages.get(), min(0.5, remaining))
            except TimeoutError:
                if ws.closed.is_set() and ws.messages.empty():
                    raise ConnectionResetError(
                        "the connection ended without a CLOSED reply"
                    ) from None
                continue
            if _note_reply(message, result):
                return
        raise TimeoutError("no CLOSED reply in time")


def _note_reply(message: Received, result: ClientResult) -> bool:
    """Record an ERROR, or take the ``CLOSED`` reply; True once CLOSED has arrived."""
    doc = json.loads(message.text)
    if doc.get("eventType") == "ERROR":
        result.errors.append(str(doc.get("code")))
    elif doc.get("eventType") == "KEYFRAME_REQUEST":
        result.keyframe_requests += 1
    elif doc.get("eventType") == "CONNECTED":
        result.connected = doc
    elif doc.get("eventType") == "CLOSED":
        result.t_ready = message.at
        result.video = doc["recordings"].get("video")
        result.audio = doc["recordings"].get("audio")
        return True
    return False


@dataclass
class _FileWatch:
    """The last observed state of one listed file, and when it was first seen in that state."""

    state: tuple[int, int] | None = None
    since: float = 0.0


class ListingReadiness:
    """A server that says nothing (the seed): ready when the files are listed AND complete.

    Complete means the MP4 has its index with every frame sent (or, if it never gets there, its
    size and frame count stopped changing for ``settle`` s; then it counts from when they last
    changed) and the WAV header and length hold every sample sent.
    """

    def __init__(self, port: int, media: Path, interval: float = 0.05, settle: float = 1.0):
        self._port = port
        self._media = media
        self._interval = interval
        self._settle = settle

    async def wait(self, ws: WebSocket, result: ClientResult, deadline: float) -> None:
        want = {"video": result.frames_sent, "audio": result.samples_sent}
        want = {kind: n for kind, n in want.items() if n}
        watches = {kind: _FileWatch() for kind in want}
        ready_at: dict[str, float] = {}
        while now() < deadline:
            t = now()
            listing = await http_get_json(self._port, "/recordings")
            for kind in set(want) - set(ready_at):
                name = _find_listed(listing, kind, result.client_id)
                if name is None:
                    continue
                setattr(result, kind, name)
                state = await asyncio.to_thread(_file_state, self._media / kind / name, kind)
                done = self._complete(watches[kind], state, want[kind], t)
                if done is not None:
                    ready_at[kind] = done
            if len(ready_at) == len(want):
                result.t_ready = max(ready_at.values(), default=t)
                return
            await asyncio.sleep(self._interval)
        raise TimeoutError("recording not listed and complete in time")

    def _complete(
        self, watch: _FileWatch, state: tuple[int, int] | None, expect: int, t: float
    ) -> float | None:
        if state is None:
            return None
        if state[1] >= expect:
            return t
        if state != watch.state:
            watch.state, watch.since = state, t
            return None
        return watch.since if t - watch.since >= self._settle else None


def _find_listed(listing: object, kind: str, client_id: str) -> str | None:
    names = listing.get(kind, []) if isinstance(listing, dict) else []
    return next((n for n in names if n.startswith(f"{client_id}_")), None)


def _file_state(path: Path, kind: str) -> tuple[int, int] | None:
    """(size, frames or samples it holds so far), or None while it cannot be read as complete."""
    try:
        size = path.stat().st_size
        count = mp4_indexed_frames(path) if kind == "video" else wav_samples(path)
    except OSError:
        return None
    return None if count is None else (size, count)


def mp4_indexed_frames(path: Path) -> int | None:
    """Frames the MP4's index lists, without decoding; None before the index is written."""
    if not _has_top_level_box(path, b"moov"):
        return None
    import av

    try:
        with av.open(str(path)) as container:
            return container.streams.video[0].frames if container.streams.video else 0
    except (av.FFmpegError, IndexError):
        return None


def _has_top_level_box(path: Path, box: bytes, limit: int = 64) -> bool:
    """Walk the top-level ISO-BMFF boxes: cheap, and the seed's ffmpeg writes ``moov`` last."""
    with open(path, "rb") as f:
        return any(found.type == box for found in islice(bmff.file_boxes(f), limit))


def wav_samples(path: Path) -> int | None:
    """Samples both the header and the file length agree on; None before there is a header."""
    with open(path, "rb") as f:
        head = f.read(WAV_HEADER)
        size = f.seek(0, 2)
    if len(head) < WAV_HEADER or head[:4] != b"RIFF" or head[36:40] != b"data":
        return None
    declared = struct.unpack("<I", head[40:44])[0]
    return min(declared, size - WAV_HEADER) // BLOCK_BYTES


def client_epoch(client_id: str) -> int:
    """Where a client's clock starts (µs): random per client, the same in every run."""
    return random.Random(client_id).randrange(1 << 40)


async def _stream(ws: WebSocket, plan: ClientPlan, media: Source, result: ClientResult, t0: float):
    """Send the plan's frames (and audio); on a schedule if paced, else as fast as TCP allows."""
    lag = 0.0
    epoch = client_epoch(plan.client_id)
    for i in range(plan.frames):
        due = None
        if plan.pace_fps:
            due = t0 + plan.phase + i / plan.pace_fps
            delay = due - now()
            if delay > 0:
                await asyncio.sleep(delay)
        if result.t_first_send is None:
            result.t_first_send = now()
        sent = media.frame(i, epoch, plan.audio)
        for n, message in enumerate(sent.messages):
            await ws.send(message)
            if n == 0:
                result.frames_sent += 1
        result.samples_sent += sent.samples
        result.packets_sent += sent.packets
        result.t_last_frame = now()
        if due is not None:
            lag = max(lag, result.t_last_frame - due)
        else:
            await asyncio.sleep(0)  # let the other unpaced clients have their turn
    result.max_lag = lag if plan.pace_fps else None


async def _session(
    ws: WebSocket,
    plan: ClientPlan,
    media: Source,
    readiness: Readiness,
    t0: float,
    timeout: float,
) -> ClientResult:
    result = ClientResult(plan.client_id)
    if isinstance(media, EncodedMedia) and media.opus is not None and plan.audio:
        result.opus_pre_skip = media.opus.pre_skip
    deadline = now() + timeout
    connect = {"eventType": "CONNECT", "id": plan.client_id, **media.connect_fields()}
    try:
        async with asyncio.timeout(timeout):
            await ws.send(text_frame(connect))
            await _stream(ws, plan, media, result, t0)
            await ws.send(text_frame({"eventType": "CLOSE"}))
            result.t_close_sent = now()
            await readiness.wait(ws, result, deadline)
    except (OSError, TimeoutError, WebSocketError, asyncio.IncompleteReadError) as e:
        result.failure = f"{type(e).__name__}: {e}"
    finally:
        await ws.close()
    while not ws.messages.empty():
        _note_reply(ws.messages.get_nowait(), result)
    result.close_code = ws.close_code
    result.bytes_sent = ws.bytes_sent
    if result.failure is None:
        result.failure = _unacknowledged(connect, result.connected)
    return result


def _unacknowledged(connect: dict[str, object], connected: dict[str, object] | None) -> str | None:
    """A codec the client announced that ``CONNECTED`` does not echo: a server that does not
    know the extension, which would record nothing useful (README)."""
    if connected is None:
        return None
    for key in ("videoCodec", "audioCodec"):
        if key in connect and connected.get(key) != connect[key]:
            return f"CONNECTED says {key}={connected.get(key)!r}, not {connect[key]!r}"
    return None


async def run_clients(
    port: int,
    plans: Sequence[ClientPlan],
    media: Source,
    readiness: Readiness,
    timeout: float,
    sndbuf: int = SEND_BUFFER,
) -> list[ClientResult]:
    """Connect every client first, then start them together; each is bounded by ``timeout`` s."""
    sockets = await asyncio.gather(*(WebSocket.connect(port, sndbuf=sndbuf) for _ in plans))
    t0 = now() + 0.05
    return list(
        await asyncio.gather(
            *(
                _session(ws, p, media, readiness, t0, timeout)
                for ws, p in zip(sockets, plans, strict=True)
            )
        )
    )


def make_plans(
    prefix: str, clients: int, frames: int, pace_fps: float | None, audio: bool
) -> list[ClientPlan]:
    """Client ids are unique per run and never a prefix of one another (``<prefix>-cNN``)."""
    period = 1 / pace_fps if pace_fps else 0.0
    return [
        ClientPlan(f"{prefix}-c{i:02d}", frames, pace_fps, audio, phase=period * i / clients)
        for i in range(clients)
    ]


# --------------------------------------------------------------------------------------------
# What came out


@dataclass(frozen=True)
class Loss:
    """Frames and samples sent that are not in the recordings (decoded), and any extra ones."""

    frames: int
    samples: int
    extra_frames: int
    extra_samples: int


def decoded_frames(path: Path) -> int:
    """Decode every frame: a frame only counts if a player could show it."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return 0
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            return sum(1 for _ in container.decode(stream))
    except av.FFmpegError:
        return 0


def _recorded_file(media: Path, kind: str, listed: str | None, client_id: str) -> Path | None:
    if listed:
        return media / kind / listed
    ext = ".mp4" if kind == "video" else ".wav"
    found = sorted((media / kind).glob(f"{client_id}_*{ext}"))
    return found[0] if found else None


# Opus is decoded to 44.1 kHz after the session: the decoder drops the pre-skip and the
# resampler may hold back a few samples at the end, so its WAV is checked to within one packet.
OPUS_SLACK = encoded.OPUS_FRAME_SAMPLES * SAMPLE_RATE // encoded.OPUS_RATE  # 882


def expected_samples(r: ClientResult) -> tuple[int, int]:
    """The WAV samples a client's audio should give, and how far off they may be."""
    if r.opus_pre_skip is None:
        return r.samples_sent, 0
    if not r.packets_sent:
        return 0, 0
    decoded = max(0, r.samples_sent - r.opus_pre_skip)
    return decoded * SAMPLE_RATE // encoded.OPUS_RATE, OPUS_SLACK


def check_output(r: ClientResult, media: Path) -> Loss:
    """Decode one client's MP4 and read its WAV; a missing or empty file loses everything."""
    video = _recorded_file(media, "video", r.video, r.client_id)
    audio = _recorded_file(media, "audio", r.audio, r.client_id)
    frames = decoded_frames(video) if video and video.exists() else 0
    samples = (wav_samples(audio) or 0) if audio and audio.exists() else 0
    want_samples, slack = expected_samples(r)
    return Loss(
        max(0, r.frames_sent - frames),
        max(0, want_samples - samples - slack),
        max(0, frames - r.frames_sent),
        max(0, samples - want_samples - slack),
    )


def check_outputs(results: Sequence[ClientResult], media: Path) -> Loss:
    """Every client's :func:`check_output`, summed."""
    losses = [check_output(r, media) for r in results]
    return Loss(
        sum(x.frames for x in losses),
        sum(x.samples for x in losses),
        sum(x.extra_frames for x in losses),
        sum(x.extra_samples for x in losses),
    )


def summarize(results: Sequence[ClientResult], record_fps: float) -> dict[str, object]:
    """The client-side figures of one run (the runner adds the server-side ones)."""
    firsts = [r.t_first_send for r in results if r.t_first_send is not None]
    lasts = [r.t_last_frame for r in results if r.t_last_frame is not None]
    frames = sum(r.frames_sent for r in results)
    span = (max(lasts) - min(firsts)) if firsts and lasts else 0.0
    latencies = [r.close_to_ready for r in results if r.close_to_ready is not None]
    lags = [r.max_lag for r in results if r.max_lag is not None]
    return {
        "clients": len(results),
        "frames_sent": frames,
        "samples_sent": sum(r.samples_sent for r in results),
        "recorded_minutes": frames / record_fps / 60,
        "ingest_fps": frames / span if span > 0 else None,
        "close_to_ready_median_s": statistics.median(latencies) if latencies else None,
        "close_to_ready_max_s": max(latencies) if latencies else None,
        "max_send_lag_s": max(lags) if lags else None,
        "bytes_sent": sum(r.bytes_sent for r in results),
        "keyframe_requests": sum(r.keyframe_requests for r in results),
        "not_ready": sum(1 for r in results if r.t_ready is None),
        "failures": sorted({r.failure for r in results if r.failure}),
        "errors": sorted({e for r in results for e in r.errors}),
    }


# --------------------------------------------------------------------------------------------
# Command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--frames", type=int, default=300, help="frames per client")
    p.add_argument("--fps", type=float, default=15, help="pace; 0 sends unpaced")
    p.add_argument("--record-fps", type=float, default=15, help="rate audio chunks follow")
    p.add_argument("--audio", action="store_true", help="send 1/fps s of PCM with each frame")
    p.add_argument("--wire", choices=("json", "binary"), default="json")
    p.add_argument(
        "--video-codec",
        choices=("jpeg", "h264"),
        default="jpeg",
        help="h264: send H.264 access units (0x21), encoded once by ffmpeg",
    )
    p.add_argument(
        "--audio-codec",
        choices=("pcm", "opus"),
        default="pcm",
        help="with --video-codec h264: PCM in the timed form (0x12) or Opus (0x22)",
    )
    p.add_argument("--x264", default="", help="with h264: extra x264 arguments, e.g. '-crf 28'")
    p.add_argument("--binary-kinds", default=f"{BINARY_VIDEO},{BINARY_AUDIO}",
                   help="the first byte of binary video and audio messages, e.g. 1,2")  # fmt: skip
    p.add_argument("--ready", choices=("reply", "listing"), default="reply",
                   help="reply: wait for CLOSED (livestream); listing: poll GET /recordings "
                        "and look at the files in --media (the old server)")  # fmt: skip
    p.add_argument("--media", type=Path, help="the server's media directory (for --ready listing)")
    p.add_argument("--size", default="640x480")
    p.add_argument(
        "--source",
        default="mandelbrot",
        help="ffmpeg lavfi source of the frames (h264: testsrc2 unless given)",
    )
    p.add_argument("--quality", type=int, default=3, help="JPEG -q:v (2 best .. 31 worst)")
    p.add_argument("--distinct", type=int, default=150, help="distinct frames, cycled")
    p.add_argument("--timeout", type=float, default=600, help="bound on each client, seconds")
    p.add_argument("--sndbuf", type=int, default=SEND_BUFFER, help="SO_SNDBUF; 0: kernel's")
    p.add_argument("--id-prefix", default=f"load-{int(time.time())}")
    p.add_argument("--check", action="store_true", help="decode the outputs (needs --media)")
    return p.parse_args(argv)


def _source(args: argparse.Namespace, cache: Path) -> tuple[Source, dict[str, object]]:
    """What the clients send, and a figure or two about it."""
    if args.video_codec == "h264":
        enc = encoded.Encoder(find_ffmpeg(), cache)
        source = args.source if args.source != "mandelbrot" else "testsrc2"
        clip = enc.h264(args.size, args.record_fps, args.distinct, source,
                        x264=args.x264.split())  # fmt: skip
        opus = enc.opus(max(1.0, len(clip.units) / args.record_fps))
        media = EncodedMedia.prepare(
            clip, opus if args.audio_codec == "opus" else None, args.record_fps, args.wire
        )
        return media, {"h264_kb": clip.mean_bytes / 1000}
    video_kind, audio_kind = (int(x, 0) for x in args.binary_kinds.split(","))
    jpegs = make_jpegs(find_ffmpeg(), args.distinct, args.size, args.source, args.quality)
    jpeg = Media.prepare(jpegs, args.record_fps, Wire(args.wire, video_kind, audio_kind))
    return jpeg, {"jpeg_kb": jpeg.jpeg_bytes / 1000}


async def _main(args: argparse.Namespace) -> dict[str, object]:
    if args.audio_codec == "opus" and args.video_codec != "h264":
        raise SystemExit("--audio-codec opus goes with --video-codec h264")
    with tempfile.TemporaryDirectory(prefix="bench-encoded-") as cache:
        media, facts = _source(args, Path(cache))
    if args.ready == "listing":
        if args.media is None:
            raise SystemExit("--ready listing needs --media DIR")
        readiness: Readiness = ListingReadiness(args.port, args.media)
    else:
        readiness = ReplyReadiness()
    plans = make_plans(args.id_prefix, args.clients, args.frames, args.fps or None, args.audio)
    results = await run_clients(args.port, plans, media, readiness, args.timeout, args.sndbuf)
    summary = summarize(results, args.record_fps)
    summary.update(facts)
    if args.check and args.media is not None:
        summary["lost"] = asdict(check_outputs(results, args.media))
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    print(json.dumps(asyncio.run(_main(args))))


if __name__ == "__main__":
    main()
