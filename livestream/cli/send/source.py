"""Where the media comes from: one ffmpeg that decodes a file (or generates a test pattern and a
tone) into JPEG frames on its stdout and PCM s16le 44.1 kHz mono on a second pipe (fd 3).

One process for both keeps them in step, and pausing it (``pauseProducing`` on its transport)
stops both: the pipes fill and ffmpeg waits, so a long file is never read into memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorProcess
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure

from livestream.cli.send.split import JPEGSplitter, PCMChunker
from livestream.recording import ffmpeg
from livestream.recording.ffmpeg import FFmpegProcess
from livestream.wire.jpeg import NotAJPEG
from livestream.wire.kinds import SAMPLE_RATE

AUDIO_FD = 3
# ffmpeg's "-q:v" for mjpeg: 2 (best) to 31; 5 looks like a webcam's JPEGs at a third the size of 2.
JPEG_QUALITY = "5"
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
        if self.video:
            out += ["-map", video_map, *limit, *filters, "-c:v", "mjpeg", "-q:v", JPEG_QUALITY,
                    "-f", "image2pipe", "pipe:1"]  # fmt: skip
        if self.audio:
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


class MediaReader(FFmpegProcess):
    """Reads one ffmpeg's two pipes and hands on each JPEG frame and each PCM chunk.

    ``ended`` (from :class:`FFmpegProcess`) fires when ffmpeg has exited; by then every frame
    and the last, shorter audio chunk have been handed on.
    """

    def __init__(
        self,
        on_frame: Callable[[bytes], None],
        on_audio: Callable[[bytes], None],
        audio_chunk: int,
    ) -> None:
        super().__init__("source")
        self._on_frame = on_frame
        self._on_audio = on_audio
        self._frames = JPEGSplitter()
        self._audio = PCMChunker(audio_chunk)
        self.broken: str | None = None

    def outReceived(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            frames = self._frames.feed(data)
        except NotAJPEG as e:
            self.broken = f"ffmpeg's video output: {e}"
            ffmpeg.pipes(self).signalProcess("TERM")
            return
        for frame in frames:
            self._on_frame(frame)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == AUDIO_FD:
            for chunk in self._audio.feed(data):
                self._on_audio(chunk)
        else:
            super().childDataReceived(childFD, data)

    def processEnded(self, reason: Failure) -> None:
        rest = self._audio.flush()
        if rest:
            self._on_audio(rest)
        super().processEnded(reason)


def start(
    reactor: IReactorProcess,
    executable: str,
    source: Source,
    on_frame: Callable[[bytes], None],
    on_audio: Callable[[bytes], None],
    audio_chunk: int,
) -> MediaReader:
    """Spawn the ffmpeg of ``source``; it starts writing at once."""
    reader = MediaReader(on_frame, on_audio, audio_chunk)
    read_fds: Sequence[int] = (AUDIO_FD,) if source.audio else ()
    ffmpeg.spawn(reactor, executable, source.args(), "source", proto=reader, read_fds=read_fds)
    ffmpeg.pipes(reader).closeStdin()
    return reader
