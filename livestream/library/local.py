"""Where the HTTP routes find and delete finished recordings.

One interface, :class:`Library`, so the routes never ask where recordings are kept, and its
answers (:data:`Found`). :class:`LocalLibrary` is the media tree, as a daemon
without a bucket has always served it; ``livestream.bucket.library`` holds the bucket's. Listings
are not asked of it: they are the index's (``livestream.library.index``), which every delete
made here is told of.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from twisted.internet.defer import Deferred, succeed

from livestream.library.catalog import regular_file
from livestream.library.index import RecordingIndex
from livestream.library.tree import MediaTree


class StoreUnavailable(Exception):
    """The bucket could not be listed or asked; what the routes answer 503 for."""


@dataclass(frozen=True)
class LocalFile:
    """A finished file in the media tree (a regular file, not a symlink)."""

    path: Path
    st: os.stat_result


@dataclass(frozen=True)
class StoredObject:
    """An object in the bucket: ``kind`` is ``video``, ``audio`` or ``posters``."""

    kind: str
    filename: str
    size: int
    modified: float


Found = LocalFile | StoredObject


class Library(Protocol):
    def find(self, kind: str, name: str) -> Deferred[Found | None]:
        """Where a finished recording is, or None."""

    def find_poster(self, name: str) -> Deferred[Found | None]:
        """Where the poster of video ``name`` is, or None."""

    def delete(self, kind: str, name: str) -> Deferred[bool]:
        """Remove a finished recording (and a video's poster); False if there was none."""


class LocalLibrary:
    """The media tree alone."""

    def __init__(self, tree: MediaTree, index: RecordingIndex) -> None:
        self._tree = tree
        self._index = index

    def find(self, kind: str, name: str) -> Deferred[Found | None]:
        return succeed(self.local(self._tree.final_path(kind, name)))

    def find_poster(self, name: str) -> Deferred[Found | None]:
        return succeed(self.local(self._tree.poster_path(name)))

    def delete(self, kind: str, name: str) -> Deferred[bool]:
        return succeed(self.delete_local(kind, name))

    def delete_local(self, kind: str, name: str) -> bool:
        """Delete the file (and a video's poster) and tell the index: every read asked for after
        this call no longer lists it."""
        if regular_file(self._tree.final_path(kind, name)) is None:
            return False
        deleted = self._tree.delete(kind, name)
        self._index.removed(kind, name)
        return deleted

    @staticmethod
    def local(path: Path) -> LocalFile | None:
        st = regular_file(path)
        return LocalFile(path, st) if st is not None else None
