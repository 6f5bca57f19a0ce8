"""The library as a daemon with ``--store s3://...`` serves it: the bucket every node uploads
to, with this node's finished files not uploaded yet (the
:class:`~livestream.library.local.Library` interface). Listings are the index's, which
:mod:`livestream.bucket.sync` keeps up with the bucket in the background.

A download is looked up in the media tree, then in the index (no request to the store), then,
for an object another node stored since the last listing, with one HEAD.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred, ensureDeferred, succeed

from livestream.bucket.objectstore import ObjectStore
from livestream.bucket.sync import BucketSync
from livestream.library.index import RecordingIndex
from livestream.library.local import Found, LocalLibrary, StoredObject, StoreUnavailable
from livestream.library.store import STORED
from livestream.library.tree import POSTER_SUFFIX, POSTERS, MediaTree
from livestream.wire.kinds import SUFFIXES, VIDEO


class UploadState(Protocol):
    async def discard(self, kind: str, name: str) -> None: ...


class BucketLibrary:
    """The bucket, with this node's finished files that are not in it yet."""

    def __init__(
        self,
        tree: MediaTree,
        objects: ObjectStore,
        uploads: UploadState,
        index: RecordingIndex,
        sync: BucketSync,
    ) -> None:
        self._tree = tree
        self._local = LocalLibrary(tree, index)
        self._objects = objects
        self._uploads = uploads
        self._index = index
        self._sync = sync

    def find(self, kind: str, name: str) -> Deferred[Found | None]:
        here = self._local.local(self._tree.final_path(kind, name))
        if here is not None:
            return succeed(here)
        return ensureDeferred(self._stored(kind, f"{name}{SUFFIXES[kind]}"))

    def find_poster(self, name: str) -> Deferred[Found | None]:
        here = self._local.local(self._tree.poster_path(name))
        if here is not None:
            return succeed(here)
        return ensureDeferred(self._stored(POSTERS, f"{name}{POSTER_SUFFIX}"))

    async def _stored(self, kind: str, filename: str) -> StoredObject | None:
        """From the index, or (just stored by another node) a HEAD."""
        if kind != POSTERS:
            row = await self._index.get(kind, filename[: -len(SUFFIXES[kind])])
            if row is not None and row.location & STORED:
                return StoredObject(kind, filename, row.size, row.modified)
        try:
            head = await self._objects.head(kind, filename)
        except Exception as e:
            raise StoreUnavailable(f"the object store cannot be asked: {e}") from None
        return StoredObject(kind, filename, head.size, head.modified) if head else None

    def delete(self, kind: str, name: str) -> Deferred[bool]:
        return ensureDeferred(self._delete(kind, name))

    async def _delete(self, kind: str, name: str) -> bool:
        """Nothing is touched unless the store answers. Then the upload owed is called off, so
        it cannot bring the recording back; then the local file goes, then the objects."""
        filename = f"{name}{SUFFIXES[kind]}"
        try:
            stored = await self._objects.head(kind, filename) is not None
        except Exception as e:
            raise StoreUnavailable(f"the object store cannot be asked: {e}") from None
        await self._uploads.discard(kind, name)
        here = self._local.delete_local(kind, name)
        if not (stored or here):
            return False
        try:
            # The upload just called off may have stored the object since the HEAD.
            await self._objects.delete(kind, filename)
            if kind == VIDEO:
                await self._objects.delete(POSTERS, f"{name}{POSTER_SUFFIX}")
        except Exception as e:
            raise StoreUnavailable(f"the object store cannot delete {filename}: {e}") from None
        finally:
            self._sync.unstored(kind, name)
        return True

    async def remove(self, kind: str, name: str, poster: bool) -> None:
        """Delete a recording's object (and a video's poster) from the bucket."""
        try:
            await self._objects.delete(kind, f"{name}{SUFFIXES[kind]}")
            if poster:
                await self._objects.delete(POSTERS, f"{name}{POSTER_SUFFIX}")
        finally:
            self._sync.unstored(kind, name)
