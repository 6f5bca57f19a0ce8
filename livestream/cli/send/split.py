"""Cut ffmpeg's output pipes into what the protocol sends: whole JPEG frames, PCM chunks.

Pure: bytes in, chunks out, no I/O.
"""

from __future__ import annotations

from livestream.wire.jpeg import SOI, NotAJPEG

# Markers without a length field: TEM, RST0-7, SOI, EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
_EOI = 0xD9
_SOS = 0xDA


class JPEGSplitter:
    """Cuts a stream of concatenated JPEG images (ffmpeg's ``image2pipe``) into frames.

    Searching for the first EOI after an SOI is not enough in general: an EXIF thumbnail in an
    APP1 segment is a whole JPEG with its own EOI. ffmpeg's mjpeg encoder writes no thumbnails,
    but this walks the marker segments by their lengths anyway, so a segment's payload is never
    mistaken for a marker; in the entropy-coded data a 0xFF byte is always stuffed (FF 00) or a
    restart marker, so the first other marker there is a real one.
    """

    def __init__(self, max_frame: int = 64 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._in_scan = False
        self._max_frame = max_frame

    @property
    def pending(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """The frames completed by ``data``. Raises :class:`NotAJPEG` on anything else."""
        self._buf += data
        frames = []
        while True:
            end = self._frame_end()
            if end is None:
                break
            frames.append(bytes(self._buf[:end]))
            del self._buf[:end]
            self._pos = 0
            self._in_scan = False
        if len(self._buf) > self._max_frame:
            raise NotAJPEG(f"no end of JPEG within {self._max_frame} bytes")
        return frames

    def _frame_end(self) -> int | None:
        """The length of the frame at the start of the buffer, or None while it is incomplete;
        where the walk got to is kept, so each byte is looked at about once."""
        buf = self._buf
        if len(buf) < 2:
            return None
        if buf[:2] != SOI:
            raise NotAJPEG("the stream does not continue with a JPEG start (SOI)")
        pos = max(self._pos, 2)
        end = len(buf)
        while True:
            if self._in_scan:
                pos = buf.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= end:
                    self._pos = end - 1 if pos >= 0 else end
                    return None
                marker = buf[pos + 1]
                if marker == 0x00 or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    pos += 1 if marker == 0xFF else 2
                    continue
                self._in_scan = False
            if pos + 2 > end:
                self._pos = pos
                return None
            if buf[pos] != 0xFF:
                raise NotAJPEG("corrupt JPEG in the stream: expected a marker")
            marker = buf[pos + 1]
            if marker == 0xFF:
                pos += 1
                continue
            if marker == _EOI:
                return pos + 2
            if marker in _STANDALONE:
                pos += 2
                continue
            if pos + 4 > end:
                self._pos = pos
                return None
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            if length < 2:
                raise NotAJPEG("corrupt JPEG in the stream: bad segment length")
            pos += 2 + length
            if marker == _SOS:
                self._in_scan = True
            if pos > end:
                # The rest of this segment has not arrived; resume at its end.
                self._pos = pos
                return None


class PCMChunker:
    """Cuts a PCM stream into chunks of ``size`` bytes (a whole number of samples)."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % 2:
            raise ValueError("a chunk is a positive whole number of s16 samples")
        self._size = size
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        whole = len(self._buf) - len(self._buf) % self._size
        chunks = [bytes(self._buf[i : i + self._size]) for i in range(0, whole, self._size)]
        del self._buf[:whole]
        return chunks

    def flush(self) -> bytes:
        """What is left at the end of the stream (less than a chunk; maybe nothing)."""
        rest, self._buf = bytes(self._buf), bytearray()
        return rest
