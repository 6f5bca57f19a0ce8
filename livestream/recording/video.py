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

from livestream.library.tree import (
    AAC_STREAM,
    OPUS_STREAM,
    VIDEO_PART,
    VIDEO_STREAM,
    MediaTree,
    Piece,
)
from livestream.recording import ffmpeg, fragments
from livestream.recording.encoder import STALL_TIMEOUT, ReplacingEncoder, Stream
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
    # Seconds an encoder may leave its input full without reading before it is replaced.
    stall_timeout: float = STALL_TIMEOUT


# Seconds between keyframes: each starts a live HLS segment (bench.keyframes: 1 s costs 3 % more
# bits than 2 s, and no CPU that could be told from noise).
KEYFRAME_SECONDS = 1
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
        "-g", str(settings.fps * KEYFRAME_SECONDS), "-pix_fmt", "yuv420p",
        # Short fragments flushed as written: a killed daemon loses at most ~the last second.
        "-movflags", "+frag_keyframe+empty_moov+default_base_moof",
        "-frag_duration", "200000", "-flush_packets", "1",
        "-f", "mp4", out,
    ]  # fmt: skip


class VideoRecorder:
    """Owns one session's encoder (replaced if it dies or sticks: :mod:`.encoder`).
    ``producer`` is paused while ffmpeg's stdin is backed up, or while repeats of a frame are
    owed to it."""

    def __init__(
        self,
        reactor,
        settings: EncoderSettings,
        tree: MediaTree,
        name: str,
        producer: IPushProducer,
        on_failure: Callable[[FFmpegResult, bool], None],
    ) -> None:
        self._reactor = reactor
        self._settings = settings
        self._tree = tree
        self._name = name
        self._producer = producer
        self._on_failure = on_failure
        # The encoder, from the first frame on (its size is the recording's).
        self._encoder: ReplacingEncoder | None = None
        self._poster = PosterPicker(settings.fps)
        self._last: bytes | None = None
        self.frames = 0

    @property
    def piece(self) -> Piece | None:
        """The encoder's piece being written now, from the first frame on."""
        return self._encoder.piece if self._encoder is not None else None

    @property
    def dropped(self) -> int:
        """Frames that never reached an encoder: after the session's encoders kept dying."""
        return self._encoder.dropped if self._encoder is not None else 0

    def write(
        self, frame: bytes, size: tuple[int, int], repeat: int = 0, show: bool = True
    ) -> None:
        """Queue one JPEG for the encoder, after ``repeat`` copies of the previous frame (or of
        this one, if it is the first); one not shown only becomes the frame later repeats show.

        ``size`` is what :func:`livestream.wire.jpeg.frame_size` found when the session checked the
        frame: parsing its headers once per frame is enough."""
        if self._encoder is None:
            self._encoder = self._start(*size)
        encoder = self._encoder
        if encoder.given_up:
            encoder.push(frame)  # counted as dropped
            return
        self._poster.offer(frame)
        self.frames += 1
        self.repeat(repeat, self._last or frame)
        if show:
            encoder.push(frame)
        self._last = frame

    def repeat(self, count: int, frame: bytes | None = None) -> None:
        """Show the last frame ``count`` more ticks (``--timing capture`` fills gaps this way).

        Frames are queued and written as ffmpeg's stdin drains, with the client's socket
        paused while any wait: a long gap filled with repeats costs no memory."""
        frame = frame or self._last
        if frame is not None and self._encoder is not None:
            self._encoder.push(frame, count)

    def _start(self, width: int, height: int) -> ReplacingEncoder:
        settings = self._settings
        stream = Stream(
            VIDEO_STREAM, self._name, settings.fps,
            lambda out: encoder_args(settings, width, height, out), batch=REPEAT_BATCH,
        )  # fmt: skip
        _log.info(
            "encoding {name}: {width}x{height} at {fps} fps",
            name=self._name, width=width, height=height, fps=settings.fps,
        )  # fmt: skip
        return ReplacingEncoder(
            self._reactor, settings.ffmpeg, self._tree, self._name, stream, self._producer,
            self._on_failure, settings.grace, settings.stall_timeout,
        )  # fmt: skip

    async def end(self) -> None:
        """End the input (frames still queued go first) and wait for the encoder; an encoder
        failing at its end is reported (one that died mid-stream was, when it did)."""
        if self._encoder is None:
            return
        result = await self._encoder.end()
        if result is not None and not result.ok:
            _log.error("encoder for {name}: {why}", name=self._name, why=result.describe())
            self._on_failure(result, False)

    @inlineCallbacks
    def publish(self, *, opus: bool = False):
        """After :meth:`end` (and the audio track's end): publish, fire with the file name or
        None. A session without a frame has no MP4; its AAC track, if any, is dropped. ``opus``:
        the sound is the client's Opus (see :func:`publish`)."""
        if self._encoder is None:
            self._tree.drop_pieces(self._name, AAC_STREAM)
            return None
        filename = yield publish(
            self._reactor, self._settings.ffmpeg, self._tree, self._name, opus=opus
        )
        if filename is not None:
            self._poster.save(self._tree, self._name)
        return filename


class JoinFailed(Exception):
    """The stream copy joining a video's pieces failed: they stay in ``temp/``, for the next
    start's recovery to join (no one piece is the recording)."""


def publish(
    reactor, executable: str, tree: MediaTree, name: str, *, opus: bool = False
) -> Deferred[str | None]:
    """Turn ``temp/<name>`` fragmented MP4 into ``video/<name>.mp4`` (faststart) by stream copy,
    with the ``--mux-audio`` track's fragmented MP4 as its sound when there is one: the AAC
    encoded beside the video, or (``opus``) the Opus the client sent, which is left in place for
    its WAV. A stream in pieces (its encoder was replaced) is joined by the same copy, each
    piece placed where its name says it starts (ffmpeg's concat demuxer).

    Shared by a session's end and by recovery after a crash. Fires with the published file name,
    or None when no frame was written; temp files of ``name`` (but the Opus) are gone either way.
    If the copy fails, the fragmented video itself (playable, only slower to start, without the
    sound) is published instead; a video in pieces fails with :class:`JoinFailed`.
    """
    part = tree.temp_path(name, VIDEO_PART)
    video = _kept_pieces(tree, name, VIDEO_STREAM, "video")
    if opus:
        track = [p for p in tree.pieces(name, OPUS_STREAM) if _trimmed(p.path, name, "opus")]
        owned: list[Path] = []
    else:
        track = _kept_pieces(tree, name, AAC_STREAM, "audio track")
        owned = [piece.path for piece in track]
    if not video:
        _unlink(part, *owned)
        return succeed(None)
    lists: list[Path] = []
    inputs, maps = _input(tree, name, VIDEO_STREAM, video, lists), ["-map", "0:v"]
    if track:
        # Both start at 0 of the session's timeline (the AAC's silence placed it), or the Opus
        # says where it starts (its first fragment's decode time): -copyts keeps that start
        # instead of moving each input to 0, so the copy plays them in sync.
        copyts = ["-copyts"] if opus else []
        sound = OPUS_STREAM if opus else AAC_STREAM
        inputs = [*copyts, *inputs, *_input(tree, name, sound, track, lists)]
        maps += ["-map", "1:a"]
    args = [*inputs, *maps, "-c", "copy", "-movflags", "+faststart", "-f", "mp4", os.fspath(part)]
    d = ffmpeg.run(reactor, executable, args, f"{name} (faststart)")
    sources = [piece.path for piece in video]

    def published(result: FFmpegResult) -> str:
        _unlink(*lists)
        if result.ok and part.exists():
            filename = tree.publish(part, VIDEO, name)
            _unlink(*sources, *owned)
            return filename
        _unlink(part)
        if len(video) > 1:
            raise JoinFailed(f"joining the {len(video)} pieces of {name}: {result.describe()}")
        _log.error(
            "faststart copy of {name} failed, publishing its fragmented MP4 as it is: {why}",
            name=name, why=result.describe(),
        )  # fmt: skip
        _unlink(*owned)
        return tree.publish(sources[0], VIDEO, name)

    return d.addCallback(published)


def _kept_pieces(tree: MediaTree, name: str, suffix: str, what: str) -> list[Piece]:
    """The pieces of a stream, each cut back to its last whole fragment; those without one are
    removed."""
    kept = []
    for piece in tree.pieces(name, suffix):
        if _trimmed(piece.path, name, what):
            kept.append(piece)
        else:
            _unlink(piece.path)
    return kept


def _input(
    tree: MediaTree, name: str, suffix: str, pieces: list[Piece], lists: list[Path]
) -> list[str]:
    """ffmpeg's input options for a stream: its one file, or a concat list of its pieces with
    each one's duration up to where the next starts, so a gap the replacement left (what the
    dead encoder held and no one could hand again) stays a gap and the tracks stay in sync."""
    first = pieces[0]
    if len(pieces) == 1 and first.start_ms == 0:
        return ["-i", os.fspath(first.path)]
    script = ["ffconcat version 1.0"]
    for piece, following in zip(pieces, [*pieces[1:], None], strict=True):
        script.append(f"file '{os.fspath(piece.path)}'")
        if following is not None:
            script.append(f"duration {(following.start_ms - piece.start_ms) / 1000:.3f}")
    listing = tree.join_list(name, suffix)
    listing.write_text("\n".join(script) + "\n")
    lists.append(listing)
    offset = ["-itsoffset", f"{first.start_ms / 1000:.3f}"] if first.start_ms else []
    return [*offset, "-f", "concat", "-safe", "0", "-i", os.fspath(listing)]


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
