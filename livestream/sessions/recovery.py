"""At start, turn what a killed daemon left in ``temp/`` into playable, listed recordings."""

from __future__ import annotations

import time
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from livestream.library.tree import (
    AAC_STREAM,
    AUDIO_STREAM,
    OPUS_STREAM,
    PIECED,
    POSTER_PART,
    VIDEO_PART,
    VIDEO_STREAM,
    Leftover,
    MediaTree,
)
from livestream.recording import audio, opustrack, video
from livestream.sessions.events import Events, Recovered
from livestream.wire.kinds import AUDIO, VIDEO

_log = Logger()

# A leftover file modified within SETTLE_QUIET seconds may still have a writer; wait for quiet,
# in steps of SETTLE_STEP, for at most SETTLE_LIMIT seconds.
SETTLE_QUIET = 2.0
SETTLE_STEP = 0.25
SETTLE_LIMIT = 60.0


class Recovery(Service):
    """Scans ``temp/`` when started (before anything listens), then recovers in the background."""

    def __init__(
        self,
        reactor,
        tree: MediaTree,
        ffmpeg: str,
        events: Events | None = None,
        *,
        mux_audio: bool = False,
    ) -> None:
        """``mux_audio``: the daemon's --mux-audio now, which decides whether a session's Opus
        goes into its MP4 (the Opus file does not say what the dead daemon's setting was)."""
        self._reactor = reactor
        self._mux_audio = mux_audio
        self._events = events if events is not None else Events()
        self._tree = tree
        self._ffmpeg = ffmpeg
        self.done: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        leftovers, strangers = self._tree.leftovers()
        for path in strangers:
            _log.warn("left alone in temp/: {path} (not a recording's file)", path=path)
        if leftovers:
            _log.info("recovering {count} interrupted recordings", count=len(leftovers))
        self.done = ensureDeferred(self._recover_all(leftovers))

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        return self.done

    async def _recover_all(self, leftovers: list[Leftover]) -> None:
        for leftover in leftovers:
            try:
                await self._recover(leftover)
            except Exception:
                _log.failure("could not recover {name}; left in temp/", name=leftover.name)

    async def _recover(self, leftover: Leftover) -> None:
        name, paths = leftover.name, leftover.paths
        found: dict[str, str | None] = {}
        if POSTER_PART in paths:
            paths[POSTER_PART].unlink()
        opus = OPUS_STREAM in paths
        for suffix in PIECED:
            # A join the crash cut short is made again from the pieces.
            self._tree.join_list(name, suffix).unlink(missing_ok=True)
        if VIDEO_STREAM in paths:
            if self._tree.final_path(VIDEO, name).exists():
                self._tree.temp_path(name, VIDEO_PART).unlink(missing_ok=True)
                self._tree.drop_pieces(name, VIDEO_STREAM, AAC_STREAM)
            else:
                # The --mux-audio track, if any, is muxed in by the same publish; a stream in
                # pieces (its encoder was replaced) is joined by it.
                for suffix in PIECED:
                    for piece in self._tree.pieces(name, suffix):
                        await self._settled(piece.path)
                found[VIDEO] = await video.publish(
                    self._reactor, self._ffmpeg, self._tree, name, opus=opus and self._mux_audio
                )
        else:
            if VIDEO_PART in paths:
                _log.warn(
                    "dropping {path}: an unfinished copy without its source",
                    path=paths[VIDEO_PART],
                )
                paths[VIDEO_PART].unlink()
            # An audio track without a video makes no MP4: the WAV holds the sound.
            self._tree.drop_pieces(name, AAC_STREAM)
        if opus:
            # The WAV is made from the Opus (a WAV beside it is a decode the crash cut short).
            if not self._tree.final_path(AUDIO, name).exists():
                found[AUDIO] = await opustrack.decode_wav(
                    self._reactor, self._ffmpeg, self._tree, name
                )
            self._tree.temp_path(name, AUDIO_STREAM).unlink(missing_ok=True)
            paths[OPUS_STREAM].unlink()
        elif AUDIO_STREAM in paths:
            if self._tree.final_path(AUDIO, name).exists():
                paths[AUDIO_STREAM].unlink()
            else:
                found[AUDIO] = audio.mend(self._tree, name)
        _log.info(
            "recovered {name}: video={video} audio={audio}",
            name=name, video=found.get(VIDEO), audio=found.get(AUDIO),
        )  # fmt: skip
        if any(found.values()):
            self._events.emit(Recovered(name, found))

    async def _settled(self, path: Path) -> None:
        """Wait while an encoder orphaned by the crash may still be finishing this file.

        Killed alone, the daemon leaves its ffmpeg children running; they see their input end and
        complete the file within moments. Copying it before then would lose their last frames.
        """
        waited = 0.0
        while waited < SETTLE_LIMIT and time.time() - path.stat().st_mtime < SETTLE_QUIET:
            await deferLater(self._reactor, SETTLE_STEP)
            waited += SETTLE_STEP
