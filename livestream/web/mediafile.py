"""A finished recording (or poster) on this node's disk, served over HTTP.

Twisted's :class:`~twisted.web.static.File` already answers Range, HEAD and Last-Modified;
what a recording needs besides is a content type fixed by its kind (not guessed from the name),
an ETag, and a guarantee that a symlink is never followed out of the media tree. Its
counterpart for an object of the bucket is :mod:`livestream.web.objectfile`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO

from twisted.web.http import CACHED
from twisted.web.server import Request
from twisted.web.static import File


class MediaFile(File):
    """One finished file, served by :class:`File` (Range, HEAD, Last-Modified) with a fixed
    content type, an ETag, and never through a symlink: the route checked the name and that the
    path is a regular file, and opening with ``O_NOFOLLOW`` keeps a symlink swapped in since
    from being followed out of the media tree."""

    isLeaf = True

    def __init__(self, path: Path, content_type: str, st: os.stat_result) -> None:
        super().__init__(os.fspath(path), defaultType=content_type)
        # File declares ``type = None`` on its class, so mypy types it as None, though File
        # itself stores the content type it guesses there (a str): set first, it is not guessed.
        self.type, self.encoding = content_type, None  # type: ignore[assignment]
        self._etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'.encode("ascii")

    def render_GET(self, request: Request) -> bytes | int:
        if request.setETag(self._etag) is CACHED:
            return b""
        return super().render_GET(request)

    render_HEAD = render_GET

    def openForReading(self) -> BinaryIO:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise PermissionError(errno.EACCES, "not a regular file", self.path) from None
            raise
        return os.fdopen(fd, "rb")
