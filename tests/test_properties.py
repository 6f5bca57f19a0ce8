"""Property-based checks: whatever a client sends, parsing answers with a message or the module's
own refusal, never another exception; no id ever yields a path."""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from livestream.library.tree import is_recording_name, safe_stem
from livestream.wire import jpeg
from livestream.wire.messages import Close, Connect, ProtocolError, Stream, parse_binary, parse_text

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
events = st.sampled_from(["CONNECT", "STREAM", "CLOSE", "connect", "", None, 1, []])
messages = st.fixed_dictionaries(
    {"eventType": events},
    optional={
        "id": json_values | st.text(),
        "mediaSourceType": st.sampled_from(["AUDIO", "VIDEO", "audio", "", None, 3]),
        "encodedMediaChunk": json_values
        | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
        | st.text(alphabet="ABCD=+/\n %", max_size=40),
        "token": json_values,
    },
)


class ParsingProperties(SynchronousTestCase):
    @settings(max_examples=250, deadline=None)
    @given(st.text(max_size=200))
    def test_any_text(self, text: str) -> None:
        self.assert_parsed_or_refused(parse_text, text)

    @settings(max_examples=250, deadline=None)
    @given(messages)
    def test_message_shaped_json(self, doc: dict) -> None:
        result = self.assert_parsed_or_refused(parse_text, json.dumps(doc))
        if isinstance(result, Connect):
            self.assertIsInstance(result.id, str)
            self.assertTrue(result.id)
        elif isinstance(result, Stream):
            self.assertTrue(result.chunk)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def test_any_binary(self, data: bytes) -> None:
        self.assert_parsed_or_refused(parse_binary, data)

    def assert_parsed_or_refused(self, parse, data):
        try:
            result = parse(data)
        except ProtocolError as e:
            self.assertRegex(e.code, r"^[a-z0-9_]+$")
            return None
        self.assertIsInstance(result, Connect | Stream | Close)
        return result


class NamingProperties(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.text(min_size=1, max_size=300))
    def test_no_id_gives_a_path(self, client_id: str) -> None:
        stem = safe_stem(client_id)
        self.assertNotIn("/", stem)
        self.assertNotIn("\0", stem)
        self.assertFalse(stem.startswith("."))
        self.assertTrue(0 < len(stem) <= 64)
        self.assertTrue(is_recording_name(f"{stem}_1732460000000"), stem)


class JpegProperties(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    def test_garbage_is_refused_as_not_a_jpeg(self, data: bytes) -> None:
        for candidate in (data, jpeg.SOI + data + jpeg.EOI):
            try:
                width, height = jpeg.frame_size(candidate)
            except jpeg.NotAJPEG:
                continue
            self.assertTrue(0 < width <= jpeg.MAX_DIMENSION and 0 < height <= jpeg.MAX_DIMENSION)
