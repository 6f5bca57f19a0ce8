"""The media kinds, in every spelling the daemon and its clients use, from one table.

A kind's value is its directory in the media tree and its key in every JSON document
(``{"video": [...], "audio": [...]}``); being a ``str``, it can stand wherever those strings
did. The other spellings hang off it: the file suffix of a finished recording, its content type,
``mediaSourceType`` on the wire, and the kind bytes of the binary STREAM forms. The codecs a
session's chunks of each kind may come in are named here too.

Pure: no imports of livestream, so every layer may import it.
"""

from __future__ import annotations

from enum import StrEnum


class MediaKind(StrEnum):
    """``VIDEO`` and ``AUDIO``; each member carries all of its spellings."""

    # directory, wire name, suffix, content type, binary, timed and encoded binary kind bytes
    VIDEO = ("video", "VIDEO", ".mp4", "video/mp4", 0x01, 0x11, 0x21)
    AUDIO = ("audio", "AUDIO", ".wav", "audio/wav", 0x02, 0x12, 0x22)

    wire: str
    suffix: str
    content_type: str
    binary: int
    timed: int
    encoded: int

    def __new__(
        cls,
        directory: str,
        wire: str,
        suffix: str,
        content_type: str,
        binary: int,
        timed: int,
        encoded: int,
    ) -> MediaKind:
        member = str.__new__(cls, directory)
        member._value_ = directory
        member.wire = wire
        member.suffix = suffix
        member.content_type = content_type
        member.binary = binary
        member.timed = timed
        member.encoded = encoded
        return member


VIDEO = MediaKind.VIDEO
AUDIO = MediaKind.AUDIO
# A finished recording's file suffix by kind: what the media tree and the bucket look up, with
# a kind or with the plain string of an object key or a marker file (a kind is equal to it).
SUFFIXES: dict[str, str] = {kind: kind.suffix for kind in MediaKind}
BY_WIRE_NAME = {kind.wire: kind for kind in MediaKind}
# The kind byte that starts a binary STREAM message: the chunk follows at once (``binary``) or
# after the seq and captureTime header (``timed``).
BY_BINARY = {kind.binary: kind for kind in MediaKind}
BY_TIMED = {kind.timed: kind for kind in MediaKind}
# ... or after the flags, seq and timestamp header of an encoded chunk (H.264, Opus).
BY_ENCODED = {kind.encoded: kind for kind in MediaKind}


class Codec(StrEnum):
    """What a session's chunks of a kind are, as ``CONNECT`` names them: the seed's JPEG frames
    and PCM, or media the client encoded (recorded as it came)."""

    JPEG = "jpeg"
    H264 = "h264"
    PCM = "pcm"
    OPUS = "opus"

    @property
    def encoded(self) -> bool:
        return self in (Codec.H264, Codec.OPUS)


# The codecs each kind may come in, the seed's first (the default).
CODECS: dict[MediaKind, tuple[Codec, ...]] = {
    MediaKind.VIDEO: (Codec.JPEG, Codec.H264),
    MediaKind.AUDIO: (Codec.PCM, Codec.OPUS),
}

# The PCM every audio chunk carries, and the WAV and AAC track are made of: s16le mono 44.1 kHz.
SAMPLE_RATE = 44100
CHANNELS = 1
SAMPLE_BYTES = 2
# One sample of every channel (the WAV's block): what a count of samples counts, in bytes.
BLOCK_BYTES = CHANNELS * SAMPLE_BYTES
BYTES_PER_SECOND = SAMPLE_RATE * BLOCK_BYTES
