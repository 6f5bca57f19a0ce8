"""A session's audio that arrives as Opus: kept as it came, decoded only for the WAV.

The packets go into ``temp/<name>.opus.fmp4`` as they arrive, a fragment every
:data:`FRAGMENT` seconds of sound (a daemon killed mid-session loses at most that), each packet
timed by the duration its TOC byte gives. After the session a short ffmpeg decodes that file
into the WAV (PCM s16le 44.1 kHz mono, like every WAV here), and with ``--mux-audio`` the
video's faststart copy takes the Opus itself as its sound (no re-encode). The decoder is the
one thing that reads the packets' contents, and it runs in a child: a hostile packet can cost
that run, never the daemon. Recovery after a crash does the same from what the file kept.
"""

from __future__ import annotations

import io
import os

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from livestream.library.tree import AUDIO_STREAM, OPUS_STREAM, MediaTree, Piece
from livestream.recording import ffmpeg, fragments, mp4
from livestream.recording.audio import HEADER_SIZE, write_all
from livestream.recording.ffmpeg import FFmpegResult
from livestream.wire.kinds import AUDIO, CHANNELS, SAMPLE_RATE
from livestream.wire.opus import RATE, OpusHead

_log = Logger()

# Sound held before it is written as one fragment: as the encoders' fragments for JPEG sessions.
FRAGMENT = RATE // 5


class DecodeFailed(RuntimeError):
    """ffmpeg could not make the WAV; the Opus stays in ``temp/`` for the next start."""


class OpusRecorder:
    """Owns one session's ``.opus.fmp4``."""

    def __init__(self, tree: MediaTree, name: str, head: OpusHead | None) -> None:
        self._tree = tree
        self._name = name
        self._head = head or OpusHead()
        self._file: io.FileIO | None = None
        self._pending: list[mp4.Sample] = []
        self._pending_samples = 0
        # Where the next fragment starts, in 48 kHz samples on the session's timeline.
        self._time = 0
        self._fragments = 0
        self._torn = False
        # Samples of sound received (48 kHz), what the packets' durations add up to.
        self.samples = 0

    def write(self, packet: bytes, samples: int, lead: int = 0) -> None:
        """One packet of ``samples`` (48 kHz); the first one after ``lead`` samples of silence
        (where the video began before the sound)."""
        if self._file is None:
            path = self._tree.temp_path(self._name, OPUS_STREAM)
            self._file = open(path, "xb", buffering=0)
            write_all(self._file, mp4.init_segment(mp4.OpusTrack(self._head)))
            self._time = lead
        self._pending.append(mp4.Sample(packet, samples, True))
        self._pending_samples += samples
        self.samples += samples
        if self._pending_samples >= FRAGMENT:
            self._flush()

    def _flush(self) -> None:
        if not self._pending or self._file is None:
            return
        self._fragments += 1
        if self._torn:
            return
        try:
            write_all(self._file, mp4.fragment(self._fragments, self._time, self._pending))
        except OSError:
            # Nothing goes after a torn fragment: the decode cuts the file back to before it.
            self._torn = True
            raise
        self._time += self._pending_samples
        self._pending, self._pending_samples = [], 0

    def end(self) -> None:
        """Write what is held and close the file."""
        if self._file is None:
            return
        try:
            self._flush()
        except OSError as e:
            _log.warn("{name}: the last Opus fragment could not be written: {error}",
                      name=self._name, error=e)  # fmt: skip
        finally:
            self._file.close()

    @property
    def started(self) -> bool:
        return self._file is not None

    @property
    def piece(self) -> Piece | None:
        """The file being written, once the first packet came (one piece, from 0)."""
        if self._file is None:
            return None
        return Piece(0, self._tree.temp_path(self._name, OPUS_STREAM))


def decode_wav(reactor, executable: str, tree: MediaTree, name: str) -> Deferred[str | None]:
    """Decode ``temp/<name>.opus.fmp4`` (cut back to its last whole fragment) into the WAV and
    publish it; fires with its file name, or None when there was no sound, or fails with
    :class:`DecodeFailed`. The Opus file is left for the caller (the video may still copy it).
    """
    src = tree.temp_path(name, OPUS_STREAM)
    wav = tree.temp_path(name, AUDIO_STREAM)
    kept, cut = fragments.trim(src)
    if cut:
        _log.warn("{name}: Opus ended mid-fragment; {cut} bytes cut", name=name, cut=cut)
    if not kept:
        return succeed(None)
    args = [
        "-i", os.fspath(src), "-map", "0:a", "-ar", str(SAMPLE_RATE), "-ac", str(CHANNELS),
        "-c:a", "pcm_s16le", "-bitexact", "-map_metadata", "-1", "-f", "wav", os.fspath(wav),
    ]  # fmt: skip
    d = ffmpeg.run(reactor, executable, args, f"{name} (Opus to WAV)")

    def published(result: FFmpegResult) -> str | None:
        if not result.ok or not wav.exists():
            wav.unlink(missing_ok=True)
            raise DecodeFailed(f"decoding the Opus of {name} failed: {result.describe()}")
        if wav.stat().st_size <= HEADER_SIZE:
            wav.unlink()
            return None
        return tree.publish(wav, AUDIO, name)

    return d.addCallback(published)
