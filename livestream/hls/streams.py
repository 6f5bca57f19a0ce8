"""The live sessions as HLS streams: made when a player first asks, read while players ask, ended
with the session's media, and kept a little after the recording is published.

A stream reads its files every :data:`POLL` seconds while it has been asked for in the last
:data:`IDLE` seconds, and not at all otherwise: a session nobody watches costs nothing here.
When the session's recorders have written their last, each track is read to its end and its
playlist gets EXT-X-ENDLIST; once the recording is published the playlists point to it, and
the parts and segments already listed are served (from the files held open) for
:data:`LINGER` more seconds to the players finishing them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall

from livestream.hls.track import LiveTrack
from livestream.recording.passthrough import HLS
from livestream.sessions.outcome import Outcome
from livestream.sessions.session import Session
from livestream.wire.kinds import Codec

POLL = 0.05
IDLE = 10.0
LINGER = 30.0
# The encoders cut a fragment once it holds 0.2 s (ffmpeg's -frag_duration 200000).
FRAGMENT_SECONDS = 0.2
# AAC: 1024 samples a packet at 44.1 kHz, the packets of 0.2 s in a fragment.
AAC_PART = math.ceil(FRAGMENT_SECONDS * 44100 / 1024) * 1024 / 44100
# Opus as it came: fragments of 0.2 s and one packet more, packets of 20 ms mostly (60 at most
# of those the page and the CLI send).
OPUS_PART = 0.25
# Passthrough video: fragments of one frame, grouped into parts of at most this long; the
# client chooses its keyframes (the page sends one every 2 s), and is asked for one when a
# segment would outgrow the target without.
ENCODED_PART = 0.2
ENCODED_TARGET = 2


@dataclass(frozen=True)
class HlsSettings:
    """``fps`` and ``gop`` (frames between keyframes) of the daemon's JPEG encoder."""

    fps: int
    gop: int


def _ceil_ms(seconds: float) -> float:
    return math.ceil(seconds * 1000 - 1e-6) / 1000


class LiveStream:
    """One session's tracks (video; sound when it has some), and their state."""

    def __init__(
        self, reactor, session: Session, settings: HlsSettings, gone: Callable[[str], None]
    ) -> None:
        self._reactor = reactor
        self.session = session
        self.name = session.name
        self._gone = gone
        self.encoded = session.media.video is Codec.H264
        target = max(1, math.ceil(settings.gop / settings.fps - 1e-9))
        if self.encoded:
            target = ENCODED_TARGET
            video_part = ENCODED_PART
        else:
            frames = math.ceil(FRAGMENT_SECONDS * settings.fps - 1e-9)
            video_part = _ceil_ms(frames / settings.fps)
        self.target = target
        self.video = LiveTrack(
            reactor, f"{self.name} video", lambda: session.live_files()[0], video_part, target
        )
        audio_part = OPUS_PART if session.media.audio is Codec.OPUS else _ceil_ms(AAC_PART)
        self.audio = LiveTrack(
            reactor, f"{self.name} audio", lambda: session.live_files()[1], audio_part, target
        )
        self.published: Outcome | None = None
        self._linger: IDelayedCall | None = None
        self._asked = reactor.seconds()
        self._poller = LoopingCall(self.poll)
        self._poller.clock = reactor
        session.media_ended().addCallback(self._media_ended)
        session.finished().addCallback(self._published)

    @property
    def tracks(self) -> tuple[LiveTrack, LiveTrack]:
        return self.video, self.audio

    @property
    def ended(self) -> bool:
        return self.video.ended and self.audio.ended

    @property
    def origin(self) -> float | None:
        """Wall-clock time of the session's time 0: when its first chunk came."""
        return self.session.first_chunk_at

    def asked(self) -> None:
        """A player asked for something: read the files while players ask."""
        self._asked = self._reactor.seconds()
        if not self._poller.running and not self.ended:
            self._poller.start(POLL, now=True)

    def poll(self) -> None:
        if self._reactor.seconds() - self._asked > IDLE:
            self._poller.stop()
            return
        for track in self.tracks:
            track.poll()
        self._ask_for_keyframes()

    def _ask_for_keyframes(self) -> None:
        """An encoded session's client chooses its keyframes: ask for one when the segment
        being made is about to reach the target duration without one, so segments start with a
        keyframe as players need."""
        segmenter = self.video.segmenter
        if not self.encoded or segmenter is None or segmenter.current is None:
            return
        if segmenter.current.duration >= (self.target - 0.5) * segmenter.timescale:
            self.session.request_keyframe(HLS)

    def _media_ended(self, _: object) -> None:
        if self._poller.running:
            self._poller.stop()
        for track in self.tracks:
            track.end()

    def _published(self, outcome: Outcome) -> None:
        self.published = outcome
        if not self.ended:
            self._media_ended(None)
        self._linger = self._reactor.callLater(LINGER, self.close)

    def close(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        if self._poller.running:
            self._poller.stop()
        for track in self.tracks:
            track.close()
            track.waiters.wake()
        self._gone(self.name)


class LiveStreams(Service):
    """The streams players asked for, by recording name; all closed when the daemon stops."""

    def __init__(
        self, reactor, sessions: Callable[[], tuple[Session, ...]], settings: HlsSettings
    ) -> None:
        super().__init__()
        self._reactor = reactor
        self._sessions = sessions
        self.settings = settings
        self._streams: dict[str, LiveStream] = {}
        # What was answered, for the metrics: by kind (playlist, init, part, segment).
        self.answered: dict[str, int] = {}
        self.bytes_served = 0
        self.timeouts = 0

    def __len__(self) -> int:
        return len(self._streams)

    def find(self, name: str) -> LiveStream | None:
        """The stream of the live session ``name`` (or of one published in the last
        :data:`LINGER` seconds), or None."""
        stream = self._streams.get(name)
        if stream is None:
            session = next((s for s in self._sessions() if s.name == name), None)
            if session is None:
                return None
            stream = self._streams[name] = LiveStream(
                self._reactor, session, self.settings, self._forget
            )
        stream.asked()
        return stream

    def served(self, kind: str, size: int) -> None:
        self.answered[kind] = self.answered.get(kind, 0) + 1
        self.bytes_served += size

    def _forget(self, name: str) -> None:
        self._streams.pop(name, None)

    def stopService(self) -> None:
        super().stopService()
        for stream in list(self._streams.values()):
            stream.close()

    def waiting(self) -> int:
        """Requests held by every stream now."""
        return sum(len(t.waiters) for s in self._streams.values() for t in s.tracks)
