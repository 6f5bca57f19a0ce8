"""Parsing and validation of client messages.

Pure functions, no I/O and no Twisted: everything a hostile or broken client can send is turned
into either a typed message or a :class:`ProtocolError` carrying the code of the ``ERROR`` reply.
"""

from __future__ import annotations

import binascii
import json
import math
import struct
from dataclasses import dataclass, field, replace

import pybase64

from livestream.wire.codes import Refusal
from livestream.wire.kinds import (
    BY_BINARY,
    BY_ENCODED,
    BY_TIMED,
    BY_WIRE_NAME,
    CODECS,
    Codec,
    MediaKind,
)
from livestream.wire.opus import InvalidOpus, OpusHead, parse_opus_head

MAX_ID_LENGTH = 256
# Far above any real access token; bounds what a client makes the server parse.
MAX_TOKEN_LENGTH = 8192
MAX_RESUME_TOKEN_LENGTH = 128


# The binary form of STREAM: one kind byte, then the raw chunk (no base64, no JSON). The timed
# binary form: kind byte, then ``seq`` (uint32) and ``captureTime`` (float64 ms), both
# big-endian, then the raw chunk.
TIMED_HEADER = struct.Struct(">BId")
# Bounds of the optional timing fields: whole numbers a double holds exactly, times within
# about 30000 years of the client's epoch.
MAX_SEQ = 2**53 - 1
MAX_CAPTURE_TIME = 1e15
# The binary form of an encoded chunk (H.264 access unit, Opus packet): kind byte, flags (bit 0:
# key), ``seq`` (uint32) and ``timestamp`` (int64 microseconds), big-endian, then the chunk.
ENCODED_HEADER = struct.Struct(">BBIq")
KEY_FLAG = 0x01
# Timestamps a double holds exactly, as JavaScript's numbers and WebCodecs' timestamps do.
MAX_TIMESTAMP = 2**53
# An OpusHead is 19 bytes for mono or stereo; room for what a newer version may append.
MAX_OPUS_HEAD = 256


@dataclass(frozen=True)
class Connect:
    id: str
    # The access token, when the client sends it here rather than in the URL or a subprotocol.
    token: str | None = None
    # ``resume: true``: the client wants a resume token and acknowledgements.
    resume: bool = False
    # A resume token from an earlier CONNECTED: continue that session.
    resume_token: str | None = None
    # What the session's chunks are: the seed's JPEG and PCM, or H.264 and Opus as encoded by
    # the client, with the Opus stream's identification header.
    video_codec: Codec = Codec.JPEG
    audio_codec: Codec = Codec.PCM
    opus_head: OpusHead | None = None


@dataclass(frozen=True)
class Stream:
    kind: MediaKind
    chunk: bytes
    # The client's per-source sequence number and capture time (milliseconds, client clock).
    seq: int | None = None
    capture_time: float | None = None
    # An encoded chunk's timestamp (microseconds, client clock) and key flag, once checked.
    timestamp: int | None = None
    key: bool | None = None
    # Which binary form it came in (True: 0x21/0x22); None for JSON, whose chunk is what the
    # session's codec says it is.
    encoded: bool | None = field(default=None, compare=False)
    # A JSON STREAM's ``timestamp`` and ``key`` as sent: checked by :func:`check_codec` only in
    # a session of encoded media, so to a seed client they stay the extra fields it may send.
    sent: tuple[object, object] = field(default=(None, None), compare=False)


@dataclass(frozen=True)
class Close:
    pass


Message = Connect | Stream | Close


class ProtocolError(Refusal):
    """A message the server refuses for what it is (malformed, or out of turn), before anything
    acts on it; ``code`` is the snake_case code sent in the ``ERROR`` reply."""


def parse_text(text: str) -> Message:
    """Parse one JSON text message of the seed protocol."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("invalid_json", "message is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ProtocolError("invalid_message", "message must be a JSON object")
    event = doc.get("eventType")
    if event == "STREAM":
        return _parse_stream(doc)
    if event == "CONNECT":
        return _parse_connect(doc)
    if event == "CLOSE":
        return Close()
    if not isinstance(event, str):
        raise ProtocolError("invalid_message", "eventType must be a string")
    raise ProtocolError(
        "unknown_event_type", f"unknown eventType {event[:40]!r}; expected CONNECT, STREAM or CLOSE"
    )


def parse_binary(data: bytes) -> Stream:
    """Parse a binary STREAM message: kind byte 0x01 (JPEG frame) or 0x02 (PCM), then the chunk;
    0x11/0x12 with seq and captureTime; 0x21/0x22 an encoded chunk with its header."""
    if len(data) < 2:
        raise ProtocolError("invalid_chunk", "a binary message needs a kind byte and a chunk")
    kind = BY_BINARY.get(data[0])
    if kind is not None:
        return Stream(kind, data[1:], encoded=False)
    kind = BY_ENCODED.get(data[0])
    if kind is not None:
        return _parse_encoded(kind, data)
    kind = BY_TIMED.get(data[0])
    if kind is None:
        raise ProtocolError(
            "invalid_media_source_type",
            f"unknown binary kind 0x{data[0]:02x}; 0x01 is a JPEG frame, 0x02 is PCM audio, "
            "0x11 and 0x12 the same with seq and captureTime, 0x21 an H.264 access unit and "
            "0x22 an Opus packet",
        )
    if len(data) <= TIMED_HEADER.size:
        raise ProtocolError(
            "invalid_chunk", "a timed binary message needs seq, captureTime and a chunk"
        )
    _, seq, capture_time = TIMED_HEADER.unpack_from(data)
    return Stream(kind, data[TIMED_HEADER.size :], seq, _capture_time(capture_time), encoded=False)


def _parse_encoded(kind: MediaKind, data: bytes) -> Stream:
    if len(data) <= ENCODED_HEADER.size:
        raise ProtocolError(
            "invalid_chunk", "an encoded binary message needs flags, seq, timestamp and a chunk"
        )
    _, flags, seq, timestamp = ENCODED_HEADER.unpack_from(data)
    return Stream(
        kind,
        data[ENCODED_HEADER.size :],
        seq,
        timestamp=_timestamp(timestamp),
        key=bool(flags & KEY_FLAG),
        encoded=True,
    )


def check_codec(msg: Stream, codec: Codec) -> Stream:
    """The chunk as the session's ``codec`` for its kind takes it: refused if it came in the
    other binary form, or (encoded) without its timestamp and, for video, its key flag."""
    if msg.encoded is not None and msg.encoded != codec.encoded:
        raise ProtocolError(
            "codec_mismatch",
            f"this session's {msg.kind} is {codec}; send it with kind byte "
            f"0x{(msg.kind.encoded if codec.encoded else msg.kind.binary):02x}",
        )
    if not codec.encoded:
        return msg
    if msg.encoded is None:
        timestamp, key = msg.sent
        if key is not None and not isinstance(key, bool):
            raise ProtocolError("invalid_key", "key must be true or false")
        msg = replace(msg, timestamp=None if timestamp is None else _timestamp(timestamp), key=key)
    if msg.timestamp is None:
        raise ProtocolError(
            "invalid_timestamp", f"an encoded {msg.kind} chunk needs its timestamp (microseconds)"
        )
    if msg.kind is MediaKind.VIDEO and msg.key is None:
        raise ProtocolError("invalid_key", "an encoded video chunk needs key: true or false")
    return msg


def _parse_connect(doc: dict[str, object]) -> Connect:
    client_id = doc.get("id")
    if not isinstance(client_id, str):
        raise ProtocolError("invalid_id", "CONNECT needs an id that is a string")
    if not client_id or len(client_id) > MAX_ID_LENGTH:
        raise ProtocolError("invalid_id", f"id must be 1 to {MAX_ID_LENGTH} characters long")
    if not client_id.isprintable():
        raise ProtocolError("invalid_id", "id must not contain control characters")
    token = doc.get("token")
    if token is not None and not (isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_LENGTH):
        raise ProtocolError(
            "invalid_token", f"token must be a string of 1 to {MAX_TOKEN_LENGTH} characters"
        )
    resume = doc.get("resume", False)
    if not isinstance(resume, bool):
        raise ProtocolError("invalid_message", "resume must be true or false")
    resume_token = doc.get("resumeToken")
    if resume_token is not None and not (
        isinstance(resume_token, str) and 0 < len(resume_token) <= MAX_RESUME_TOKEN_LENGTH
    ):
        raise ProtocolError(
            "invalid_resume_token",
            f"resumeToken must be a string of 1 to {MAX_RESUME_TOKEN_LENGTH} characters",
        )
    video_codec = _codec(doc, "videoCodec", MediaKind.VIDEO)
    audio_codec = _codec(doc, "audioCodec", MediaKind.AUDIO)
    return Connect(
        client_id, token, resume, resume_token, video_codec, audio_codec, _opus_head(doc)
    )


def _codec(doc: dict[str, object], field: str, kind: MediaKind) -> Codec:
    value = doc.get(field)
    codecs = CODECS[kind]
    if value is None:
        return codecs[0]
    for codec in codecs:
        if value == codec.value:
            return codec
    names = " or ".join(f'"{codec}"' for codec in codecs)
    raise ProtocolError("invalid_codec", f"{field} must be {names}")


def _opus_head(doc: dict[str, object]) -> OpusHead | None:
    value = doc.get("opusHead")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_OPUS_HEAD * 4 // 3 + 4:
        raise ProtocolError("invalid_codec", "opusHead must be a base64 OpusHead")
    try:
        return parse_opus_head(pybase64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as e:
        message = str(e) if isinstance(e, InvalidOpus) else "opusHead is not valid base64"
        raise ProtocolError("invalid_codec", message) from None


def _capture_time(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or abs(value) > MAX_CAPTURE_TIME
    ):
        raise ProtocolError(
            "invalid_capture_time", "captureTime must be a finite number of milliseconds"
        )
    return float(value)


def _timestamp(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_TIMESTAMP:
        raise ProtocolError(
            "invalid_timestamp",
            f"timestamp must be a whole number of microseconds within ±{MAX_TIMESTAMP}",
        )
    return value


def _seq(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise ProtocolError("invalid_seq", f"seq must be a whole number from 0 to {MAX_SEQ}")
    return value


def _parse_stream(doc: dict[str, object]) -> Stream:
    source = doc.get("mediaSourceType")
    kind = BY_WIRE_NAME.get(source) if isinstance(source, str) else None
    if kind is None:
        raise ProtocolError("invalid_media_source_type", "mediaSourceType must be AUDIO or VIDEO")
    encoded = doc.get("encodedMediaChunk")
    if not isinstance(encoded, str):
        raise ProtocolError("invalid_chunk", "encodedMediaChunk must be a base64 string")
    try:
        # pybase64's SIMD decoder: 50x faster than binascii on a 130 KB frame, just as strict.
        chunk = pybase64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("invalid_base64", "encodedMediaChunk is not valid base64") from None
    if not chunk:
        raise ProtocolError("invalid_chunk", "encodedMediaChunk is empty")
    seq = doc.get("seq")
    capture_time = doc.get("captureTime")
    return Stream(
        kind,
        chunk,
        None if seq is None else _seq(seq),
        None if capture_time is None else _capture_time(capture_time),
        sent=(doc.get("timestamp"), doc.get("key")),
    )
