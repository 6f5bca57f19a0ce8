"""JPEG framing checks: real frames pass with their size, anything else is NotAJPEG."""

from __future__ import annotations

import os
import random
import subprocess
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from livestream.wire.jpeg import NotAJPEG, check_frame, frame_size
from tests.support.media import ffmpeg_exe, jpeg_frames

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")


def segments(data: bytes) -> list[bytes]:
    """The marker segments of a JPEG up to SOS (exclusive), each with its marker."""
    out = []
    pos = 2
    while data[pos + 1] != 0xDA:
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.append(data[pos : pos + 2 + length])
        pos += 2 + length
    return out


def sof_offset(data: bytes) -> int:
    pos = 2
    for seg in segments(data):
        if seg[1] == 0xC0:
            return pos
        pos += len(seg)
    raise AssertionError("no SOF0")


def lossless_jpeg(size: str) -> bytes:
    """A lossless JPEG (SOF3, with its Huffman table DHT *before* the frame header)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "l.jpg")
        subprocess.run(
            [
                ffmpeg_exe(),
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                f"testsrc=size={size}",
                "-frames:v",
                "1",
                "-c:v",
                "ljpeg",
                "-pix_fmt",
                "bgr24",
                out,
            ],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        with open(out, "rb") as f:
            return f.read()


class FrameSizeTests(SynchronousTestCase):
    def test_sizes(self) -> None:
        """The encoder is started at the first frame's size, so it must be read exactly,
        odd sizes included (they are rounded for yuv420p later, not here)."""
        for w, h in ((320, 240), (641, 481), (1, 1), (33, 17), (1920, 1080)):
            (frame,) = jpeg_frames(1, f"{w}x{h}")
            self.assertEqual(frame_size(frame), (w, h))

    def test_dht_before_sof(self) -> None:
        """A Huffman table (C4, inside the SOF marker range) before the frame header must be
        skipped, not read as a size; ffmpeg's lossless JPEG (SOF3) is laid out that way."""
        data = lossless_jpeg("35x19")
        markers = [seg[1] for seg in segments(data)]
        self.assertLess(markers.index(0xC4), markers.index(0xC3))  # the layout this tests
        self.assertEqual(frame_size(data), (35, 19))

    def test_progressive_header(self) -> None:
        """A progressive frame header (SOF2) carries the size as SOF0 does. ffmpeg cannot encode
        progressive JPEG, so a real frame's SOF0 marker is rewritten to SOF2."""
        (frame,) = jpeg_frames(1, "97x55")
        at = sof_offset(frame)
        progressive = frame[: at + 1] + b"\xc2" + frame[at + 2 :]
        self.assertEqual(frame_size(progressive), (97, 55))

    def test_fill_bytes_before_marker(self) -> None:
        """0xFF fill bytes before a marker are allowed by the standard and must be skipped."""
        (frame,) = jpeg_frames(1, "64x48")
        at = sof_offset(frame)
        padded = frame[:at] + b"\xff\xff\xff" + frame[at:]
        self.assertEqual(frame_size(padded), (64, 48))

    def test_check_frame_accepts_real_frames(self) -> None:
        """Every frame ffmpeg makes passes the cheap per-frame check used after the first."""
        for frame in jpeg_frames(3, "160x120"):
            check_frame(frame)


class RejectTests(SynchronousTestCase):
    def setUp(self) -> None:
        (self.frame,) = jpeg_frames(1, "64x48")

    def assertNotJPEG(self, data: bytes) -> None:
        self.assertRaises(NotAJPEG, frame_size, data)

    def test_png(self) -> None:
        """A PNG is an image but not a JPEG; ffmpeg's mjpeg splitter would mangle it."""
        self.assertNotJPEG(PNG)
        self.assertRaises(NotAJPEG, check_frame, PNG)

    def test_truncated(self) -> None:
        """A frame cut short (no EOI) would be glued to the next one by ffmpeg's splitter."""
        self.assertNotJPEG(self.frame[:-2])
        self.assertNotJPEG(self.frame[: len(self.frame) // 2])
        self.assertRaises(NotAJPEG, check_frame, self.frame[:-1])

    def test_empty_and_tiny(self) -> None:
        """Nothing, or only markers, is no frame."""
        for data in (b"", b"\xff", b"\xff\xd8", b"\xff\xd9", b"\xff\xd8\xff"):
            self.assertNotJPEG(data)

    def test_soi_eoi_without_sof(self) -> None:
        """SOI+EOI is framed like a JPEG but has no size: the encoder could not be started."""
        self.assertNotJPEG(b"\xff\xd8\xff\xd9")
        self.assertNotJPEG(b"\xff\xd8" + b"\xff\xfe\x00\x04hi" + b"\xff\xd9")

    def test_sos_before_sof(self) -> None:
        """Image data before any frame header means no size can be trusted."""
        self.assertNotJPEG(b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 6 + b"\xff\xd9")

    def test_bad_segment_length(self) -> None:
        """A segment length below 2 (it counts itself) is corrupt, not an endless loop."""
        for length in (b"\x00\x00", b"\x00\x01"):
            data = self.frame[:4] + length + self.frame[6:]
            self.assertNotJPEG(data)

    def test_segment_length_past_end(self) -> None:
        """A length that jumps past the end of the data finds no frame header."""
        data = self.frame[:4] + b"\xff\xff" + self.frame[6:]
        self.assertNotJPEG(data)

    def test_zero_dimension(self) -> None:
        """A 0-pixel frame cannot start an encoder."""
        at = sof_offset(self.frame)
        zero_width = self.frame[: at + 7] + b"\x00\x00" + self.frame[at + 9 :]
        self.assertNotJPEG(zero_width)

    def test_sof_cut_short(self) -> None:
        """A frame header that ends before its size fields is refused, not read out of bounds."""
        at = sof_offset(self.frame)
        self.assertNotJPEG(self.frame[: at + 6] + b"\xff\xd9")

    def test_garbage_never_raises_anything_else(self) -> None:
        """Whatever bytes a client sends, only NotAJPEG comes out (the session turns it into
        an ERROR reply; any other exception would be an internal error)."""
        rng = random.Random(20240601)
        frame = self.frame
        sof = sof_offset(frame)
        inputs = [rng.randbytes(rng.randrange(0, 64)) for _ in range(100)]
        inputs += [
            b"\xff\xd8" + rng.randbytes(rng.randrange(0, 64)) + b"\xff\xd9" for _ in range(100)
        ]
        for _ in range(300):
            data = bytearray(frame)
            for _ in range(rng.randrange(1, 6)):
                # Mutations concentrated on the header, where the parser looks.
                pos = rng.randrange(2, min(len(data) - 2, sof + 20))
                data[pos] = rng.randrange(256)
            inputs.append(bytes(data))
        for _ in range(100):
            cut = rng.randrange(2, sof + 12)
            inputs.append(frame[:cut] + b"\xff\xd9")
        accepted = 0
        for data in inputs:
            try:
                width, height = frame_size(data)
            except NotAJPEG:
                continue
            accepted += 1
            self.assertGreater(width, 0)
            self.assertGreater(height, 0)
        # Some mutations of a real frame leave its header intact; not everything is refused.
        self.assertGreater(accepted, 0)
