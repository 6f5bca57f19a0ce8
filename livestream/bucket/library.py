"""The library as a daemon with ``--store s3://...`` serves it: the bucket every node uploads
to, merged with this node's finished files not uploaded yet, so every node behind a balancer
answers with the whole library (the :class:`~livestream.library.local.Library` interface).

Listing a bucket is a blocking boto3 call made in the object store's thread pool, so every
method answers a Deferred. The bucket's listing is kept for ``ttl`` seconds (a page polling
``/api/recordings`` does not become a request to the store per poll), and dropped early when
this node uploads or deletes something. Objects never change once stored (every put is
conditional), so what a HEAD says about one (duration, frames or samples, from the metadata
the uploader wrote) is kept as long as the object is listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from livestream.bucket.objectstore import ObjectInfo, ObjectStore
from livestream.library.catalog import (
    COUNT_FIELDS,
    Entry,
    created_at,
    describe,
    newest_first,
)
from livestream.library.local import Found, LocalLibrary, Removable, StoredObject, StoreUnavailable
from livestream.library.mediainfo import UNKNOWN, Info
from livestream.library.tree import POSTER_SUFFIX, POSTERS, MediaTree, by_time, is_recording_name
from livestream.wire.kinds import SUFFIXES, VIDEO

_log = Logger()

LISTING_TTL = 2.0


class UploadState(Protocol):
    uploaded: int

    async def discard(self, kind: str, name: str) -> None: ...


class BucketLibrary:
    """The bucket, with this node's finished files that are not in it yet."""

    def __init__(
        self,
        reactor,
        tree: MediaTree,
        objects: ObjectStore,
        uploads: UploadState,
        ttl: float = LISTING_TTL,
    ) -> None:
        self._reactor = reactor
        self._tree = tree
        self._local = LocalLibrary(tree)
        self._objects = objects
        self._uploads = uploads
        self._ttl = ttl
        self._generation = 0
        self._cached: tuple[float, tuple[int, int], list[ObjectInfo]] | None = None
        self._waiting: list[Deferred[list[ObjectInfo]]] = []
        self._infos: dict[tuple[str, str, int], Info] = {}

    def invalidate(self) -> None:
        """The next request lists the bucket again."""
        self._generation += 1
        self._cached = None

    def _freshness(self) -> tuple[int, int]:
        # An upload by this node changes the library: its file leaves the disk for the bucket.
        return (self._generation, self._uploads.uploaded)

    def objects(self) -> Deferred[list[ObjectInfo]]:
        """The bucket's listing (recordings and posters), at most ``ttl`` seconds old; one
        request to the store however many routes ask at once. Fails with StoreUnavailable."""
        now = self._reactor.seconds()
        if self._cached is not None:
            at, freshness, found = self._cached
            if now - at < self._ttl and freshness == self._freshness():
                return succeed(found)
        waiter: Deferred[list[ObjectInfo]] = Deferred()
        self._waiting.append(waiter)
        if len(self._waiting) == 1:
            freshness = self._freshness()
            self._objects.listing().addBoth(self._listed, now, freshness)
        return waiter

    def _listed(self, result: list[ObjectInfo] | Failure, at: float, freshness: tuple) -> None:
        waiting, self._waiting = self._waiting, []
        if isinstance(result, Failure):
            _log.warn("cannot list the bucket: {error}", error=result.value)
            error = StoreUnavailable(f"the object store cannot be listed: {result.value}")
            for waiter in waiting:
                waiter.errback(error)
            return
        if freshness == self._freshness():
            self._cached = (at, freshness, result)
        for waiter in waiting:
            waiter.callback(result)

    def listing(self) -> Deferred[dict[str, list[str]]]:
        return self.objects().addCallback(self._seed_listing)

    def _seed_listing(self, objects: list[ObjectInfo]) -> dict[str, list[str]]:
        names = {kind: set(files) for kind, files in self._tree.listing().items()}
        for o in _recordings(objects):
            names[o.kind].add(o.filename)
        return {kind: sorted(files, key=by_time) for kind, files in names.items()}

    def details(self) -> Deferred[list[dict[str, object]]]:
        return ensureDeferred(self._details())

    async def _details(self) -> list[dict[str, object]]:
        objects = await self.objects()
        entries: list[Entry] = self._local.catalog.entries()
        local = {name for _, name, _ in entries}
        posters = {o.filename[: -len(POSTER_SUFFIX)] for o in objects if o.kind == POSTERS}
        stored = [o for o in _recordings(objects) if o.filename not in local]
        infos = await self._describe(stored)
        for o in stored:
            name = o.filename[: -len(SUFFIXES[o.kind])]
            created = created_at(name, o.modified)
            poster = name in posters or self._tree.poster_path(name).exists()
            doc = describe(o.kind, name, o.size, created, infos[(o.kind, o.filename, o.size)],
                           poster)  # fmt: skip
            entries.append((created, o.filename, doc))
        return newest_first(entries)

    async def _describe(self, stored: list[ObjectInfo]) -> dict[tuple[str, str, int], Info]:
        """Duration and count of each object, from its metadata (one HEAD the first time)."""
        keys = [(o.kind, o.filename, o.size) for o in stored]
        self._infos = {key: self._infos[key] for key in keys if key in self._infos}
        missing = [key for key in keys if key not in self._infos]
        heads = await DeferredList(
            [self._objects.head(kind, filename) for kind, filename, _ in missing],
            consumeErrors=True,
        )
        for key, (ok, head) in zip(missing, heads, strict=True):
            if ok and head is not None:
                self._infos[key] = _info(key[0], head.metadata)
        return {key: self._infos.get(key, UNKNOWN) for key in keys}

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
        """From the listing, or (just stored by another node) a HEAD."""
        objects = await self.objects()
        for o in objects:
            if o.kind == kind and o.filename == filename:
                return StoredObject(kind, filename, o.size, o.modified)
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
            self.invalidate()
        return True

    async def removable(self) -> list[Removable]:
        """The recordings in the bucket, for retention (files not uploaded yet are not)."""
        self.invalidate()
        found = await self.objects()
        posters = {o.filename[: -len(POSTER_SUFFIX)]: o.size for o in found if o.kind == POSTERS}
        return [
            Removable(o.kind, o.filename[: -len(SUFFIXES[o.kind])], o.size, o.modified,
                      posters.get(o.filename[: -len(SUFFIXES[o.kind])], 0)
                      if o.kind == VIDEO else 0)
            for o in _recordings(found)
        ]  # fmt: skip

    async def remove(self, kind: str, name: str, poster: bool) -> None:
        """Delete a recording's object (and a video's poster) from the bucket."""
        try:
            await self._objects.delete(kind, f"{name}{SUFFIXES[kind]}")
            if poster:
                await self._objects.delete(POSTERS, f"{name}{POSTER_SUFFIX}")
        finally:
            self.invalidate()


def _recordings(objects: Iterable[ObjectInfo]) -> Iterable[ObjectInfo]:
    """The recordings among the objects: well-named videos and audio."""
    for o in objects:
        if o.kind in SUFFIXES and is_recording_name(o.filename[: -len(SUFFIXES[o.kind])]):
            yield o


def _info(kind: str, metadata: dict[str, str]) -> Info:
    """What the uploader wrote in the object's metadata; None for what is missing or bad."""
    try:
        duration: float | None = float(metadata["duration"])
    except (KeyError, ValueError):
        duration = None
    try:
        count: int | None = int(metadata[COUNT_FIELDS[kind]])
    except (KeyError, ValueError):
        count = None
    return Info(duration, count)
