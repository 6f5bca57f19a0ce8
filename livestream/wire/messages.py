"""Parsing and validation of client messages.

Pure functions, no I/O and no Twisted: everything a hostile or broken client can send is turned
into either a typed message or a :class:`ProtocolError` carrying the code of the ``ERROR`` reply.
"""

from __future__ import annotations

import binascii
import json
import math
import struct
from dataclasses import dataclass

import pybase64

from livestream.wire.codes import Refusal
from livestream.wire.kinds import BY_BINARY, BY_TIMED, BY_WIRE_NAME, MediaKind

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


@dataclass(frozen=True)
class Connect:
    id: str
    # The access token, when the client sends it here rather than in the URL or a subprotocol.
    token: str | None = None
    # ``resume: true``: the client wants a resume token and acknowledgements.
    resume: bool = False
    # A resume token from an earlier CONNECTED: continue that session.
    resume_token: str | None = None


@dataclass(frozen=True)
class Stream:
    kind: MediaKind
    chunk: bytes
    # The client's per-source sequence number and capture time (milliseconds, client clock).
    seq: int | None = None
    capture_time: float | None = None


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
    """Parse a binary STREAM message: kind byte 0x01 (JPEG frame) or 0x02 (PCM), then the chunk."""
    if len(data) < 2:
        raise ProtocolError("invalid_chunk", "a binary message needs a kind byte and a chunk")
    kind = BY_BINARY.get(data[0])
    if kind is not None:
        return Stream(kind, data[1:])
    kind = BY_TIMED.get(data[0])
    if kind is None:
        raise ProtocolError(
            "invalid_media_source_type",
            f"unknown binary kind 0x{data[0]:02x}; 0x01 is a JPEG frame, 0x02 is PCM audio, "
            "0x11 and 0x12 the same with seq and captureTime",
        )
    if len(data) <= TIMED_HEADER.size:
        raise ProtocolError(
            "invalid_chunk", "a timed binary message needs seq, captureTime and a chunk"
        )
    _, seq, capture_time = TIMED_HEADER.unpack_from(data)
    return Stream(kind, data[TIMED_HEADER.size :], seq, _capture_time(capture_time))


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
    return Connect(client_id, token, resume, resume_token)


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
    )
