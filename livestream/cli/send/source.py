"""Where the media comes from: one ffmpeg that decodes a file (or generates a test pattern and a
tone) into JPEG frames on its stdout and PCM s16le 44.1 kHz mono on a second pipe (fd 3); or
encodes them, as a client that sends what it encoded does: H.264 (an Annex B stream of access
units) on stdout, Opus (in Ogg pages) on fd 3.

One process for both keeps them in step, and pausing it (``pauseProducing`` on its transport)
stops both: the pipes fill and ffmpeg waits, so a long file is never read into memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure

from livestream.cli.send.split import (
    H264Splitter,
    InvalidOgg,
    JPEGSplitter,
    OpusStream,
    PCMChunker,
)
from livestream.recording import ffmpeg
from livestream.recording.ffmpeg import FFmpegProcess
from livestream.wire import opus
from livestream.wire.h264 import InvalidH264, check_access_unit
from livestream.wire.jpeg import NotAJPEG
from livestream.wire.kinds import BYTES_PER_SECOND, SAMPLE_RATE, Codec

AUDIO_FD = 3
# ffmpeg's "-q:v" for mjpeg: 2 (best) to 31; 5 looks like a webcam's JPEGs at a third the size of 2.
JPEG_QUALITY = "5"
# H.264 as a live client sends it: constrained baseline (plays everywhere, no B-frames to hold
# frames back), x264's zerolatency tuning (no lookahead: a frame leaves as soon as it is
# encoded), veryfast (keeps up in real time on a small machine), a keyframe every second (the
# server starts recordings and live viewers on one, and this encoder cannot be asked for one
# on demand), 4:2:0 8-bit as the server records, limited ("tv") range as browser encoders make
# it (a JPEG-sourced file would otherwise stay full range: ffmpeg converts only when told), and
# an access unit delimiter before each
# frame so the stream is cut into frames without parsing slices. Each packet is flushed to the
# pipe as it is made.
H264_ARGS = ("-c:v", "libx264", "-profile:v", "baseline", "-tune", "zerolatency",
             "-preset", "veryfast", "-pix_fmt", "yuv420p", "-color_range", "tv",
             "-bsf:v", "h264_metadata=aud=insert",
             "-flush_packets", "1", "-f", "h264")  # fmt: skip
# Opus as a browser's encoder sends it: 48 kHz mono, 20 ms packets, 32 kbit/s; in Ogg pages of
# one packet each (a page holds its packets until it is full or its duration is up); no
# metadata from the file in OpusTags (skipped anyway).
OPUS_ARGS = ("-c:a", "libopus", "-b:a", "32k", "-ar", str(opus.RATE), "-ac", "1",
             "-frame_duration", "20", "-page_duration", "20000", "-map_metadata", "-1",
             "-f", "ogg")  # fmt: skip
# Lines of "ffmpeg -i FILE": "  Stream #0:1[0x2](und): Audio: aac ...". A cover picture is a
# video stream too, marked "(attached pic)"; it is not a video to send.
_STREAM = re.compile(rb"^\s*Stream #\d+:\d+.*?: (Video|Audio): (.*)$", re.MULTILINE)


class SourceError(Exception):
    """The source cannot be read; the message says why, in one line."""


@dataclass(frozen=True)
class Source:
    """What to send: ``path`` (a file) or, when None, ffmpeg's test pattern and a 440 Hz tone."""

    path: str | None
    fps: int
    size: tuple[int, int] | None
    duration: float | None
    video: bool = True
    audio: bool = True
    video_codec: Codec = Codec.JPEG
    audio_codec: Codec = Codec.PCM

    def args(self) -> list[str]:
        """ffmpeg's arguments after its common ones: the input(s), then one output per pipe."""
        size = f"{self.size[0]}x{self.size[1]}" if self.size else None
        limit = ["-t", f"{self.duration:g}"] if self.duration else []
        if self.path is None:
            length = f":duration={self.duration:g}" if self.duration else ""
            inputs = [
                "-f", "lavfi", "-i", f"testsrc2=size={size or '640x480'}:rate={self.fps}{length}",
                "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={SAMPLE_RATE}{length}",
            ]  # fmt: skip
            video_map, audio_map, filters = "0:v", "1:a", []
        else:
            inputs = ["-i", self.path]
            video_map, audio_map = "0:V:0", "0:a:0"
            scale = f",scale={self.size[0]}:{self.size[1]}" if self.size else ""
            filters = ["-vf", f"fps={self.fps}{scale}"]
        out = ["-nostdin", *inputs]
        if self.video and self.video_codec == Codec.H264:
            out += ["-map", video_map, *limit, *filters, *H264_ARGS, "-g", str(self.fps),
                    "pipe:1"]  # fmt: skip
        elif self.video:
            out += ["-map", video_map, *limit, *filters, "-c:v", "mjpeg", "-q:v", JPEG_QUALITY,
                    "-f", "image2pipe", "pipe:1"]  # fmt: skip
        if self.audio and self.audio_codec == Codec.OPUS:
            out += ["-map", audio_map, *limit, *OPUS_ARGS, f"pipe:{AUDIO_FD}"]
        elif self.audio:
            out += ["-map", audio_map, *limit, "-c:a", "pcm_s16le", "-ar", str(SAMPLE_RATE),
                    "-ac", "1", "-f", "s16le", f"pipe:{AUDIO_FD}"]  # fmt: skip
        return out


async def probe(reactor: IReactorProcess, executable: str, path: str) -> tuple[bool, bool]:
    """Whether the file at ``path`` has a video stream (not a cover picture) and an audio one.

    ffmpeg without an output lists the input's streams and exits non-zero, which is expected.
    """
    _, err, _ = await getProcessOutputAndValue(
        executable, ["-hide_banner", "-nostdin", "-i", path], env={}, reactor=reactor
    )
    kinds = {kind for kind, rest in _STREAM.findall(err) if b"(attached pic)" not in rest}
    if not kinds:
        lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
        useful = [line for line in lines if "output file" not in line.lower()]
        raise SourceError(f"{path}: {(useful or lines or ['no audio or video in it'])[-1]}")
    return b"Video" in kinds, b"Audio" in kinds


# Gets each frame (a JPEG, or an H.264 access unit) and whether it is a keyframe (H.264).
OnFrame = Callable[[bytes, bool], None]
# Gets each audio chunk (PCM, or an Opus packet) and how long it plays, in seconds.
OnAudio = Callable[[bytes, Fraction], None]


class MediaReader(FFmpegProcess):
    """Reads one ffmpeg's two pipes and hands on each frame (a JPEG, or an H.264 access unit
    checked as the server will check it) and each audio chunk (PCM, or an Opus packet).

    ``ended`` (from :class:`FFmpegProcess`) fires when ffmpeg has exited; by then every frame
    and the last, shorter audio chunk have been handed on. With Opus, ``opus_head`` fires with
    the stream's OpusHead as soon as ffmpeg has written it (first), or fails if it never does.
    What ffmpeg writes that is not what was asked for sets ``broken`` and stops it.
    """

    def __init__(
        self,
        on_frame: OnFrame,
        on_audio: OnAudio,
        audio_chunk: int,
        video_codec: Codec = Codec.JPEG,
        audio_codec: Codec = Codec.PCM,
    ) -> None:
        super().__init__("source")
        self._on_frame = on_frame
        self._on_audio = on_audio
        self._h264 = H264Splitter() if video_codec == Codec.H264 else None
        self._jpeg = JPEGSplitter()
        self._opus = OpusStream() if audio_codec == Codec.OPUS else None
        self._pcm = PCMChunker(audio_chunk)
        self.opus_head: Deferred[bytes] = Deferred()
        self.broken: str | None = None

    def _break(self, what: str, error: Exception) -> None:
        self.broken = f"ffmpeg's {what} output: {error}"
        if self._opus is not None and not self.opus_head.called:
            self.opus_head.errback(SourceError(self.broken))
        ffmpeg.pipes(self).signalProcess("TERM")

    def outReceived(self, data: bytes) -> None:
        if self.broken:
            return
        if self._h264 is None:
            try:
                frames = self._jpeg.feed(data)
            except NotAJPEG as e:
                self._break("video", e)
                return
            for frame in frames:
                self._on_frame(frame, False)
            return
        try:
            self._access_units(self._h264.feed(data))
        except InvalidH264 as e:
            self._break("video", e)

    def _access_units(self, units: list[bytes]) -> None:
        for unit in units:
            self._on_frame(unit, check_access_unit(unit).key)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != AUDIO_FD:
            super().childDataReceived(childFD, data)
        elif self._opus is None:
            for chunk in self._pcm.feed(data):
                self._on_audio(chunk, Fraction(len(chunk), BYTES_PER_SECOND))
        elif not self.broken:
            try:
                self._packets(self._opus.feed(data))
            except (InvalidOgg, opus.InvalidOpus) as e:
                self._break("audio", e)

    def _packets(self, packets: list[tuple[bytes, int]]) -> None:
        assert self._opus is not None
        if self._opus.head is not None and not self.opus_head.called:
            self.opus_head.callback(self._opus.head)
        for packet, samples in packets:
            self._on_audio(packet, Fraction(samples, opus.RATE))

    def processEnded(self, reason: Failure) -> None:
        rest = self._pcm.flush()
        if rest:
            self._on_audio(rest, Fraction(len(rest), BYTES_PER_SECOND))
        if not self.broken:
            try:
                if self._h264 is not None:
                    last = self._h264.flush()
                    self._access_units([last] if last else [])
                if self._opus is not None:
                    self._opus.flush()
            except (InvalidH264, InvalidOgg) as e:
                self.broken = f"ffmpeg's output ends cut off: {e}"
        if self._opus is not None and not self.opus_head.called:
            self.opus_head.errback(SourceError(self.broken or "ffmpeg ended without audio"))
        super().processEnded(reason)


def start(
    reactor: IReactorProcess,
    executable: str,
    source: Source,
    on_frame: OnFrame,
    on_audio: OnAudio,
    audio_chunk: int,
) -> MediaReader:
    """Spawn the ffmpeg of ``source``; it starts writing at once."""
    audio_codec = source.audio_codec if source.audio else Codec.PCM
    reader = MediaReader(on_frame, on_audio, audio_chunk, source.video_codec, audio_codec)
    read_fds: Sequence[int] = (AUDIO_FD,) if source.audio else ()
    ffmpeg.spawn(reactor, executable, source.args(), "source", proto=reader, read_fds=read_fds)
    ffmpeg.pipes(reader).closeStdin()
    return reader
