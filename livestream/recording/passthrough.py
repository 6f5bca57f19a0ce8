"""A session's video that arrives as H.264: recorded as it came, no encoder.

Each access unit is appended to ``temp/<name>.video.fmp4`` (the same file an encoder writes for
a JPEG session, so recovery and the faststart publish are the same) as a fragment of its own,
once the next frame says how long it lasts: a daemon killed mid-session loses at most the frame
held for that. The recording starts on a keyframe, and after anything that breaks the chain of
references (a refused frame, a skipped ``seq``) frames wait for the next keyframe; the session
asks the client for one. The poster is the keyframe nearest one second in, decoded by a short
ffmpeg after the session: the one decode of the client's bitstream, in a child process.
"""

from __future__ import annotations

import io
import os

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from livestream.library.tree import POSTER_PART, VIDEO_STREAM, MediaTree, Piece
from livestream.recording import ffmpeg, mp4, video
from livestream.recording.audio import write_all
from livestream.recording.ffmpeg import FFmpegResult
from livestream.recording.timing import MAX_LAST_FRAME
from livestream.wire.h264 import AccessUnit, InvalidH264, SequenceParameters

_log = Logger()

# Why a keyframe is needed before the next frame can be kept (the reasons of KEYFRAME_REQUEST).
START = "start"
RESUME = "resume"
GAP = "gap"
VIEWER = "viewer"
# A live HLS segment is about to reach its target duration without one.
HLS = "hls"
# The poster is the last keyframe at or before this far into the recording (or the first).
POSTER_AT = 1.0


class NeedKeyframe(Exception):
    """A delta frame came while the recording waits for a keyframe; it is dropped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PassthroughVideo:
    """Owns one session's ``.video.fmp4`` when the client sends H.264."""

    def __init__(self, tree: MediaTree, name: str, fps: int) -> None:
        self._tree = tree
        self._name = name
        self._fps = fps
        self._file: io.FileIO | None = None
        self.params: SequenceParameters | None = None
        # The frame written once the next one gives its duration: (access unit, decode time).
        self._held: tuple[AccessUnit, int] | None = None
        self._first_time = 0
        self._fragments = 0
        self.need: str | None = START
        self.frames = 0
        self._poster: bytes | None = None
        self._sets: tuple[bytes, ...] = ()
        self._torn = False

    @property
    def piece(self) -> Piece | None:
        """The file being written, once the first keyframe came (one piece, from 0)."""
        if self._file is None:
            return None
        return Piece(0, self._tree.temp_path(self._name, VIDEO_STREAM))

    def broken(self) -> None:
        """A frame was refused or skipped: the ones after it wait for a keyframe."""
        if self.need is None:
            self.need = GAP

    def admit(self, au: AccessUnit) -> None:
        """Check that ``au`` can be recorded next, before it is given a time. Raises
        :class:`NeedKeyframe` for a delta frame while a keyframe is needed, and ``InvalidH264``
        for a first keyframe without parameter sets or a frame of another size than the first.
        """
        if self.need is not None and not au.key:
            raise NeedKeyframe(self.need)
        if self.params is None and not (au.sps and au.pps):
            raise InvalidH264("the first keyframe must carry its SPS and PPS in-band")
        first = self.params
        for size in au.params:
            first = first or size
            if (size.width, size.height) != (first.width, first.height):
                self.broken()
                raise InvalidH264(
                    f"a frame of {size.width}x{size.height} in a {first.width}x{first.height} "
                    "recording; frames are dropped until a keyframe of the recording's size"
                )

    def write(self, au: AccessUnit, t: float) -> None:
        """Record an admitted access unit at ``t`` seconds on the session's timeline (after
        the one before)."""
        if self.params is None:
            self._open(au.params[0], au)
        self.need = None
        ticks = round(t * mp4.VIDEO_TIMESCALE)
        if self._held is None:
            # The first frame covers the time before it too (there is nothing older to show).
            self._first_time = ticks
            ticks = 0
        else:
            ticks = max(ticks - self._first_time, self._held[1] + 1)
            self._emit(ticks - self._held[1])
        self._held = (au, ticks)
        self.frames += 1
        if au.key and (self._poster is None or ticks <= POSTER_AT * mp4.VIDEO_TIMESCALE):
            # A later keyframe may lean on the first one's parameter sets: the decoder gets them.
            sets = () if au.sps else self._sets
            self._poster = b"".join(b"\x00\x00\x00\x01" + nal for nal in (*sets, *au.nals))

    def _open(self, params: SequenceParameters, au: AccessUnit) -> None:
        track = mp4.VideoTrack(params, au.sps, au.pps)
        path = self._tree.temp_path(self._name, VIDEO_STREAM)
        self._file = open(path, "xb", buffering=0)
        self.params = params
        self._sets = (*au.sps, *au.pps)
        write_all(self._file, mp4.init_segment(track))
        _log.info(
            "recording {name}: H.264 {codec} {width}x{height} as sent",
            name=self._name, codec=params.codec, width=params.width, height=params.height,
        )  # fmt: skip

    def _emit(self, duration: int) -> None:
        if self._held is None or self._file is None:
            return
        au, ticks = self._held
        self._fragments += 1
        sample = mp4.Sample(mp4.avcc(au.nals), duration, au.key)
        if self._torn:
            return
        try:
            write_all(self._file, mp4.fragment(self._fragments, ticks, [sample]))
        except OSError:
            # Nothing goes after a torn fragment: the publish cuts the file back to before it.
            self._torn = True
            raise

    def end(self, until: float) -> None:
        """Write the held frame, shown one mean frame interval and until ``until`` (the end of
        the audio, in seconds on the timeline), and close the file."""
        if self._held is None or self._file is None:
            return
        _, last = self._held
        interval = mp4.VIDEO_TIMESCALE // self._fps
        if self.frames > 1:
            interval = min(last // (self.frames - 1), int(MAX_LAST_FRAME * mp4.VIDEO_TIMESCALE))
        end = max(last + max(1, interval), round(until * mp4.VIDEO_TIMESCALE) - self._first_time)
        # A sample lasts at most 2^32 - 1 ticks (13.25 hours): sound sent faster than real time
        # may last longer.
        end = min(end, last + mp4.MAX_DURATION)
        try:
            self._emit(end - last)
        except OSError as e:
            # A full disk, say: what is whole is published; the publish cuts a torn fragment.
            _log.warn("{name}: the last frame could not be written: {error}", name=self._name,
                      error=e)  # fmt: skip
        finally:
            self._held = None
            self._file.close()

    def publish(self, reactor, executable: str, *, opus: bool = False) -> Deferred[str | None]:
        """After :meth:`end`: the faststart copy (with the Opus track if ``opus``) and the
        poster, side by side; fires with the video's file name, or None without a frame."""
        if self._file is None:
            return video.publish(reactor, executable, self._tree, self._name, opus=opus)
        poster = self._poster
        self._poster = None
        published = video.publish(reactor, executable, self._tree, self._name, opus=opus)
        if poster is None:
            return published
        decoded = decode_poster(reactor, executable, self._tree, self._name, poster)

        def with_poster(name: str | None) -> Deferred[str | None]:
            return decoded.addCallback(lambda _: name)

        return published.addCallback(with_poster)


def decode_poster(
    reactor, executable: str, tree: MediaTree, name: str, keyframe: bytes
) -> Deferred[None]:
    """Decode one keyframe (Annex B, with its parameter sets) into the recording's poster; a
    failure costs the poster only. Fires once it is saved, or not."""
    part = tree.temp_path(name, POSTER_PART)
    args = [
        "-f", "h264", "-i", "pipe:0", "-frames:v", "1", "-c:v", "mjpeg", "-q:v", "3",
        "-f", "image2", os.fspath(part),
    ]  # fmt: skip
    proc = ffmpeg.spawn(reactor, executable, args, f"{name} (poster)")
    pipes = ffmpeg.pipes(proc)
    pipes.write(keyframe)
    pipes.closeStdin()

    def save(result: FFmpegResult) -> None:
        try:
            if result.ok and part.exists():
                tree.save_poster(name, part.read_bytes())
            else:
                _log.warn("no poster for {name}: {why}", name=name, why=result.describe())
        except OSError as e:
            _log.warn("no poster for {name}: {error}", name=name, error=e)
        finally:
            part.unlink(missing_ok=True)

    return proc.ended.addCallback(save)
