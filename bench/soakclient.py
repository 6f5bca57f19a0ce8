"""The soak's clients: one session at a time each, a mix of everything the protocol allows.

A session is planned up front (:class:`SessionPlan`, drawn from the run's seed): JPEG + PCM or
H.264 + Opus, JSON text or binary messages, paced at 15 fps or unpaced, with or without audio,
resumable (with connections the client cuts with an RST at planned frames, then resumes) or
not, ended with ``CLOSE`` or abandoned (the TCP connection closed with a FIN, no ``CLOSE``).
Every chunk is a function of its index, so what was sent can be told again at the end without
keeping it: video frame *i* is JPEG (or access unit) *i* mod the clip's length; PCM chunk *i*
is 1/15 s of a tone whose first two samples carry *i* (so a WAV's bytes show a chunk that is
missing, doubled or out of order); Opus packet *j* is packet *j* mod the clip's length.

What the session did and saw goes into its :class:`SessionRecord`: what was sent (distinct
chunks, a re-sent chunk counted once), the ``ACK``s, every ``ERROR`` with its time, the cuts and
resumes, how it ended, and from the client's side what the daemon surely received: every chunk
sent on the last connection more than ``in_flight`` bytes before its end (what the kernel's
buffers can hold is all that can be lost between the client and the daemon's reads), and every
chunk acknowledged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from bench import encoded, load
from livestream.wire.kinds import BLOCK_BYTES, SAMPLE_RATE, MediaKind

FPS = 15
SIZE = "160x120"
# 1/15 s of PCM per frame: 2940 samples, 5880 bytes.
CHUNK_SAMPLES = SAMPLE_RATE // FPS
VIDEO, AUDIO = "video", "audio"
JPEG, H264 = "jpeg", "h264"
CLOSE, ABANDON = "close", "abandon"

# How a session ended, from the client's side.
CLOSED = "closed"  # CLOSED received after our CLOSE
ABANDONED = "abandoned"  # we closed TCP without CLOSE
STORAGE_FULL = "storage_full"  # ERROR storage_full, then CLOSED
LOST = "lost"  # the connection went and did not come back (resumed, if resumable)
RESUME_FAILED = "resume_failed"  # the daemon refused the resume
SERVER_CLOSED = "server_closed"  # CLOSED without our CLOSE, for another reason
REFUSED = "refused"  # CONNECT answered with an ERROR
NO_REPLY = "no_reply"  # no CONNECTED (the connection dropped, or timed out)

CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 10.0
# Longest a CLOSE may wait for CLOSED (the daemon finishes the files first; a stopped encoder
# stalls it for as long as it is stopped).
CLOSED_TIMEOUT = 60.0
# Longest one send may wait for the kernel to take it (an encoder stopped for a while pauses the
# socket that long): past it, the session is a problem of its own.
SEND_TIMEOUT = 45.0
# What the client asks of the kernel for its send buffer (it doubles it): small, so that what
# can be in flight between the client and the daemon's reads stays small.
SEND_BUFFER = 64 * 1024


# --------------------------------------------------------------------------------------------
# What clients send, made once


@dataclass(frozen=True)
class Clips:
    """The media every session cycles through, made once at the start of a run."""

    jpegs: tuple[bytes, ...]
    jpeg_b64: tuple[str, ...]
    units: tuple[encoded.AccessUnit, ...]
    unit_b64: tuple[str, ...]
    opus_head: bytes
    opus: tuple[bytes, ...]
    opus_b64: tuple[str, ...]
    tone: bytes  # CHUNK_SAMPLES samples of a 440 Hz tone

    @property
    def pre_skip(self) -> int:
        return struct.unpack_from("<H", self.opus_head, 10)[0]

    @classmethod
    def make(cls, ffmpeg: str, enc: encoded.Encoder) -> Clips:
        jpegs = load.make_jpegs(ffmpeg, 30, SIZE, "testsrc2", 5)
        clip = enc.h264(SIZE, FPS, 30, "testsrc2", gop=15, preset="ultrafast")
        opus = enc.opus(4.0)
        return cls(
            jpegs=jpegs,
            jpeg_b64=tuple(base64.b64encode(j).decode("ascii") for j in jpegs),
            units=clip.units,
            unit_b64=tuple(base64.b64encode(u.data).decode("ascii") for u in clip.units),
            opus_head=opus.head,
            opus=opus.packets,
            opus_b64=tuple(base64.b64encode(p).decode("ascii") for p in opus.packets),
            tone=load.pcm_tone(CHUNK_SAMPLES),
        )


def pcm_chunk(tone: bytes, index: int) -> bytes:
    """PCM chunk ``index``: the tone, its first two samples replaced by the index."""
    return struct.pack("<I", index) + tone[4:]


def pcm_stream(tone: bytes, chunks: int) -> bytes:
    """The first ``chunks`` PCM chunks of a session, as its WAV should hold them."""
    return b"".join(pcm_chunk(tone, i) for i in range(chunks))


def opus_before(frame: int) -> int:
    """Opus packets (20 ms) that start before video frame ``frame`` does."""
    return load.opus_packets_before(frame, FPS)


def opus_wav_samples(packets: int, pre_skip: int) -> int:
    """The 44.1 kHz samples ``packets`` Opus packets decode to (pre-skip dropped)."""
    if packets <= 0:
        return 0
    decoded = max(0, packets * encoded.OPUS_FRAME_SAMPLES - pre_skip)
    return decoded * SAMPLE_RATE // encoded.OPUS_RATE


# --------------------------------------------------------------------------------------------
# A session, planned


@dataclass(frozen=True)
class SessionPlan:
    """Everything random about one session, drawn before it starts."""

    client_id: str
    number: int  # the client's n-th session
    codec: str  # JPEG (+ PCM) or H264 (+ Opus)
    wire: str  # "json" or "binary"
    paced: bool
    audio: bool
    resume: bool
    ending: str  # CLOSE or ABANDON
    frames: int
    cuts: tuple[int, ...]  # frames before which the connection is cut (resumable only)
    cut_pause: float  # seconds between a cut and the resume
    epoch_us: int  # where the H.264 and Opus timestamps start

    @property
    def seq(self) -> bool:
        """Whether chunks carry ``seq``: resumable sessions, and every H.264 one."""
        return self.resume or self.codec == H264

    @property
    def label(self) -> str:
        return "/".join([
            self.codec + ("+" + ("pcm" if self.codec == JPEG else "opus") if self.audio else ""),
            self.wire, "paced" if self.paced else "unpaced",
            *(["resume"] if self.resume else []), self.ending,
        ])  # fmt: skip


def plan_session(rng: random.Random, client_id: str, number: int) -> SessionPlan:
    """One session of the mix: a quarter H.264 + Opus, half binary, 70 % paced (3 to 20 s),
    the others unpaced (150 to 450 frames, as fast as the daemon takes them), 60 % with audio,
    40 % resumable (one or two cuts each), a quarter abandoned."""
    codec = H264 if rng.random() < 0.25 else JPEG
    paced = rng.random() < 0.7
    frames = rng.randint(45, 300) if paced else rng.randint(150, 450)
    resume = rng.random() < 0.4
    cuts: tuple[int, ...] = ()
    if resume:
        cuts = tuple(sorted(rng.sample(range(10, frames - 5), rng.randint(1, 2))))
    return SessionPlan(
        client_id=client_id,
        number=number,
        codec=codec,
        wire="binary" if rng.random() < 0.5 else "json",
        paced=paced,
        audio=rng.random() < 0.6,
        resume=resume,
        ending=ABANDON if rng.random() < 0.25 else CLOSE,
        frames=frames,
        cuts=cuts,
        cut_pause=rng.uniform(0.05, 1.5),
        epoch_us=rng.randrange(1 << 40),
    )


@dataclass(frozen=True)
class Chunk:
    kind: str
    seq: int
    size: int  # bytes of media (what the daemon counts in a session's ``bytes``)
    samples: int  # PCM samples at 44.1 kHz, or Opus samples at 48 kHz


def frame_chunks(plan: SessionPlan, clips: Clips, i: int) -> list[Chunk]:
    """Frame ``i``'s chunks in the order sent: its video, then the audio that goes with it."""
    if plan.codec == JPEG:
        out = [Chunk(VIDEO, i, len(clips.jpegs[i % len(clips.jpegs)]), 0)]
        if plan.audio:
            out.append(Chunk(AUDIO, i, CHUNK_SAMPLES * BLOCK_BYTES, CHUNK_SAMPLES))
        return out
    out = [Chunk(VIDEO, i, len(clips.units[i % len(clips.units)].data), 0)]
    if plan.audio:
        for j in range(opus_before(i), opus_before(i + 1)):
            out.append(Chunk(AUDIO, j, len(clips.opus[j % len(clips.opus)]),
                             encoded.OPUS_FRAME_SAMPLES))  # fmt: skip
    return out


def message(plan: SessionPlan, clips: Clips, chunk: Chunk) -> bytes:
    """The WebSocket frame of one chunk in the session's wire form."""
    video = chunk.kind == VIDEO
    binary = plan.wire == "binary"
    if plan.codec == H264:
        if video:
            unit = clips.units[chunk.seq % len(clips.units)]
            ts = plan.epoch_us + round(chunk.seq * 1_000_000 / FPS)
            if binary:
                head = load.ENCODED_HEADER.pack(load.H264_KIND, int(unit.key), chunk.seq, ts)
                return load.ws_frame(load.OP_BINARY, head + unit.data)
            return load.text_frame({
                "eventType": "STREAM", "mediaSourceType": "VIDEO", "seq": chunk.seq,
                "encodedMediaChunk": clips.unit_b64[chunk.seq % len(clips.units)],
                "timestamp": ts, "key": unit.key,
            })  # fmt: skip
        n = chunk.seq % len(clips.opus)
        ts = plan.epoch_us + chunk.seq * encoded.OPUS_FRAME_US
        if binary:
            head = load.ENCODED_HEADER.pack(load.OPUS_KIND, 0, chunk.seq, ts)
            return load.ws_frame(load.OP_BINARY, head + clips.opus[n])
        return load.text_frame({
            "eventType": "STREAM", "mediaSourceType": "AUDIO", "seq": chunk.seq,
            "encodedMediaChunk": clips.opus_b64[n], "timestamp": ts,
        })  # fmt: skip
    data = clips.jpegs[chunk.seq % len(clips.jpegs)] if video else pcm_chunk(clips.tone, chunk.seq)
    kind = MediaKind.VIDEO if video else MediaKind.AUDIO
    if binary:
        if plan.seq:
            head = load.TIMED_HEADER.pack(kind.timed, chunk.seq, chunk.seq * 1000 / FPS)
            return load.ws_frame(load.OP_BINARY, head + data)
        return load.ws_frame(load.OP_BINARY, bytes([kind.binary]) + data)
    b64 = clips.jpeg_b64[chunk.seq % len(clips.jpegs)] if video else base64.b64encode(data).decode()
    doc: dict[str, object] = {
        "eventType": "STREAM", "mediaSourceType": kind.wire, "encodedMediaChunk": b64,
    }  # fmt: skip
    if plan.seq:
        doc["seq"] = chunk.seq
    return load.text_frame(doc)


def connect_message(plan: SessionPlan, clips: Clips, token: str | None = None) -> bytes:
    doc: dict[str, object] = {"eventType": "CONNECT", "id": plan.client_id}
    if token is not None:
        doc["resumeToken"] = token
    elif plan.resume:
        doc["resume"] = True
    if plan.codec == H264:
        doc["videoCodec"] = "h264"
        if plan.audio:
            doc["audioCodec"] = "opus"
            doc["opusHead"] = base64.b64encode(clips.opus_head).decode("ascii")
    return load.text_frame(doc)


# --------------------------------------------------------------------------------------------
# What a session did


@dataclass
class SessionRecord:
    """One session as its client saw it; times are seconds since the run's start."""

    plan: SessionPlan
    t_start: float
    name: str | None = None
    generation: int | None = None  # the daemon lifetime whose CONNECTED opened it
    peer: str | None = None  # the first connection, as the daemon's log names it
    t_connected: float | None = None
    t_end: float | None = None
    end: str = NO_REPLY
    frames_sent: int = 0  # distinct video frames
    audio_sent: int = 0  # distinct audio chunks (PCM) or packets (Opus)
    samples_sent: int = 0  # PCM at 44.1 kHz, or Opus at 48 kHz
    video_bytes_sent: int = 0  # media bytes, distinct chunks
    audio_bytes_sent: int = 0
    acked: dict[str, int] = field(default_factory=lambda: {VIDEO: -1, AUDIO: -1})
    acks: int = 0
    cuts: list[float] = field(default_factory=list)
    resumes: int = 0
    errors: list[tuple[float, str]] = field(default_factory=list)
    recordings: dict[str, str | None] | None = None  # the CLOSED reply's
    close_code: int | None = None
    # From the client's side, the daemon surely read the first ``safe[kind]`` chunks by the
    # time the session ended (an abandoned session's FIN makes it read the rest later).
    safe: dict[str, int] = field(default_factory=lambda: {VIDEO: 0, AUDIO: 0})
    # Messages within ``in_flight`` bytes of the end of the last connection: ones it may not
    # have read.
    tail_messages: int = 0
    refused: int = 0  # ERROR session_closed: chunks that came after the session's end
    problems: list[str] = field(default_factory=list)

    def error_codes(self) -> set[str]:
        return {code for _, code in self.errors}


class _Connection:
    """What one WebSocket of a session carried, in order: per message, its kind, seq and where
    it ended in the connection's bytes."""

    def __init__(self, ws: load.WebSocket) -> None:
        self.ws = ws
        self.kinds = array("b")
        self.seqs = array("q")
        self.ends = array("q")

    def sent(self, chunk: Chunk) -> None:
        self.kinds.append(0 if chunk.kind == VIDEO else 1)
        self.seqs.append(chunk.seq)
        self.ends.append(self.ws.bytes_sent)

    def surely_read(self, in_flight: int) -> tuple[dict[str, int], int]:
        """Per kind, the chunks (a prefix) sent more than ``in_flight`` bytes before the last
        byte sent; and how many messages came after that point."""
        limit = self.ws.bytes_sent - in_flight
        safe = {VIDEO: 0, AUDIO: 0}
        tail = 0
        for kind, seq, end in zip(self.kinds, self.seqs, self.ends, strict=True):
            if end <= limit:
                key = VIDEO if kind == 0 else AUDIO
                safe[key] = max(safe[key], seq + 1)
            else:
                tail += 1
        return safe, tail


class _Ended(Exception):
    """The session is over (``end`` says how); no more sends."""

    def __init__(self, end: str) -> None:
        super().__init__(end)
        self.end = end


@dataclass
class ClientEnv:
    """What a client needs of the run: the port, the run's clock, the current daemon lifetime,
    the signal to stop, the resume grace, and the bound on bytes in flight."""

    port: int
    clock: Callable[[], float]
    generation: Callable[[], int]
    stopping: asyncio.Event
    resume_grace: float
    in_flight: int


class SessionRun:
    """Runs one planned session to its end; never raises: everything goes into ``record``."""

    def __init__(self, plan: SessionPlan, clips: Clips, env: ClientEnv) -> None:
        self.plan = plan
        self.clips = clips
        self.env = env
        self.record = SessionRecord(plan, env.clock())
        self.conn: _Connection | None = None
        self.token: str | None = None
        self._storage_full = False
        self._closed_reply = False

    # -- replies

    def _read_replies(self) -> None:
        """Take every reply that has arrived: ACKs, ERRORs, CLOSED."""
        if self.conn is None:
            return
        queue = self.conn.ws.messages
        while not queue.empty():
            self._note(json.loads(queue.get_nowait().text))

    def _note(self, doc: dict[str, object]) -> None:
        r = self.record
        kind = doc.get("eventType")
        if kind == "ACK":
            r.acks += 1
            for key in (VIDEO, AUDIO):
                value = doc.get(key)
                if isinstance(value, int):
                    r.acked[key] = max(r.acked[key], value)
        elif kind == "ERROR":
            code = str(doc.get("code"))
            r.errors.append((self.env.clock(), code))
            if code == "session_closed":
                r.refused += 1
            elif code == "storage_full":
                self._storage_full = True
        elif kind == "CLOSED":
            recordings = doc.get("recordings")
            r.recordings = dict(recordings) if isinstance(recordings, dict) else {}
            self._closed_reply = True

    async def _reply(self, wanted: tuple[str, ...], timeout: float) -> dict[str, object] | None:
        """The next reply whose eventType is in ``wanted`` (others are noted on the way); None
        if the connection ends or the time is up first."""
        assert self.conn is not None
        ws = self.conn.ws
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                received = await asyncio.wait_for(ws.messages.get(), min(left, 0.5))
            except TimeoutError:
                if ws.closed.is_set() and ws.messages.empty():
                    return None
                continue
            doc = json.loads(received.text)
            if doc.get("eventType") in wanted:
                return doc
            self._note(doc)
        return None

    # -- sending

    async def _send(self, chunk: Chunk) -> None:
        assert self.conn is not None
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await self.conn.ws.send(message(self.plan, self.clips, chunk))
        except TimeoutError:
            self.record.problems.append(
                f"a send waited over {SEND_TIMEOUT:g} s at {self.env.clock():.1f} s"
            )
            raise ConnectionResetError("send stalled") from None
        self.conn.sent(chunk)

    async def _send_frame(self, i: int) -> None:
        """Frame ``i``'s chunks, each counted once however often it is (re)sent."""
        r = self.record
        for chunk in frame_chunks(self.plan, self.clips, i):
            if chunk.seq <= r.acked[chunk.kind] and i < r.frames_sent:
                continue  # acknowledged before a cut: never re-sent
            await self._send(chunk)
            if chunk.kind == VIDEO and i >= r.frames_sent:
                r.frames_sent = i + 1
                r.video_bytes_sent += chunk.size
            elif chunk.kind == AUDIO and chunk.seq >= r.audio_sent:
                r.audio_sent = chunk.seq + 1
                r.samples_sent += chunk.samples
                r.audio_bytes_sent += chunk.size

    async def _open(self, token: str | None) -> dict[str, object] | None:
        """A new connection (unless the first is open) and its CONNECT (with the resume token
        to resume); the reply."""
        if self.conn is None:
            ws = await load.WebSocket.connect(
                self.env.port, timeout=CONNECT_TIMEOUT, sndbuf=SEND_BUFFER
            )
            self.conn = _Connection(ws)
        await self.conn.ws.send(connect_message(self.plan, self.clips, token))
        return await self._reply(("CONNECTED", "ERROR"), REPLY_TIMEOUT)

    # -- the session

    async def run(self) -> SessionRecord | None:
        """The session's record; None if no connection could be made (nothing was sent)."""
        r = self.record
        try:
            ws = await load.WebSocket.connect(
                self.env.port, timeout=CONNECT_TIMEOUT, sndbuf=SEND_BUFFER
            )
        except (OSError, TimeoutError, load.WebSocketError, asyncio.IncompleteReadError):
            return None
        self.conn = _Connection(ws)
        try:
            await self._run()
        except _Ended as e:
            r.end = e.end
        except (OSError, TimeoutError, load.WebSocketError, asyncio.IncompleteReadError) as e:
            r.problems.append(f"unexpected {type(e).__name__}: {e}")
            r.end = LOST
        finally:
            r.t_end = self.env.clock()
            await self._finish()
        return r

    async def _run(self) -> None:
        r = self.record
        reply = await self._open(None)
        if reply is None:
            raise _Ended(NO_REPLY)
        if reply["eventType"] == "ERROR":
            r.errors.append((self.env.clock(), str(reply.get("code"))))
            raise _Ended(REFUSED)
        assert self.conn is not None
        r.name = str(reply["recording"])
        r.generation = self.env.generation()
        r.t_connected = self.env.clock()
        r.peer = f"tcp4:127.0.0.1:{self.conn.ws.local_port}"
        token = reply.get("resumeToken")
        self.token = token if isinstance(token, str) else None
        if self.plan.resume and self.token is None:
            r.problems.append("CONNECTED with resume: true but no resumeToken")
        await self._stream()
        if self.plan.ending == ABANDON and not self.env.stopping.is_set():
            await self.conn.ws.vanish()
            raise _Ended(ABANDONED)
        await self._close()

    async def _stream(self) -> None:
        plan, r = self.plan, self.record
        cuts = list(plan.cuts)
        t0 = time.monotonic()
        i = 0
        # Once the run stops, no new frame: but what a resume owes is sent again first.
        while i < plan.frames and (i < r.frames_sent or not self.env.stopping.is_set()):
            if cuts and i >= cuts[0] and not self.env.stopping.is_set():
                cuts.pop(0)
                await self._cut_and_resume()
                # Resumed: on from the first frame not acknowledged.
                i = self._resume_from()
            if plan.paced:
                delay = t0 + i / FPS - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                await self._send_frame(i)
            except (OSError, load.WebSocketError):
                await self._connection_lost()
                i = self._resume_from()
                continue
            self._read_replies()
            if self._storage_full or self._closed_reply:
                await self._wait_closed()
            if not plan.paced:
                await asyncio.sleep(0)
            i += 1

    def _resume_from(self) -> int:
        """The first frame with a chunk the daemon has not acknowledged (all of it goes again;
        what was acknowledged is skipped by ``_send_frame``)."""
        r = self.record
        video = r.acked[VIDEO] + 1
        if not self.plan.audio:
            return min(video, r.frames_sent)
        audio = r.acked[AUDIO] + 1
        frame = audio if self.plan.codec == JPEG else _frame_of_packet(audio)
        return min(video, frame, r.frames_sent)

    async def _cut_and_resume(self) -> None:
        assert self.conn is not None
        self.record.cuts.append(self.env.clock())
        self._read_replies()
        await self.conn.ws.cut()
        self.conn = None
        await asyncio.sleep(self.plan.cut_pause)
        await self._resume()

    async def _connection_lost(self) -> None:
        """The connection went without our cut: resume if we may, else the session is over."""
        if self.conn is not None:
            self._read_replies()
            if self._closed_reply:
                await self._wait_closed()
        if self.token is None:
            raise _Ended(LOST)
        await self._drop()
        await self._resume()

    async def _resume(self) -> None:
        """Connect again with the token within the grace period, as the README says: CONNECTED
        must name the same recording, then an ACK says where to go on from."""
        r = self.record
        deadline = time.monotonic() + max(1.0, self.env.resume_grace - 1.0)
        while time.monotonic() < deadline:
            try:
                reply = await self._open(self.token)
            except (OSError, TimeoutError, load.WebSocketError, asyncio.IncompleteReadError):
                self.conn = None
                await asyncio.sleep(0.3)
                continue
            if reply is None:
                await self._drop()
                await asyncio.sleep(0.3)
                continue
            if reply["eventType"] == "ERROR":
                r.errors.append((self.env.clock(), str(reply.get("code"))))
                raise _Ended(RESUME_FAILED)
            if reply.get("recording") != r.name:
                r.problems.append(f"resumed as {reply.get('recording')}, not {r.name}")
            ack = await self._reply(("ACK",), REPLY_TIMEOUT)
            if ack is None:
                await self._drop()
                continue
            self._note(ack)
            r.resumes += 1
            return
        raise _Ended(LOST)

    async def _drop(self) -> None:
        if self.conn is not None:
            await self.conn.ws.cut()
            self.conn = None

    async def _close(self) -> None:
        """CLOSE, and CLOSED within its bound (resuming, and asking again, if the connection
        goes meanwhile)."""
        while True:
            assert self.conn is not None
            try:
                await self.conn.ws.send(load.text_frame({"eventType": "CLOSE"}))
            except (OSError, load.WebSocketError):
                await self._connection_lost()
                continue
            break
        await self._wait_closed(asked=True)

    async def _wait_closed(self, asked: bool = False) -> None:
        r = self.record
        while not self._closed_reply:
            reply = await self._reply(("CLOSED",), CLOSED_TIMEOUT)
            if reply is not None:
                self._note(reply)
                break
            if self.conn is not None and not self.conn.ws.closed.is_set():
                r.problems.append(f"no CLOSED within {CLOSED_TIMEOUT:g} s")
                raise _Ended(LOST)
            await self._connection_lost()
            if asked:
                await self._close()
                return
        if self._storage_full:
            raise _Ended(STORAGE_FULL)
        raise _Ended(CLOSED if asked else SERVER_CLOSED)

    async def _finish(self) -> None:
        """Whatever the end, what the daemon surely read, then the connection's close."""
        r = self.record
        conn, self.conn = self.conn, None
        if conn is not None:
            while not conn.ws.messages.empty():
                self._note(json.loads(conn.ws.messages.get_nowait().text))
            safe, r.tail_messages = conn.surely_read(self.env.in_flight)
            for kind in (VIDEO, AUDIO):
                r.safe[kind] = max(safe[kind], r.acked[kind] + 1)
            r.close_code = conn.ws.close_code
            await conn.ws.close(timeout=2.0)
        else:
            for kind in (VIDEO, AUDIO):
                r.safe[kind] = r.acked[kind] + 1


def _frame_of_packet(packet: int) -> int:
    """The video frame whose audio Opus packet ``packet`` is sent with."""
    frame = max(0, math.floor(packet * encoded.OPUS_FRAME_US * FPS / 1_000_000))
    while opus_before(frame + 1) <= packet:
        frame += 1
    while frame > 0 and opus_before(frame) > packet:
        frame -= 1
    return frame


async def client_loop(
    client_id: str,
    rng: random.Random,
    clips: Clips,
    env: ClientEnv,
    done: Callable[[SessionRecord], None],
    start_delay: float,
) -> None:
    """Sessions one after another until the run stops; between them a pause of 0.2 to 2 s, or
    of 0.5 s after a connection could not be made (the daemon restarting)."""
    await asyncio.sleep(start_delay)
    number = 0
    while not env.stopping.is_set():
        plan = plan_session(rng, client_id, number)
        record = await SessionRun(plan, clips, env).run()
        if record is None:
            await _pause(env, 0.5)
            continue
        number += 1
        done(record)
        await _pause(env, rng.uniform(0.2, 2.0) if record.end != REFUSED else 1.0)


async def _pause(env: ClientEnv, seconds: float) -> None:
    try:
        await asyncio.wait_for(env.stopping.wait(), seconds)
    except TimeoutError:
        pass
