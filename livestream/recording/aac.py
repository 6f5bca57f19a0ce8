"""The ``--mux-audio`` track: a session's PCM encoded to AAC live by an ffmpeg of its own.

The audio has its own encoder, not a second input of the video's: one ffmpeg reading both would
stop reading the frames whenever the video ran ahead of the sound (a session without audio, or
audio sent in late bursts), and the client would stall with it. Apart, each encoder reads its
pipe at its own pace and the tracks meet only at publish, where the video's stream copy takes
this file as its second input (:func:`livestream.recording.video.publish`).

The output is a fragmented MP4 with short fragments, like the video's: a daemon killed
mid-recording leaves a file whole up to its last fragment, which recovery cuts back to and muxes
(:mod:`livestream.recording.fragments`), and the AAC packets carry the timestamps the stream copy
keeps. (Raw ADTS would survive a crash as well, but needs its own repair and timing.)
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from livestream.library.tree import AAC_STREAM, MediaTree
from livestream.recording import ffmpeg
from livestream.recording.feed import Feed
from livestream.recording.ffmpeg import FFmpegResult
from livestream.wire.kinds import BLOCK_BYTES, CHANNELS, SAMPLE_RATE

_log = Logger()

BITRATE = "96k"
# Silence is written this much at a time as the encoder's stdin drains: a track whose sound
# starts hours into the session never holds those hours of zeros in memory.
SILENCE_BLOCK = bytes(SAMPLE_RATE * BLOCK_BYTES)


def encoder_args(out: str) -> list[str]:
    """PCM s16le 44.1 kHz mono on stdin, timed by its sample count; AAC out in 0.2 s fragments."""
    return [
        "-probesize", "32", "-analyzeduration", "0",
        "-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", str(CHANNELS), "-i", "pipe:0",
        "-c:a", "aac", "-b:a", BITRATE,
        # Every AAC packet is a sync point: fragments are cut by duration alone. The header
        # waits for the first fragment (0.2 s) so it can say the encoder's 1024 samples of
        # priming are not sound; without that the track plays 23 ms late.
        "-movflags", "+empty_moov+delay_moov+default_base_moof",
        "-frag_duration", "200000", "-flush_packets", "1",
        "-f", "mp4", out,
    ]  # fmt: skip


class AacRecorder:
    """Owns one session's audio-track encoder, started by the first samples it is given.

    ``producer`` is paused while the encoder's stdin is backed up, or while silence is owed to
    it. If the encoder dies, the track is dropped (its file removed at :meth:`finish`),
    ``on_failure`` is told, and later samples go nowhere: the video is published without sound,
    the WAV has every sample.
    """

    def __init__(
        self,
        reactor,
        executable: str,
        tree: MediaTree,
        name: str,
        producer: IPushProducer,
        on_failure: Callable[[FFmpegResult], None],
        grace: float = 30.0,
    ) -> None:
        self._reactor = reactor
        self._executable = executable
        self._tree = tree
        self._name = name
        self._producer = producer
        self._on_failure = on_failure
        self._grace = grace
        # The encoder and the feed of its stdin, from the first samples on.
        self._encoder: tuple[ffmpeg.FFmpegProcess, Feed] | None = None
        self._ending = False

    def write(self, pcm: bytes, silence: int = 0) -> None:
        """Whole samples, after ``silence`` samples of silence (where the video began before
        the sound), in timeline order."""
        if self._encoder is None:
            self._encoder = self._start()
        proc, feed = self._encoder
        if proc.exited:
            return
        blocks, rest = divmod(silence * BLOCK_BYTES, len(SILENCE_BLOCK))
        feed.push(SILENCE_BLOCK, blocks)
        feed.push(SILENCE_BLOCK[:rest])
        feed.push(pcm)

    def _start(self) -> tuple[ffmpeg.FFmpegProcess, Feed]:
        out = os.fspath(self._tree.temp_path(self._name, AAC_STREAM))
        proc = ffmpeg.spawn(
            self._reactor, self._executable, encoder_args(out), f"{self._name} (audio track)"
        )
        feed = Feed(proc, self._producer)
        proc.ended.addCallback(self._ended_early)
        return proc, feed

    def _ended_early(self, result: FFmpegResult) -> FFmpegResult:
        if not self._ending:
            _log.error(
                "audio track encoder for {name} stopped mid-stream (its MP4 goes without sound): "
                "{why}",
                name=self._name, why=result.describe(),
            )  # fmt: skip
            self._on_failure(result)
        return result

    @inlineCallbacks
    def finish(self):
        """End the input and wait for the encoder; a track whose encoder failed is removed, so
        the video's publish finds none. Fires with None."""
        if self._encoder is None:
            return None
        proc, feed = self._encoder
        reported = proc.exited
        self._ending = True
        yield feed.drained()
        result = yield ffmpeg.end_input(self._reactor, proc, self._grace)
        if not result.ok:
            if not reported:
                _log.error(
                    "audio track encoder for {name} (its MP4 goes without sound): {why}",
                    name=self._name, why=result.describe(),
                )  # fmt: skip
                self._on_failure(result)
            self._tree.temp_path(self._name, AAC_STREAM).unlink(missing_ok=True)
        return None
