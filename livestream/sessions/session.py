"""One client's recording: owns its video and audio recorders and finalizes them exactly once.

However a session ends (CLOSE, the socket vanishing, the daemon stopping), the first ending wins
and every later one waits for the same outcome; there is no second finalization to race.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger

from livestream.auth.tokens import Grant
from livestream.library.tree import MediaTree
from livestream.recording.aac import AacRecorder
from livestream.recording.audio import AudioRecorder
from livestream.recording.backpressure import SharedPause
from livestream.recording.ffmpeg import FFmpegResult
from livestream.recording.timing import timeline
from livestream.recording.video import EncoderSettings, VideoRecorder
from livestream.sessions.errors import SessionError
from livestream.sessions.events import EncoderFailed, Events, SessionEnded
from livestream.sessions.outcome import DISCONNECT, IDLE, LIMIT, STORAGE, Outcome
from livestream.wire import jpeg
from livestream.wire.jpeg import NotAJPEG
from livestream.wire.kinds import BLOCK_BYTES, MediaKind

_log = Logger()

ErrorSink = Callable[[str, str], None]
# Told each accepted chunk as it arrives (live viewers); must return quickly and never block.
Watcher = Callable[[MediaKind, bytes], None]


@dataclass(frozen=True)
class SessionLimits:
    max_seconds: float
    max_bytes: int

    def within(self, grant: Grant | None) -> SessionLimits:
        """The daemon's limits, tightened by what the client's token allows."""
        if grant is None:
            return self
        return SessionLimits(
            min(self.max_seconds, grant.max_seconds or self.max_seconds),
            min(self.max_bytes, grant.max_bytes or self.max_bytes),
        )


def _seq_or_none(seq: int) -> int | None:
    return seq if seq >= 0 else None


def _nowhere(code: str, message: str) -> None:
    """Errors of a session whose client is away have no one to go to."""


class Session:
    def __init__(
        self,
        reactor,
        settings: EncoderSettings,
        tree: MediaTree,
        client_id: str,
        name: str,
        peer: str,
        producer: IPushProducer | None,
        report_error: ErrorSink,
        limits: SessionLimits,
        *,
        grant: Grant | None = None,
        events: Events | None = None,
    ) -> None:
        self.client_id = client_id
        # What the client's token allows (None: authentication off), max_seconds/max_bytes too.
        self.grant = grant
        self.name = name
        self.peer = peer
        self.started = reactor.seconds()
        self._reactor = reactor
        self._tree = tree
        self._events = events if events is not None else Events()
        self._report_error = report_error
        self._init_recorders(settings, producer)
        self._init_intake(limits)
        self._init_ending()
        self._init_resume()

    def _init_recorders(self, settings: EncoderSettings, producer: IPushProducer | None) -> None:
        """The video's encoder, the WAV, with --mux-audio the audio track's encoder, and the
        timeline that places each chunk on them."""
        # The client's socket, paused while the video's or the audio track's encoder is full.
        self._socket = SharedPause(producer)
        self._video = VideoRecorder(
            self._reactor, settings, self._tree, self.name, self._socket.hold(),
            self._encoder_failed,
        )  # fmt: skip
        self._audio = AudioRecorder(self._tree, self.name)
        # --mux-audio: the audio track for the MP4, encoded apart from the video.
        self._track: AacRecorder | None = None
        if settings.mux_audio:
            self._track = AacRecorder(
                self._reactor, settings.ffmpeg, self._tree, self.name, self._socket.hold(),
                self._track_failed, grace=settings.grace,
            )  # fmt: skip
        self._timeline = timeline(settings.timing, settings.fps)

    def _init_intake(self, limits: SessionLimits) -> None:
        """What the session has accepted, and how much more it may: counted in bytes and
        sequence numbers, bounded in size and (by a timer) in duration."""
        self.bytes = 0
        self._max_bytes = limits.max_bytes
        self._time_up = self._reactor.callLater(limits.max_seconds, self._limit, "duration")
        # The last sequence number accepted per source (-1: none yet).
        self._last_seq = dict.fromkeys(MediaKind, -1)
        self.watchers: list[Watcher] = []

    def _init_ending(self) -> None:
        """The one ending: its reason once decided, when finishing began, whether an encoder
        broke, the outcome and who waits for it, and the client's connection closing."""
        self._reason: str | None = None
        self._finishing_since: float | None = None
        self._encoder_broke = False
        self._outcome: Outcome | None = None
        self._waiting: list[Deferred[Outcome]] = []
        self._gone: Deferred[None] = Deferred()

    def _init_resume(self) -> None:
        """Resume (see attach/connection_lost): the token, the grace after a lost connection,
        the connection that owns the session now, and the timer of a detached session."""
        self.resume_token: str | None = None
        self._resume_grace = 0.0
        self._owner: object | None = None
        self._detached: IDelayedCall | None = None

    @property
    def frames(self) -> int:
        return self._video.frames

    @property
    def ending(self) -> bool:
        return self._reason is not None

    def stream(
        self,
        kind: MediaKind,
        chunk: bytes,
        capture_time: float | None = None,
        seq: int | None = None,
    ) -> None:
        """Hand one chunk to its recorder; refusals come back as :class:`SessionError`.

        ``capture_time`` (the client's, in milliseconds) places the chunk with ``--timing
        capture``; without it the arrival time stands in. A ``seq`` at or below the last one
        accepted for its source is a duplicate (a resumed client re-sending) and is discarded;
        without one, the chunk is numbered one past the last."""
        if self._reason is not None:
            raise SessionError("session_closed", "this recording is closing; STREAM is ignored")
        if seq is None:
            seq = self._last_seq[kind] + 1
        elif seq <= self._last_seq[kind]:
            return
        if self.bytes + len(chunk) > self._max_bytes:
            self._limit("size")
            return
        arrival = self._reactor.seconds()
        source = arrival if capture_time is None else capture_time / 1000.0
        try:
            if kind is MediaKind.VIDEO:
                self._write_video(chunk, source, arrival)
            else:
                self._write_audio(chunk, source, arrival)
        except NotAJPEG as e:
            raise SessionError("invalid_jpeg", str(e)) from None
        except OSError as e:
            _log.error("writing {name} failed: {error}", name=self.name, error=e)
            self.storage_full()
            return
        self.bytes += len(chunk)
        self._last_seq[kind] = seq
        for watch in tuple(self.watchers):
            try:
                watch(kind, chunk)
            except Exception:
                _log.failure("a watcher of {name} failed", name=self.name)

    @property
    def acknowledged(self) -> dict[str, int | None]:
        """The last sequence number per source handed to the encoder or written to the WAV."""
        return {kind: _seq_or_none(seq) for kind, seq in self._last_seq.items()}

    def allow_resume(self, token: str, grace: float) -> None:
        """A lost connection leaves this session waiting ``grace`` seconds for ``token``."""
        self.resume_token = token
        self._resume_grace = grace

    def attach(
        self, owner: object, producer: IPushProducer | None, report_error: ErrorSink
    ) -> object | None:
        """A connection takes the session over (it resumed it); returns the one it displaces,
        whose loss then no longer concerns this session."""
        if self._detached is not None:
            self._detached.cancel()
            self._detached = None
        previous, self._owner = self._owner, owner
        self._report_error = report_error
        self._socket.set_producer(producer)
        return previous

    def _write_video(self, frame: bytes, source: float, arrival: float) -> None:
        size = jpeg.frame_size(frame)  # refused before it moves the timeline
        placed = self._timeline.video(source, arrival)
        self._video.write(frame, size, placed.repeat, placed.show)

    def _write_audio(self, pcm: bytes, source: float, arrival: float) -> None:
        written = self._audio.write(pcm)
        if not written:
            return
        lead = self._timeline.audio(source, arrival, len(written) // BLOCK_BYTES)
        if self._track is not None:
            # Silence first where the video began before the sound: both tracks start at 0.
            self._track.write(written, silence=lead)

    def storage_full(self) -> None:
        """The disk is (nearly) full: keep what was written, tell the client, stop."""
        if self._reason is None:
            self._report_error(
                "storage_full", "the server is out of storage; what was received is kept"
            )
            self.finish(STORAGE)

    def idle(self) -> None:
        if self._reason is None:
            self._report_error("idle_timeout", "no message for too long; the recording is kept")
            self.finish(IDLE)

    def _limit(self, which: str) -> None:
        if self._reason is None:
            _log.info("session {name} reached its {which} limit", name=self.name, which=which)
            self._report_error(
                "limit_reached", f"this session reached its {which} limit; the recording is kept"
            )
            self.finish(LIMIT)

    def finish(self, reason: str) -> Deferred[Outcome]:
        """Finalize (the first call decides the reason) and fire with the outcome."""
        d = self.finished()
        if self._reason is None:
            self._reason = reason
            self._finishing_since = self._reactor.seconds()
            ensureDeferred(self._finalize())
        if self._detached is not None:
            # No connection to wait for: a detached session ends here (shutdown, a limit).
            self._detached.cancel()
            self._detached = None
            self._release_client()
        return d

    def finished(self) -> Deferred[Outcome]:
        """Fires with the outcome once the session is finalized, without causing it."""
        d: Deferred[Outcome] = Deferred()
        if self._outcome is not None:
            d.callback(self._outcome)
        else:
            self._waiting.append(d)
        return d

    def connection_lost(self, owner: object | None = None) -> None:
        """The client's socket is gone: finalize if nothing else has, and let shutdown go on.

        A resumable session instead waits its grace period for the client to come back; a
        connection that was displaced by a resumed one is no longer its concern."""
        if owner is not None and owner is not self._owner:
            return
        self._owner = None
        if self.resume_token is not None and self._reason is None:
            _log.info("session {name} lost its connection; kept {grace}s for a resume",
                      name=self.name, grace=self._resume_grace)  # fmt: skip
            self._socket.set_producer(None)
            self._report_error = _nowhere
            self._detached = self._reactor.callLater(self._resume_grace, self._grace_over)
            return
        self.finish(DISCONNECT)
        self._release_client()

    def _grace_over(self) -> None:
        self._detached = None
        _log.info("session {name} was not resumed in time", name=self.name)
        self.finish(DISCONNECT)
        self._release_client()

    def _release_client(self) -> None:
        if not self._gone.called:
            self._gone.callback(None)

    def gone(self) -> Deferred[None]:
        """Fires once the client's connection has closed."""
        d: Deferred[None] = Deferred()
        if not self._gone.called:
            self._gone.addBoth(lambda _: d.callback(None))
        else:
            d.callback(None)
        return d

    def _encoder_failed(self, result: FFmpegResult) -> None:
        self._encoder_broke = True
        self._events.emit(EncoderFailed(self.name, result))
        self._report_error(
            "encoder_failed", "the video encoder stopped; frames received before it are kept"
        )

    def _track_failed(self, result: FFmpegResult) -> None:
        self._encoder_broke = True
        self._events.emit(EncoderFailed(self.name, result))
        self._report_error(
            "encoder_failed",
            "the audio track's encoder stopped; the video goes on without sound, the WAV has all",
        )

    async def _finalize(self) -> None:
        if self._time_up.active():
            self._time_up.cancel()
        failed = False
        audio = video = None
        try:
            audio = self._audio.finish()
        except OSError as e:
            failed = True
            _log.error("finishing audio of {name} failed: {error}", name=self.name, error=e)
        self._video.repeat(self._timeline.end())
        try:
            # The encoders end side by side; the publish takes both files.
            track = self._track.finish() if self._track is not None else None
            await gatherResults([self._video.end(), *([track] if track else [])],
                                consumeErrors=True)  # fmt: skip
            video = await self._video.publish()
        except Exception:
            failed = True
            _log.failure("finishing video of {name} failed", name=self.name)
        if failed:
            self._report_error(
                "finalize_failed",
                "the recording could not be finished now; it is recovered at the next start",
            )
        outcome = Outcome(
            self._reason or DISCONNECT,
            video,
            audio,
            self._video.frames,
            self._audio.bytes,
            failed,
            self.bytes,
            self._encoder_broke,
        )
        self._tree.release(self.name)
        _log.info(
            "session {id!r} from {peer} ended ({reason}, {result}) after {seconds:.1f}s: "
            "{frames} frames, {samples} samples, {bytes} bytes -> video={video} audio={audio}",
            session_event="ended", id=self.client_id, peer=self.peer, name=self.name,
            reason=outcome.reason, result=outcome.result,
            seconds=self._reactor.seconds() - self.started, frames=outcome.frames,
            samples=outcome.samples, audio_bytes=outcome.audio_bytes,
            bytes=outcome.bytes, video=video, audio=audio,
        )  # fmt: skip
        self._outcome = outcome
        now = self._reactor.seconds()
        self._events.emit(SessionEnded(
            self.name, self.client_id, self.peer, outcome, now - self.started,
            now - (self._finishing_since or now),
        ))  # fmt: skip
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(outcome)
