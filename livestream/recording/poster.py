"""A video recording's poster: one of the JPEG frames the client sent, kept as it came.

A browser shows it before a ``<video>`` plays. No decoding and no encoder: the frame one second
in (past a camera's dark or blurred first frames), or the first frame of a shorter recording, is
kept by reference and written next to the recordings when the video is published. A recording
recovered after a crash has no poster: the frames were in the dead daemon's memory.
"""

from __future__ import annotations

from twisted.logger import Logger

from livestream.library.tree import MediaTree

_log = Logger()


class PosterPicker:
    def __init__(self, fps: int) -> None:
        self._pick_at = fps
        self._seen = 0
        self.jpeg: bytes | None = None

    def offer(self, frame: bytes) -> None:
        """Called with every frame the encoder gets, in order."""
        if self._seen in (0, self._pick_at):
            self.jpeg = frame
        self._seen += 1

    def save(self, tree: MediaTree, name: str) -> None:
        """Write the poster of published video ``name``; a failure costs the poster only."""
        if self.jpeg is None:
            return
        try:
            tree.save_poster(name, self.jpeg)
        except OSError as e:
            _log.warn("no poster for {name}: {error}", name=name, error=e)
        self.jpeg = None
