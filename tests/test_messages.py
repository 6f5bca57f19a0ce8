"""Parsing of client messages: every shape a client may send becomes a message or a coded error."""

from __future__ import annotations

import base64
import json

from twisted.trial.unittest import SynchronousTestCase

from livestream.wire import messages
from livestream.wire.kinds import MediaKind
from livestream.wire.messages import (
    MAX_ID_LENGTH,
    MAX_TOKEN_LENGTH,
    Close,
    Connect,
    ProtocolError,
    Stream,
    parse_binary,
    parse_text,
)


def stream(kind: object = "AUDIO", chunk: object = "AAEC", **extra: object) -> str:
    doc = {"eventType": "STREAM", "mediaSourceType": kind, "encodedMediaChunk": chunk, **extra}
    return json.dumps(doc)


def without(doc: dict, key: str) -> str:
    return json.dumps({k: v for k, v in doc.items() if k != key})


class ParseTests(SynchronousTestCase):
    def test_connect(self) -> None:
        """CONNECT carries the id the recording's name is built from."""
        self.assertEqual(parse_text('{"eventType": "CONNECT", "id": "alice"}'), Connect("alice"))

    def test_connect_email_id_kept_as_is(self) -> None:
        """Seed clients use e-mail addresses as ids; the id itself is not rewritten here (only
        the file name made from it is), so the CONNECTED reply echoes what the client sent."""
        msg = parse_text('{"eventType": "CONNECT", "id": "user@example.com"}')
        self.assertEqual(msg, Connect("user@example.com"))

    def test_connect_longest_id(self) -> None:
        """An id of exactly MAX_ID_LENGTH characters is still accepted (the bound is inclusive)."""
        client_id = "x" * MAX_ID_LENGTH
        self.assertEqual(
            parse_text(json.dumps({"eventType": "CONNECT", "id": client_id})).id, client_id
        )

    def test_stream_audio(self) -> None:
        """An AUDIO chunk is decoded from base64 into the exact PCM bytes."""
        pcm = bytes(range(256))
        msg = parse_text(stream("AUDIO", base64.b64encode(pcm).decode()))
        self.assertEqual(msg, Stream(MediaKind.AUDIO, pcm))

    def test_stream_video(self) -> None:
        """A VIDEO chunk is decoded too and tagged as video."""
        msg = parse_text(stream("VIDEO", base64.b64encode(b"\xff\xd8\xff\xd9").decode()))
        self.assertEqual(msg, Stream(MediaKind.VIDEO, b"\xff\xd8\xff\xd9"))

    def test_close(self) -> None:
        """CLOSE needs nothing but its eventType."""
        self.assertEqual(parse_text('{"eventType": "CLOSE"}'), Close())

    def test_extra_fields_ignored(self) -> None:
        """Clients written for the seed may send extra fields; they must not be refused."""
        msg = parse_text(stream("AUDIO", "AAEC", timestamp=123, extra={"a": 1}))
        self.assertEqual(msg, Stream(MediaKind.AUDIO, b"\x00\x01\x02"))


class RejectTests(SynchronousTestCase):
    def assertCode(self, text: str, code: str) -> ProtocolError:
        error = self.assertRaises(ProtocolError, parse_text, text)
        self.assertEqual(error.code, code, error.message)
        self.assertTrue(error.message)
        return error

    def test_not_json(self) -> None:
        """Text that is not JSON is refused with invalid_json, not a Python exception."""
        for text in ("", "hello", "{", '{"eventType": "CLOSE"', "{'eventType': 'CLOSE'}"):
            self.assertCode(text, "invalid_json")

    def test_json_not_object(self) -> None:
        """Valid JSON of another type than an object is an invalid message."""
        for text in ("[]", '["CLOSE"]', "null", "42", "1.5", '"CLOSE"', "true"):
            self.assertCode(text, "invalid_message")

    def test_unknown_event_type(self) -> None:
        """A string eventType that the protocol does not know is named as such."""
        for event in ("PING", "close", "Connect", ""):
            self.assertCode(json.dumps({"eventType": event}), "unknown_event_type")

    def test_unknown_event_type_message_bounded(self) -> None:
        """A huge unknown eventType is not echoed back whole in the error reply."""
        error = self.assertCode(json.dumps({"eventType": "A" * 100000}), "unknown_event_type")
        self.assertLess(len(error.message), 200)

    def test_event_type_missing_or_not_string(self) -> None:
        """A missing or non-string eventType is an invalid message, and never crashes on an
        unhashable value."""
        for doc in (
            {},
            {"eventType": None},
            {"eventType": 1},
            {"eventType": ["CLOSE"]},
            {"eventType": {"x": 1}},
            {"eventType": True},
        ):
            self.assertCode(json.dumps(doc), "invalid_message")

    def test_connect_bad_id(self) -> None:
        """The id must be a non-empty string of bounded length: it names a file."""
        base = {"eventType": "CONNECT", "id": "x"}
        self.assertCode(without(base, "id"), "invalid_id")
        for bad in (None, 42, ["alice"], {"a": 1}, "", "x" * (MAX_ID_LENGTH + 1)):
            self.assertCode(json.dumps({**base, "id": bad}), "invalid_id")

    def test_connect_control_characters(self) -> None:
        """Control characters in an id would end up in logs and replies; they are refused."""
        for bad in ("a\nb", "a\x00b", "\x1b[31mred", "tab\there", "a\u2028b", "\x7f"):
            self.assertCode(json.dumps({"eventType": "CONNECT", "id": bad}), "invalid_id")

    def test_stream_bad_media_source_type(self) -> None:
        """Only the exact strings AUDIO and VIDEO select a recorder."""
        self.assertCode(
            without(json.loads(stream()), "mediaSourceType"), "invalid_media_source_type"
        )
        for bad in ("TEXT", "audio", "Video", "", 1, None, ["AUDIO"], {"AUDIO": 1}):
            self.assertCode(stream(kind=bad), "invalid_media_source_type")

    def test_stream_chunk_missing_or_not_string(self) -> None:
        """encodedMediaChunk must be a string to be base64 at all."""
        self.assertCode(without(json.loads(stream()), "encodedMediaChunk"), "invalid_chunk")
        for bad in (None, 123, ["AAEC"], {"a": "AAEC"}):
            self.assertCode(stream(chunk=bad), "invalid_chunk")

    def test_stream_chunk_empty(self) -> None:
        """An empty chunk carries nothing to record; it is refused rather than silently kept."""
        self.assertCode(stream(chunk=""), "invalid_chunk")

    def test_stream_chunk_invalid_base64(self) -> None:
        """Anything but strict base64 is refused, so no garbage bytes reach a recording."""
        for bad in (
            "!!!!",
            "AAE",
            "AA=A",
            "A===",
            "AAEC AAEC",
            "AAEC\nAAEC",
            "AA\nEC",
            "AAEC\n",
            "ÄÄÄÄ",
            "AAE€",
        ):
            self.assertCode(stream(chunk=bad), "invalid_base64")

    def test_deeply_nested(self) -> None:
        """Pathologically nested JSON is refused cleanly instead of escaping as RecursionError."""
        for text in (
            "[" * 100000,
            "[" * 100000 + "]" * 100000,
            '{"a":' * 100000,
            '{"eventType": "CLOSE", "x": ' + "[" * 100000 + "]" * 100000 + "}",
        ):
            try:
                parse_text(text)
            except ProtocolError as e:
                self.assertIn(e.code, ("invalid_json", "invalid_message"))
            else:
                self.fail(f"accepted nesting {text[:20]!r}...")

    def test_errors_are_recoverable(self) -> None:
        """Parse errors are not fatal: a client may correct itself on the same connection."""
        error = self.assertCode("nope", "invalid_json")
        self.assertFalse(error.fatal)
        self.assertIsNone(error.close_code)


class BinaryTests(SynchronousTestCase):
    """The binary STREAM form: one kind byte, then the raw chunk."""

    def test_kinds(self) -> None:
        self.assertEqual(parse_binary(b"\x01\xff\xd8"), Stream(MediaKind.VIDEO, b"\xff\xd8"))
        self.assertEqual(parse_binary(b"\x02\x00\x01"), Stream(MediaKind.AUDIO, b"\x00\x01"))

    def test_refusals(self) -> None:
        for data, code in [
            (b"", "invalid_chunk"),
            (b"\x01", "invalid_chunk"),
            (b"\x00abc", "invalid_media_source_type"),
            (b"Vabc", "invalid_media_source_type"),
        ]:
            with self.assertRaises(ProtocolError) as caught:
                parse_binary(data)
            self.assertEqual(caught.exception.code, code, data)


class TokenFieldTests(SynchronousTestCase):
    """CONNECT's optional ``token``: carried as given, checked only for shape here."""

    def connect(self, **extra: object) -> str:
        return json.dumps({"eventType": "CONNECT", "id": "cam", **extra})

    def test_absent_or_null(self) -> None:
        """Seed clients send no token; that parses as before."""
        self.assertEqual(parse_text(self.connect()), Connect("cam", None))
        self.assertEqual(parse_text(self.connect(token=None)), Connect("cam", None))

    def test_carried(self) -> None:
        self.assertEqual(parse_text(self.connect(token="a.b.c")), Connect("cam", "a.b.c"))
        longest = "t" * MAX_TOKEN_LENGTH
        self.assertEqual(parse_text(self.connect(token=longest)).token, longest)

    def test_bad_shapes(self) -> None:
        """Not a string, empty, or longer than any real token: refused before any verifying."""
        for token in (5, "", ["a.b.c"], {"jwt": "a"}, "t" * (MAX_TOKEN_LENGTH + 1)):
            with self.assertRaises(ProtocolError) as caught:
                parse_text(self.connect(token=token))
            self.assertEqual(caught.exception.code, "invalid_token", token)
            self.assertFalse(caught.exception.fatal)


class TimingFieldTests(SynchronousTestCase):
    """The optional seq and captureTime of STREAM, JSON and timed binary; resume in CONNECT."""

    def stream(self, **fields: object) -> str:
        return json.dumps(
            {"eventType": "STREAM", "mediaSourceType": "AUDIO", "encodedMediaChunk": "AAA=",
             **fields}
        )  # fmt: skip

    def test_json_fields(self) -> None:
        msg = messages.parse_text(self.stream(seq=7, captureTime=1234.5))
        self.assertEqual((msg.seq, msg.capture_time), (7, 1234.5))
        self.assertEqual(messages.parse_text(self.stream()).seq, None)

    def test_bad_fields_refused(self) -> None:
        for fields, code in [
            ({"seq": -1}, "invalid_seq"), ({"seq": 1.5}, "invalid_seq"),
            ({"seq": True}, "invalid_seq"), ({"captureTime": "1"}, "invalid_capture_time"),
            ({"captureTime": 1e300}, "invalid_capture_time"),
        ]:  # fmt: skip
            with self.assertRaises(ProtocolError) as caught:
                messages.parse_text(self.stream(**fields))
            self.assertEqual(caught.exception.code, code)

    def test_timed_binary(self) -> None:
        msg = messages.parse_binary(messages.TIMED_HEADER.pack(0x11, 3, 99.25) + b"jpeg")
        self.assertEqual((msg.kind, msg.chunk, msg.seq, msg.capture_time),
                         (messages.MediaKind.VIDEO, b"jpeg", 3, 99.25))  # fmt: skip
        for bad in (messages.TIMED_HEADER.pack(0x12, 3, 1.0),
                    messages.TIMED_HEADER.pack(0x12, 3, float("nan")) + b"x"):  # fmt: skip
            with self.assertRaises(ProtocolError):
                messages.parse_binary(bad)

    def test_connect_resume(self) -> None:
        msg = messages.parse_text(json.dumps({"eventType": "CONNECT", "id": "a", "resume": True}))
        self.assertTrue(msg.resume)
        msg = messages.parse_text(
            json.dumps({"eventType": "CONNECT", "id": "a", "resumeToken": "abc"})
        )
        self.assertEqual(msg.resume_token, "abc")
        with self.assertRaises(ProtocolError):
            messages.parse_text(json.dumps({"eventType": "CONNECT", "id": "a", "resume": 1}))
