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
from livestream.library import tree
from livestream.library.tree import OPUS_STREAM, MediaTree
from livestream.recording import opustrack
from livestream.recording.aac import AacRecorder
from livestream.recording.audio import HEADER_SIZE, AudioRecorder
from livestream.recording.backpressure import SharedPause
from livestream.recording.ffmpeg import FFmpegResult
from livestream.recording.opustrack import OpusRecorder
from livestream.recording.passthrough import GAP, RESUME, NeedKeyframe, PassthroughVideo
from livestream.recording.timing import EncodedClock, timeline
from livestream.recording.video import EncoderSettings, VideoRecorder
from livestream.sessions.errors import SessionError
from livestream.sessions.events import EncoderFailed, Events, SessionEnded, StorageFailed
from livestream.sessions.outcome import DISCONNECT, IDLE, LIMIT, STORAGE, Outcome
from livestream.sessions.storage import error_name, failure_message, is_full
from livestream.wire import h264, jpeg, opus
from livestream.wire.h264 import InvalidH264
from livestream.wire.jpeg import NotAJPEG
from livestream.wire.kinds import AUDIO, BLOCK_BYTES, SAMPLE_RATE, Codec, MediaKind
from livestream.wire.opus import InvalidOpus, OpusHead

_log = Logger()

ErrorSink = Callable[[str, str], None]
# Told why the session needs a keyframe from the client (the reason of KEYFRAME_REQUEST).
KeyframeSink = Callable[[str], None]
# How far an Opus packet's timestamp may be from the end of the one before it before it is taken
# for a discontinuity: far over the jitter of any encoder's timestamps.
MAX_AUDIO_SKEW = 1.0
# The shortest wait between two keyframe requests for the same reason.
KEYFRAME_REQUEST_INTERVAL = 1.0


@dataclass(frozen=True)
class Media:
    """What the client said in CONNECT its chunks are: the seed's JPEG frames and PCM, or H.264
    and Opus it encoded itself (recorded as they came)."""

    video: Codec = Codec.JPEG
    audio: Codec = Codec.PCM
    opus_head: OpusHead | None = None

    def codec(self, kind: MediaKind) -> Codec:
        return self.video if kind is MediaKind.VIDEO else self.audio


@dataclass(frozen=True)
class Piece:
    """A chunk the session accepted, as a live viewer gets it: the chunk as it came, and for an
    encoded one its timestamp (microseconds, client clock) and whether it is a keyframe."""

    kind: MediaKind
    data: bytes
    timestamp: int | None = None
    key: bool = False


# The seed's media, for clients that announce nothing.
SEED_MEDIA = Media()


# Told each accepted chunk as it arrives (live viewers); must return quickly and never block.
Watcher = Callable[[Piece], None]


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


def _no_keyframe(reason: str) -> None:
    """Nor do its keyframe requests (a resumed client is asked again)."""


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
        media: Media = SEED_MEDIA,
    ) -> None:
        self.client_id = client_id
        self.media = media
        # What the client's token allows (None: authentication off), max_seconds/max_bytes too.
        self.grant = grant
        self.name = name
        self.peer = peer
        self.started = reactor.seconds()
        self._reactor = reactor
        self._tree = tree
        self._events = events if events is not None else Events()
        self._report_error = report_error
        self._request_keyframe: KeyframeSink = _no_keyframe
        self._keyframe_asked: tuple[str, float] | None = None
        self._init_recorders(settings, producer)
        self._init_intake(limits)
        self._init_ending()
        self._init_resume()

    def _init_recorders(self, settings: EncoderSettings, producer: IPushProducer | None) -> None:
        """The video's encoder, the WAV, with --mux-audio the audio track's encoder, and the
        timeline that places each chunk on them."""
        self._settings = settings
        # The client's socket, paused while the video's or the audio track's encoder is full.
        self._socket = SharedPause(producer)
        self._video: VideoRecorder | PassthroughVideo
        if self.media.video is Codec.H264:
            self._video = PassthroughVideo(self._tree, self.name, settings.fps)
        else:
            self._video = VideoRecorder(
                self._reactor, settings, self._tree, self.name, self._socket.hold(),
                self._encoder_failed,
            )  # fmt: skip
        self._audio = AudioRecorder(self._tree, self.name)
        self._opus: OpusRecorder | None = None
        # Opus samples (48 kHz) not yet counted on the timeline (44.1 kHz): the remainder.
        self._opus_carry = 0
        # Where the next Opus packet begins by the client's clock (seconds), after the first.
        self._opus_next: float | None = None
        if self.media.audio is Codec.OPUS:
            self._opus = OpusRecorder(self._tree, self.name, self.media.opus_head)
        # --mux-audio: the audio track for the MP4, encoded apart from the video (PCM), or the
        # Opus as it came.
        self._track: AacRecorder | None = None
        if settings.mux_audio and self._opus is None:
            self._track = AacRecorder(
                self._reactor, settings.ffmpeg, self._tree, self.name, self._socket.hold(),
                self._track_failed, settings.grace, settings.stall_timeout,
            )  # fmt: skip
        self._timeline = timeline(settings.timing, settings.fps)
        self._clock = EncodedClock(self._timeline, settings.fps)

    def _init_intake(self, limits: SessionLimits) -> None:
        """What the session has accepted, and how much more it may: counted in bytes and
        sequence numbers, bounded in size and (by a timer) in duration."""
        self.bytes = 0
        # When the first chunk was accepted: the wall-clock time of the timeline's 0.
        self.first_chunk_at: float | None = None
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
        # The recorders have written their last (the publish comes next), and who waits for it.
        self._media_done = False
        self._media_waiting: list[Deferred[None]] = []
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

    @property
    def video_codec(self) -> str | None:
        """The RFC 6381 codec string of an H.264 session's video, once its first keyframe came."""
        if isinstance(self._video, PassthroughVideo) and self._video.params is not None:
            return self._video.params.codec
        return None

    def live_files(self) -> tuple[tree.Piece | None, tree.Piece | None]:
        """The files being written now, for watching live: the video's fragmented MP4, and
        the sound's (the AAC track's, or the client's Opus as it came), each once started."""
        audio = self._track.piece if self._track is not None else None
        if self._opus is not None:
            audio = self._opus.piece
        return self._video.piece, audio

    @property
    def live_sound(self) -> bool:
        """Whether sound came that is written as it comes to a fragmented MP4 (and so can be
        watched live): the AAC track's (--mux-audio), or the client's Opus."""
        if self._opus is not None:
            return self._opus.started
        return self._track is not None and self._audio.bytes > 0

    def media_ended(self) -> Deferred[None]:
        """Fires once the recorders have written their last (before the publish)."""
        d: Deferred[None] = Deferred()
        if self._media_done:
            d.callback(None)
        else:
            self._media_waiting.append(d)
        return d

    def _media_ended(self) -> None:
        if self._media_done:
            return
        self._media_done = True
        waiting, self._media_waiting = self._media_waiting, []
        for d in waiting:
            d.callback(None)

    def request_keyframe(self, reason: str) -> None:
        """Ask the client of an H.264 session for a keyframe, at most once a second for the
        same reason."""
        if self.media.video is not Codec.H264 or self._reason is not None:
            return
        now = self._reactor.seconds()
        if self._keyframe_asked is not None:
            last_reason, at = self._keyframe_asked
            if last_reason == reason and now - at < KEYFRAME_REQUEST_INTERVAL:
                return
        self._keyframe_asked = (reason, now)
        self._request_keyframe(reason)

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
            self.storage_error(e)
            return
        self._accepted(Piece(kind, chunk), seq)

    def stream_encoded(
        self, kind: MediaKind, chunk: bytes, timestamp: int, key: bool, seq: int | None = None
    ) -> None:
        """Record one chunk the client encoded (an H.264 access unit, an Opus packet) as it
        came; refusals come back as :class:`SessionError`, as for :meth:`stream`.

        ``timestamp`` (microseconds, client clock) places it with ``--timing capture``. A
        ``seq`` that skips one breaks the video's chain of references: frames wait for the
        next keyframe, and the client is asked for one."""
        if self._reason is not None:
            raise SessionError("session_closed", "this recording is closing; STREAM is ignored")
        last = self._last_seq[kind]
        if seq is None:
            seq = last + 1
        elif seq <= last:
            return
        if self.bytes + len(chunk) > self._max_bytes:
            self._limit("size")
            return
        arrival = self._reactor.seconds()
        try:
            if kind is MediaKind.VIDEO:
                piece = self._write_access_unit(chunk, timestamp, key, arrival, 0 <= last < seq - 1)
            else:
                if not self._write_opus(chunk, timestamp / 1e6, arrival):
                    return
                piece = Piece(kind, chunk, timestamp)
        except OSError as e:
            _log.error("writing {name} failed: {error}", name=self.name, error=e)
            self.storage_error(e)
            return
        self._accepted(piece, seq)

    def _accepted(self, piece: Piece, seq: int) -> None:
        if self.first_chunk_at is None:
            self.first_chunk_at = self._reactor.seconds()
        self.bytes += len(piece.data)
        self._last_seq[piece.kind] = seq
        for watch in tuple(self.watchers):
            try:
                watch(piece)
            except Exception:
                _log.failure("a watcher of {name} failed", name=self.name)

    def _write_access_unit(
        self, chunk: bytes, timestamp: int, key: bool, arrival: float, gap: bool
    ) -> Piece:
        video = self._video
        if not isinstance(video, PassthroughVideo):
            raise SessionError("codec_mismatch", "this session's video is JPEG")
        try:
            au = h264.check_access_unit(chunk)
            if gap:
                video.broken()
            video.admit(au)
        except InvalidH264 as e:
            video.broken()
            self.request_keyframe(GAP)
            raise SessionError("invalid_h264", f"{e}; the frame is dropped") from None
        except NeedKeyframe as e:
            self.request_keyframe(e.reason)
            raise SessionError(
                "keyframe_required",
                f"a delta frame while the recording waits for a keyframe ({e.reason}); dropped",
            ) from None
        if key != au.key:
            what = "keyframe" if au.key else "delta frame"
            self._report_error(
                "invalid_key", f"key is {str(key).lower()} on a {what}; recorded as a {what}"
            )
        t, problem = self._clock.place(timestamp / 1e6, arrival)
        if problem is not None:
            self._report_error(
                "timestamp_discontinuity",
                f"the timestamp {problem}; the frame is placed one frame interval after the "
                "one before",
            )
        video.write(au, t)
        return Piece(MediaKind.VIDEO, chunk, timestamp, au.key)

    def _write_opus(self, packet: bytes, source: float, arrival: float) -> bool:
        """Record one Opus packet; False if it would take the session past its size limit,
        counted with the sound at the size of the WAV it decodes to (two bytes of Opus can
        play 120 ms: 10 KB of WAV)."""
        recorder = self._opus
        if recorder is None:
            raise SessionError("codec_mismatch", "this session's audio is PCM")
        try:
            samples = opus.packet_samples(packet)
        except InvalidOpus as e:
            raise SessionError("invalid_opus", f"{e}; the packet is dropped") from None
        decoded = (recorder.samples + samples) * SAMPLE_RATE // opus.RATE * BLOCK_BYTES
        if self.bytes + len(packet) + decoded > self._max_bytes:
            self._limit("size")
            return False
        expected = self._opus_next
        if expected is not None and abs(source - expected) > MAX_AUDIO_SKEW:
            # Sound is contiguous: a packet's time follows from the one before. A timestamp far
            # off that (an hour's jump) would bend the video's clock toward nonsense.
            self._report_error(
                "timestamp_discontinuity",
                f"an Opus timestamp {source - expected:+.3f} s off the packets before it; "
                "the packet is placed right after them",
            )
            source = expected
        self._opus_next = source + samples / opus.RATE
        # The timeline counts 44.1 kHz samples; Opus durations are 48 kHz ones.
        whole, self._opus_carry = divmod(self._opus_carry + samples * SAMPLE_RATE, opus.RATE)
        lead = self._timeline.audio(source, arrival, whole)
        recorder.write(packet, samples, lead * opus.RATE // SAMPLE_RATE)
        return True

    @property
    def acknowledged(self) -> dict[str, int | None]:
        """The last sequence number per source handed to the encoder or written to the WAV."""
        return {kind: _seq_or_none(seq) for kind, seq in self._last_seq.items()}

    def allow_resume(self, token: str, grace: float) -> None:
        """A lost connection leaves this session waiting ``grace`` seconds for ``token``."""
        self.resume_token = token
        self._resume_grace = grace

    def attach(
        self,
        owner: object,
        producer: IPushProducer | None,
        report_error: ErrorSink,
        request_keyframe: KeyframeSink = _no_keyframe,
    ) -> object | None:
        """A connection takes the session over (it opened or resumed it); returns the one it
        displaces, whose loss then no longer concerns this session."""
        if self._detached is not None:
            self._detached.cancel()
            self._detached = None
        previous, self._owner = self._owner, owner
        self._report_error = report_error
        self._request_keyframe = request_keyframe
        self._socket.set_producer(producer)
        return previous

    def resumed(self) -> None:
        """A connection resumed the session: the client re-sends what was not acknowledged,
        and its next new frames should start from a keyframe."""
        self._keyframe_asked = None
        self.request_keyframe(RESUME)

    def _write_video(self, frame: bytes, source: float, arrival: float) -> None:
        video = self._video
        if not isinstance(video, VideoRecorder):
            raise SessionError("codec_mismatch", "this session's video is H.264")
        size = jpeg.frame_size(frame)  # refused before it moves the timeline
        placed = self._timeline.video(source, arrival)
        video.write(frame, size, placed.repeat, placed.show)

    def _write_audio(self, pcm: bytes, source: float, arrival: float) -> None:
        if self._opus is not None:
            raise SessionError("codec_mismatch", "this session's audio is Opus")
        written = self._audio.write(pcm)
        if not written:
            return
        lead = self._timeline.audio(source, arrival, len(written) // BLOCK_BYTES)
        if self._track is not None:
            # Silence first where the video began before the sound: both tracks start at 0.
            self._track.write(written, silence=lead)

    def storage_error(self, error: OSError) -> None:
        """Writing to the media tree failed: a full disk (ENOSPC, EDQUOT) is :meth:`storage_full`;
        any other error (EIO, EROFS, the tree gone) ends the session with ``storage_failed``,
        naming the kind of error and not the path, and keeps what reached the disk."""
        if is_full(error):
            self.storage_full()
        elif self._reason is None:
            self._events.emit(StorageFailed(self.name, error_name(error)))
            self._report_error("storage_failed", failure_message(error))
            self.finish(STORAGE)

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
            self._request_keyframe = _no_keyframe
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

    def _encoder_failed(self, result: FFmpegResult, replaced: bool) -> None:
        self._an_encoder_failed(
            result, replaced, "the video encoder",
            "frames received before it are kept, later ones are not recorded",
        )  # fmt: skip

    def _track_failed(self, result: FFmpegResult, replaced: bool) -> None:
        self._an_encoder_failed(
            result, replaced, "the audio track's encoder",
            "the rest of the video goes without sound, the WAV has all",
        )  # fmt: skip

    def _an_encoder_failed(
        self, result: FFmpegResult, replaced: bool, which: str, given_up: str
    ) -> None:
        """Told by a recorder of each early end of its encoder: the client may go on after
        ``encoder_replaced``; after ``encoder_failed`` that stream is no longer recorded."""
        self._events.emit(EncoderFailed(self.name, result, replaced))
        if replaced:
            self._report_error(
                "encoder_replaced",
                f"{which} stopped and a new one took over; the recording goes on",
            )
            return
        self._encoder_broke = True
        self._report_error("encoder_failed", f"{which} stopped (again); {given_up}")

    async def _finish_video(self) -> str | None:
        """End the video's encoder (or file) and the AAC track's, and publish the MP4."""
        video = self._video
        copy_opus = self._settings.mux_audio and self._opus is not None and self._opus.started
        if isinstance(video, PassthroughVideo):
            video.end(self._clock.end())
            if self._track is not None:
                await self._track.finish()
            self._media_ended()
            return await video.publish(self._reactor, self._settings.ffmpeg, opus=copy_opus)
        video.repeat(self._timeline.end())
        # The encoders end side by side; the publish takes both files.
        ends = [ensureDeferred(video.end())]
        if self._track is not None:
            ends.append(ensureDeferred(self._track.finish()))
        await gatherResults(ends, consumeErrors=True)
        self._media_ended()
        return await video.publish(opus=copy_opus)

    def _audio_bytes(self, wav: str | None) -> int:
        """The WAV's bytes of samples: as written, or as decoded from the Opus."""
        if self._opus is None:
            return self._audio.bytes
        if wav is None:
            return 0
        return max(0, self._tree.final_path(AUDIO, self.name).stat().st_size - HEADER_SIZE)

    async def _finalize(self) -> None:
        if self._time_up.active():
            self._time_up.cancel()
        failed = False
        audio = video = None
        try:
            audio = self._audio.finish()
            if self._opus is not None:
                self._opus.end()
        except OSError as e:
            failed = True
            _log.error("finishing audio of {name} failed: {error}", name=self.name, error=e)
        # Opus is decoded into the WAV while the video is published (which may copy it too).
        wav = None
        if self._opus is not None and self._opus.started and not failed:
            wav = opustrack.decode_wav(self._reactor, self._settings.ffmpeg, self._tree, self.name)
        try:
            video = await self._finish_video()
        except Exception:
            failed = True
            _log.failure("finishing video of {name} failed", name=self.name)
        self._media_ended()
        if wav is not None:
            try:
                audio = await wav
                self._tree.temp_path(self.name, OPUS_STREAM).unlink()
            except Exception:
                failed = True
                _log.failure("finishing audio of {name} failed", name=self.name)
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
            self._audio_bytes(audio),
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
