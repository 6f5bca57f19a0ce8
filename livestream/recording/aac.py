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

from collections.abc import Callable

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from livestream.library.tree import AAC_STREAM, MediaTree, Piece
from livestream.recording.encoder import STALL_TIMEOUT, ReplacingEncoder, Stream
from livestream.recording.ffmpeg import FFmpegResult
from livestream.wire.kinds import BLOCK_BYTES, CHANNELS, SAMPLE_RATE

_log = Logger()

BITRATE = "96k"
# PCM samples per AAC packet.
AAC_FRAME = 1024
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
    """Owns one session's audio-track encoder, started by the first samples it is given, and
    replaced if it dies or sticks (:mod:`.encoder`).

    ``producer`` is paused while the encoder's stdin is backed up, or while silence is owed to
    it. ``on_failure`` is told of each early end; once the session's encoders are given up,
    later samples go nowhere: the video is published with the sound the track's pieces hold,
    the WAV has every sample.
    """

    def __init__(
        self,
        reactor,
        executable: str,
        tree: MediaTree,
        name: str,
        producer: IPushProducer,
        on_failure: Callable[[FFmpegResult, bool], None],
        grace: float = 30.0,
        stall_timeout: float = STALL_TIMEOUT,
    ) -> None:
        self._tree = tree
        self._name = name
        self._on_failure = on_failure
        stream = Stream(
            AAC_STREAM, f"{name} (audio track)", SAMPLE_RATE, encoder_args,
            unit_bytes=BLOCK_BYTES, per_sample=AAC_FRAME, priming=1,
        )  # fmt: skip
        self._encoder = ReplacingEncoder(
            reactor, executable, tree, name, stream, producer, on_failure, grace, stall_timeout
        )

    @property
    def piece(self) -> Piece | None:
        """The encoder's piece being written now, from the first samples on."""
        return self._encoder.piece

    def write(self, pcm: bytes, silence: int = 0) -> None:
        """Whole samples, after ``silence`` samples of silence (where the video began before
        the sound), in timeline order."""
        blocks, rest = divmod(silence * BLOCK_BYTES, len(SILENCE_BLOCK))
        self._encoder.push(SILENCE_BLOCK, blocks)
        self._encoder.push(SILENCE_BLOCK[:rest])
        self._encoder.push(pcm)

    async def finish(self) -> None:
        """End the input and wait for the encoder. A track whose last encoder failed at its
        end is removed, so the video's publish finds none (one given up mid-stream keeps
        what its pieces hold)."""
        result = await self._encoder.end()
        if result is not None and not result.ok:
            _log.error(
                "audio track encoder for {name} (its MP4 goes without sound): {why}",
                name=self._name, why=result.describe(),
            )  # fmt: skip
            self._on_failure(result, False)
            self._tree.drop_pieces(self._name, AAC_STREAM)
