"""Just enough JPEG to check a frame and read its size, without decoding it.

A chunk that is not a whole JPEG must never reach ffmpeg's pipe: its frame splitter would glue it
to the next frame and the recording would lose both.
"""

from __future__ import annotations

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but don't.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


# Larger than any camera sends (8K is 7680x4320); a hostile header claiming 65535x65535 would
# make the decoder allocate gigabytes.
MAX_DIMENSION = 8192


class NotAJPEG(ValueError):
    pass


def check_frame(data: bytes) -> None:
    """Refuse anything that is not framed as one whole JPEG (SOI first, EOI last)."""
    if len(data) < 4 or not data.startswith(SOI) or not data.endswith(EOI):
        raise NotAJPEG("video chunk is not a whole JPEG image (SOI ... EOI)")


def frame_size(data: bytes) -> tuple[int, int]:
    """Return (width, height) from the first start-of-frame segment."""
    check_frame(data)
    pos = 2
    end = len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            raise NotAJPEG("corrupt JPEG: expected a marker")
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            raise NotAJPEG("corrupt JPEG: bad segment length")
        if marker in _SOF_MARKERS:
            if pos + 9 > end:
                break
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            if width == 0 or height == 0:
                raise NotAJPEG("JPEG has a zero dimension")
            if width > MAX_DIMENSION or height > MAX_DIMENSION:
                raise NotAJPEG(f"JPEG of {width}x{height} is larger than {MAX_DIMENSION} a side")
            return width, height
        if marker == 0xDA:
            break
        pos += 2 + length
    raise NotAJPEG("JPEG has no frame header before its image data")
