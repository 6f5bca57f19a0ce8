"""A session's video: JPEG frames piped into one ffmpeg as they arrive, published as faststart MP4.

The encoder writes a fragmented MP4 with short fragments into ``temp/``, so a daemon killed
mid-recording leaves a file that is playable up to its last fragment; at the end a stream copy
(no re-encode, fast whatever the length) moves the index to the front for players and browsers,
and with ``--mux-audio`` takes in the audio track encoded beside it (:mod:`.aac`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from livestream.library.tree import AAC_STREAM, OPUS_STREAM, VIDEO_PART, VIDEO_STREAM, MediaTree
from livestream.recording import ffmpeg, fragments
from livestream.recording.feed import Feed
from livestream.recording.ffmpeg import FFmpegResult
from livestream.recording.poster import PosterPicker
from livestream.wire.kinds import VIDEO

_log = Logger()


@dataclass(frozen=True)
class EncoderSettings:
    """What every video recording of this daemon is encoded with."""

    ffmpeg: str
    fps: int
    preset: str
    # How long ffmpeg may take to finish after its input ends before it is signalled.
    grace: float = 30.0
    # ``frames``: one output frame per received frame; ``capture``: frames placed by their
    # capture time (livestream.recording.timing).
    timing: str = "frames"
    # Also encode the session's audio (AAC, by an encoder of its own) into the MP4.
    mux_audio: bool = False


# Repeats of a frame are written this many at a time as the encoder's stdin drains.
REPEAT_BATCH = 8


def encoder_args(settings: EncoderSettings, width: int, height: int, out: str) -> list[str]:
    """ffmpeg arguments: one output frame per input JPEG at the configured rate.

    The output size is fixed by the first frame (rounded down to even, as yuv420p needs); later
    frames of another size are fitted into it, so neither odd sizes nor a size change mid-stream
    lose the recording.
    """
    w, h = max(2, width - width % 2), max(2, height - height % 2)
    fit = (
        f"scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2:out_range=tv,"
        f"pad={w}:{h}:-1:-1,format=yuv420p"
    )
    return [
        # A live pipe: don't wait to probe megabytes before encoding the first frame.
        "-probesize", "32", "-analyzeduration", "0",
        "-f", "image2pipe", "-c:v", "mjpeg", "-framerate", str(settings.fps), "-i", "pipe:0",
        "-vf", fit, "-fps_mode", "passthrough",
        "-c:v", "libx264", "-preset", settings.preset, "-tune", "zerolatency",
        "-g", str(settings.fps * 2), "-pix_fmt", "yuv420p",
        # Short fragments flushed as written: a killed daemon loses at most ~the last second.
        "-movflags", "+frag_keyframe+empty_moov+default_base_moof",
        "-frag_duration", "200000", "-flush_packets", "1",
        "-f", "mp4", out,
    ]  # fmt: skip


class VideoRecorder:
    """Owns one session's encoder. ``producer`` is paused while ffmpeg's stdin is backed up, or
    while repeats of a frame are owed to it."""

    def __init__(
        self,
        reactor,
        settings: EncoderSettings,
        tree: MediaTree,
        name: str,
        producer: IPushProducer,
        on_failure: Callable[[FFmpegResult], None],
    ) -> None:
        self._reactor = reactor
        self._settings = settings
        self._tree = tree
        self._name = name
        self._producer = producer
        self._on_failure = on_failure
        # The encoder and the feed of its stdin, from the first frame on.
        self._encoder: tuple[ffmpeg.FFmpegProcess, Feed] | None = None
        self._ending = False
        self._poster = PosterPicker(settings.fps)
        self._last: bytes | None = None
        self.frames = 0
        self.dropped = 0

    def write(
        self, frame: bytes, size: tuple[int, int], repeat: int = 0, show: bool = True
    ) -> None:
        """Queue one JPEG for the encoder, after ``repeat`` copies of the previous frame (or of
        this one, if it is the first); one not shown only becomes the frame later repeats show.

        ``size`` is what :func:`livestream.wire.jpeg.frame_size` found when the session checked the
        frame: parsing its headers once per frame is enough."""
        width, height = size
        if self._encoder is None:
            self._encoder = self._start(width, height)
        proc, feed = self._encoder
        if proc.exited:
            self.dropped += 1
            return
        self._poster.offer(frame)
        self.frames += 1
        self.repeat(repeat, self._last or frame)
        if show:
            feed.push(frame)
        self._last = frame

    def repeat(self, count: int, frame: bytes | None = None) -> None:
        """Show the last frame ``count`` more ticks (``--timing capture`` fills gaps this way).

        Frames are queued and written as ffmpeg's stdin drains, with the client's socket
        paused while any wait: a long gap filled with repeats costs no memory."""
        frame = frame or self._last
        if frame is not None and self._encoder is not None:
            self._encoder[1].push(frame, count)

    def _start(self, width: int, height: int) -> tuple[ffmpeg.FFmpegProcess, Feed]:
        out = self._tree.temp_path(self._name, VIDEO_STREAM)
        args = encoder_args(self._settings, width, height, os.fspath(out))
        proc = ffmpeg.spawn(self._reactor, self._settings.ffmpeg, args, self._name)
        feed = Feed(proc, self._producer, REPEAT_BATCH)
        proc.ended.addCallback(self._ended_early)
        _log.info(
            "encoding {name}: {width}x{height} at {fps} fps",
            name=self._name, width=width, height=height, fps=self._settings.fps,
        )  # fmt: skip
        return proc, feed

    def _ended_early(self, result: FFmpegResult) -> FFmpegResult:
        if not self._ending:
            _log.error(
                "encoder for {name} stopped mid-stream: {why}",
                name=self._name,
                why=result.describe(),
            )
            self._on_failure(result)
        return result

    @inlineCallbacks
    def end(self):
        """End the input (frames still queued go first) and wait for the encoder."""
        if self._encoder is None:
            return None
        proc, feed = self._encoder
        reported = proc.exited  # a mid-stream death was reported when it happened
        self._ending = True
        yield feed.drained()
        result = yield ffmpeg.end_input(self._reactor, proc, self._settings.grace)
        if not result.ok and not reported:
            _log.error("encoder for {name}: {why}", name=self._name, why=result.describe())
            self._on_failure(result)
        return None

    @inlineCallbacks
    def publish(self, *, opus: bool = False):
        """After :meth:`end` (and the audio track's end): publish, fire with the file name or
        None. A session without a frame has no MP4; its AAC track, if any, is dropped. ``opus``:
        the sound is the client's Opus (see :func:`publish`)."""
        if self._encoder is None:
            _unlink(self._tree.temp_path(self._name, AAC_STREAM))
            return None
        filename = yield publish(
            self._reactor, self._settings.ffmpeg, self._tree, self._name, opus=opus
        )
        if filename is not None:
            self._poster.save(self._tree, self._name)
        return filename


def publish(
    reactor, executable: str, tree: MediaTree, name: str, *, opus: bool = False
) -> Deferred[str | None]:
    """Turn ``temp/<name>`` fragmented MP4 into ``video/<name>.mp4`` (faststart) by stream copy,
    with the ``--mux-audio`` track's fragmented MP4 as its sound when there is one: the AAC
    encoded beside the video, or (``opus``) the Opus the client sent, which is left in place for
    its WAV.

    Shared by a session's end and by recovery after a crash. Fires with the published file name,
    or None when no frame was written; temp files of ``name`` (but the Opus) are gone either way.
    If the copy fails, the fragmented video itself (playable, only slower to start, without the
    sound) is published instead.
    """
    src = tree.temp_path(name, VIDEO_STREAM)
    part = tree.temp_path(name, VIDEO_PART)
    track = tree.temp_path(name, OPUS_STREAM if opus else AAC_STREAM)
    owned = () if opus else (track,)
    kept = _trimmed(src, name, "video")
    if not kept:
        _unlink(src, part, *owned)
        return succeed(None)
    inputs, maps = ["-i", os.fspath(src)], ["-map", "0:v"]
    if _trimmed(track, name, "audio track"):
        # Both start at 0 of the session's timeline (the AAC's silence placed it), or the Opus
        # says where it starts (its first fragment's decode time): -copyts keeps that start
        # instead of moving each input to 0, so the copy plays them in sync.
        inputs = [*(["-copyts"] if opus else []), *inputs, "-i", os.fspath(track)]
        maps += ["-map", "1:a"]
    args = [*inputs, *maps, "-c", "copy", "-movflags", "+faststart", "-f", "mp4", os.fspath(part)]
    d = ffmpeg.run(reactor, executable, args, f"{name} (faststart)")

    def published(result: FFmpegResult) -> str:
        if result.ok and part.exists():
            filename = tree.publish(part, VIDEO, name)
            _unlink(src, *owned)
            return filename
        _log.error(
            "faststart copy of {name} failed, publishing its fragmented MP4 as it is: {why}",
            name=name, why=result.describe(),
        )  # fmt: skip
        _unlink(part, *owned)
        return tree.publish(src, VIDEO, name)

    return d.addCallback(published)


def _trimmed(path: Path, name: str, what: str) -> int:
    """Cut a fragmented MP4 back to its last whole fragment; the fragments kept (0: none)."""
    kept, cut = fragments.trim(path)
    if cut:
        _log.warn(
            "{name}: {what} ended mid-fragment; {cut} bytes cut, {kept} fragments kept",
            name=name, what=what, cut=cut, kept=kept,
        )  # fmt: skip
    return kept


def _unlink(*paths: Path) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
