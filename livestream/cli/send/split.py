"""Cut ffmpeg's output pipes into what the protocol sends: whole JPEG frames, PCM chunks, H.264
access units (from an Annex B stream), Opus packets (from Ogg pages).

Pure: bytes in, chunks out, no I/O. Each cutter is incremental (it takes its input in pieces of
any size, as a pipe gives them) and holds at most one unit plus one read in memory.
"""

from __future__ import annotations

import struct

from livestream.wire.h264 import AUD, PPS, SEI, SLICES, SPS, InvalidH264
from livestream.wire.jpeg import SOI, NotAJPEG
from livestream.wire.opus import InvalidOpus, packet_samples, parse_opus_head

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


_START_CODE = b"\x00\x00\x01"
# NAL unit types that begin a new access unit when they follow a slice (7.4.1.2.3): SEI, SPS,
# PPS, AUD, and 14-18 (prefix NAL, subset SPS, reserved).
_STARTS_NEXT_UNIT = frozenset({SEI, SPS, PPS, AUD, 14, 15, 16, 17, 18})


class H264Splitter:
    """Cuts an H.264 Annex B byte stream (ffmpeg's ``-f h264``) into access units, one a frame.

    ffmpeg is told to put an access unit delimiter (AUD, NAL type 9) before every frame
    (``h264_metadata=aud=insert``), so a unit ends where the next AUD's start code begins. A
    stream without them is still cut where H.264 says a new access unit starts (7.4.1.2.3): an
    SEI, SPS or PPS after a slice, or a slice whose ``first_mb_in_slice`` is 0 after a slice (a
    new picture; arbitrary slice order and redundant pictures, which no encoder used here
    makes, are not told apart). A unit is handed on when the start of the next one is seen,
    so the last one waits for :meth:`flush`. Each unit keeps its start codes, as the protocol
    sends it; what the units hold is checked elsewhere (``wire.h264.check_access_unit``).
    """

    def __init__(self, max_unit: int = 64 * 1024 * 1024) -> None:
        self._buf = bytearray()
        # Where to look for the next start code: every one before it has been seen.
        self._scan = 0
        self._started = False
        # The unit at the start of the buffer has a slice so far.
        self._has_slice = False
        self._max_unit = max_unit

    @property
    def pending(self) -> int:
        """Bytes held for a unit not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """The access units completed by ``data``. Raises :class:`InvalidH264` when the stream
        does not start with a start code, or a unit grows past ``max_unit``."""
        buf = self._buf
        buf += data
        units: list[bytes] = []
        start = 0  # where the current unit begins in the buffer
        while True:
            found = buf.find(_START_CODE, self._scan)
            if found < 0:
                # A start code may be cut after its first byte or two.
                self._scan = max(self._scan, len(buf) - 2)
                break
            header = found + 3
            # The NAL header, and for a slice the byte after it (first_mb_in_slice's first bit).
            if header >= len(buf) or (buf[header] & 0x1F in SLICES and header + 1 >= len(buf)):
                self._scan = found
                break
            kind = buf[header] & 0x1F
            cut = found - 1 if found > 0 and buf[found - 1] == 0 else found
            if not self._started:
                if buf[:found].strip(b"\x00"):
                    raise InvalidH264("ffmpeg's H.264 does not start with a start code")
                self._started = True
                start = cut
            elif kind == AUD or (
                self._has_slice
                and (kind in _STARTS_NEXT_UNIT or (kind in SLICES and buf[header + 1] & 0x80))
            ):
                units.append(bytes(buf[start:cut]))
                start = cut
                self._has_slice = False
            if kind in SLICES:
                self._has_slice = True
            self._scan = header
        if not self._started and buf[: max(len(buf) - 2, 0)].strip(b"\x00"):
            raise InvalidH264("ffmpeg's H.264 does not start with a start code")
        del buf[:start]
        self._scan -= start
        if len(buf) > self._max_unit:
            raise InvalidH264(f"no end of an H.264 access unit within {self._max_unit} bytes")
        return units

    def flush(self) -> bytes:
        """The last unit, at the end of the stream (maybe nothing)."""
        rest, self._buf, self._scan = bytes(self._buf), bytearray(), 0
        if not rest.strip(b"\x00"):
            return b""
        if not self._started:
            raise InvalidH264("ffmpeg's H.264 does not start with a start code")
        return rest


class InvalidOgg(ValueError):
    """Bytes that are not the one Ogg stream expected; the message says why."""


# An Ogg page header (RFC 3533 §6): capture pattern, version, header type, granule position,
# serial number, page sequence number, CRC, number of segments; then the segment table.
_PAGE = struct.Struct("<4sBBqIIIB")
_CAPTURE = b"OggS"
_CONTINUED = 0x01
_FIRST = 0x02
_LAST = 0x04


class OggReader:
    """The packets of one logical Ogg stream (RFC 3533), from its pages: what ffmpeg's ogg
    muxer writes for one Opus stream.

    A packet is the bytes of its lacing values up to one below 255; one whose last value on a
    page is 255 continues on the next page, which must say so. Each page must start with the
    capture pattern and follow the one before it (same serial number, next sequence number):
    a lost or foreign page is refused, not read as a packet. The CRC is not checked: the pages
    come over a local pipe from the ffmpeg this command started, and every Opus packet is
    checked on its own (``wire.opus.packet_samples``). A page is at most 65307 bytes, and a
    packet spanning pages at most ``max_packet``.
    """

    def __init__(self, max_packet: int = 1024 * 1024) -> None:
        self._buf = bytearray()
        self._partial: bytearray | None = None
        self._serial: int | None = None
        self._sequence = 0
        self._ended = False
        self._max_packet = max_packet
        self.granule = -1

    def feed(self, data: bytes) -> list[bytes]:
        """The packets completed by ``data``. Raises :class:`InvalidOgg`."""
        buf = self._buf
        buf += data
        packets: list[bytes] = []
        pos = 0
        while len(buf) - pos >= _PAGE.size:
            capture, version, flags, granule, serial, sequence, _, count = _PAGE.unpack_from(
                buf, pos
            )
            if capture != _CAPTURE:
                raise InvalidOgg("ffmpeg's Ogg stream does not continue with a page (OggS)")
            if version != 0:
                raise InvalidOgg(f"an Ogg page of version {version}: only version 0 is read")
            body = pos + _PAGE.size + count
            if len(buf) < body:
                break
            lacing = buf[pos + _PAGE.size : body]
            end = body + sum(lacing)
            if len(buf) < end:
                break
            self._check(flags, serial, sequence)
            self.granule = granule
            self._packets(lacing, buf[body:end], packets)
            pos = end
        del buf[:pos]
        return packets

    def flush(self) -> None:
        """The end of the stream: refuses one that ends inside a page or a packet."""
        if self._buf or self._partial is not None:
            raise InvalidOgg("ffmpeg's Ogg stream ends inside a page or a packet")

    def _check(self, flags: int, serial: int, sequence: int) -> None:
        if self._ended:
            raise InvalidOgg("an Ogg page after the last page of the stream")
        if self._serial is None:
            if not flags & _FIRST:
                raise InvalidOgg("the first Ogg page does not begin a stream")
            self._serial, self._sequence = serial, sequence
        elif flags & _FIRST or serial != self._serial:
            raise InvalidOgg("a second logical stream in the Ogg pages: only one is read")
        elif sequence != self._sequence:
            raise InvalidOgg(f"Ogg page {self._sequence} is missing (page {sequence} came)")
        self._sequence = (sequence + 1) & 0xFFFFFFFF
        if bool(flags & _CONTINUED) != (self._partial is not None):
            raise InvalidOgg("an Ogg page does not continue the packet the one before left open")
        self._ended = bool(flags & _LAST)

    def _packets(self, lacing: bytearray, body: bytearray, packets: list[bytes]) -> None:
        pos = 0
        for value in lacing:
            if self._partial is None:
                self._partial = bytearray()
            self._partial += body[pos : pos + value]
            pos += value
            if len(self._partial) > self._max_packet:
                raise InvalidOgg(f"an Ogg packet over {self._max_packet} bytes")
            if value < 255:
                packets.append(bytes(self._partial))
                self._partial = None


class OpusStream:
    """Ogg Opus (RFC 7845) as ffmpeg's libopus writes it, read as the protocol sends it: the
    identification header (OpusHead, the first packet) is kept in :attr:`head` for
    ``CONNECT``, the comment header (OpusTags) skipped, and each audio packet handed on with its
    duration in 48 kHz samples. Raises :class:`InvalidOgg` or :class:`InvalidOpus`."""

    def __init__(self) -> None:
        self._ogg = OggReader()
        self.head: bytes | None = None
        self._tags = False

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        """The audio packets completed by ``data``, each with its duration (samples)."""
        out: list[tuple[bytes, int]] = []
        for packet in self._ogg.feed(data):
            if self.head is None:
                parse_opus_head(packet)
                self.head = packet
            elif not self._tags:
                if not packet.startswith(b"OpusTags"):
                    raise InvalidOpus("the second Ogg Opus packet is not OpusTags")
                self._tags = True
            else:
                out.append((packet, packet_samples(packet)))
        return out

    def flush(self) -> None:
        self._ogg.flush()
