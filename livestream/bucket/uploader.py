"""Move every finished recording into the bucket, and off the local disk once it is there.

A pending upload is a marker file in ``media/uploads/`` written (and synced) before the upload
starts and removed after the local file, so a daemon stopped or killed at any point finds at its
next start every upload it owed. The object key is derived from the recording's name, and every
put is conditional, so an upload repeated after a crash meets its own object (same node, same
SHA-256) and is confirmed rather than stored twice.

Two nodes can make the same name (the same client id in the same millisecond). The second to
upload finds the first's object, which holds other bytes, and stores its file as
``<stem>.<node>_<epoch-ms>`` instead: names stay in the seed's ``<stem>_<epoch-ms>`` shape and
only a collision, which is rare, costs a recording its original name.

The object's metadata carries what ``GET /api/recordings`` shows without reading the object:
``duration`` and ``frames`` or ``samples``, read from the file's headers before the upload. A
video's poster follows it to ``<prefix>/posters/<name>.jpg`` before the local files go.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, ensureDeferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from livestream.bucket.objectstore import KeyTaken, ObjectStore, StoreError, UploadCancelled
from livestream.bucket.sync import BucketSync, metadata_info
from livestream.library.catalog import COUNT_FIELDS
from livestream.library.digest import sha256_of
from livestream.library.durable import write_durably
from livestream.library.mediainfo import Info, read_info
from livestream.library.rows import make_row
from livestream.library.store import STORED
from livestream.library.tree import (
    MAX_STEM_LENGTH,
    POSTER_SUFFIX,
    POSTERS,
    MediaTree,
    is_recording_name,
)
from livestream.sessions.events import Event, Events, Recovered, SessionEnded
from livestream.wire.kinds import AUDIO, BYTES_PER_SECOND, SUFFIXES, VIDEO

_log = Logger()

UPLOADS = "uploads"
# After a recording's own name, how many more names a collision may try before giving up.
MAX_RENAMES = 100


def collision_names(name: str, node: str) -> Iterator[str]:
    """The names a recording may be stored under, in order: its own, then the node's variant,
    then the node's variant a millisecond later, and so on."""
    yield name
    stem, _, stamp = name.rpartition("_")
    stem = f"{stem[: MAX_STEM_LENGTH - len(node) - 1]}.{node}"
    for later in range(MAX_RENAMES):
        yield f"{stem}_{int(stamp) + later}"


def _filename(kind: str, name: str) -> str:
    return f"{name}{SUFFIXES[kind]}"


class Uploader(Service):
    """Uploads what sessions and recovery publish; resumes what an earlier run left pending."""

    def __init__(
        self,
        reactor,
        tree: MediaTree,
        objects: ObjectStore,
        events: Events,
        node: str,
        *,
        fps: int = 15,
        retry_max: float = 60.0,
        stop_wait: float = 10.0,
        sync: BucketSync | None = None,
    ) -> None:
        """``sync`` is told of each upload, so the index has it at once (not at the next
        listing of the bucket)."""
        self._reactor = reactor
        self._sync = sync
        self._tree = tree
        self._objects = objects
        self._node = node
        self._fps = fps
        self._retry_max = retry_max
        self._stop_wait = stop_wait
        self._jobs: dict[tuple[str, str], Deferred[None]] = {}
        self._waits: dict[tuple[str, str], Deferred[None]] = {}
        # Recordings deleted while owed to the bucket: their uploads stop and are not retried.
        self._dropped: set[tuple[str, str]] = set()
        self._cancel = threading.Event()
        # For health and metrics: attempts that failed, and recordings confirmed in the bucket.
        self.failures = 0
        self.uploaded = 0
        events.subscribe(self._heard)

    @property
    def backlog(self) -> int:
        """Recordings on local disk still owed to the bucket."""
        return len(self._jobs)

    @property
    def markers(self) -> Path:
        return self._tree.root / UPLOADS

    def startService(self) -> None:
        super().startService()
        self._cancel.clear()
        self.markers.mkdir(exist_ok=True)
        _log.info("finished recordings go to {bucket} as node {node}",
                  bucket=str(self._objects.location), node=self._node)  # fmt: skip
        pending = set(self._pending_markers())
        for kind, filenames in self._tree.listing().items():
            for filename in filenames:
                pending.add((kind, filename[: -len(SUFFIXES[kind])]))
        if pending:
            _log.info("resuming {count} uploads to {bucket}", count=len(pending),
                      bucket=str(self._objects.location))  # fmt: skip
        for kind, name in sorted(pending):
            self._enqueue(kind, name, {})

    def stopService(self) -> Deferred[object] | None:
        """Let uploads under way finish for up to ``stop_wait`` seconds, then abandon them; their
        markers stay for the next start."""
        super().stopService()
        for wait in list(self._waits.values()):
            wait.cancel()
        if not self._jobs:
            return None
        _log.info("waiting up to {seconds} s for {count} uploads", seconds=self._stop_wait,
                  count=len(self._jobs))  # fmt: skip
        timer = self._reactor.callLater(self._stop_wait, self._cancel.set)
        done = DeferredList(list(self._jobs.values()), consumeErrors=True)

        def finished(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        return done.addBoth(finished)

    async def discard(self, kind: str, name: str) -> None:
        """Stop owing the bucket this recording (it is being deleted): a retry waiting is
        called off, an attempt under way is waited for, and the marker goes, so nothing brings
        the recording back once the caller has deleted its file and object."""
        key = (kind, name)
        self._dropped.add(key)
        try:
            wait = self._waits.get(key)
            if wait is not None:
                wait.cancel()
            job = self._jobs.get(key)
            if job is not None:
                await DeferredList([job], consumeErrors=True)
            self._marker(kind, name).unlink(missing_ok=True)
        finally:
            self._dropped.discard(key)

    def _heard(self, event: Event) -> None:
        if isinstance(event, SessionEnded):
            outcome = event.outcome
            if outcome.video:
                seconds = outcome.frames / self._fps
                self._enqueue(VIDEO, event.name, {"duration": f"{seconds:.3f}"})
            if outcome.audio:
                seconds = outcome.audio_bytes / BYTES_PER_SECOND
                self._enqueue(AUDIO, event.name, {"duration": f"{seconds:.3f}"})
        elif isinstance(event, Recovered):
            for kind, filename in event.files.items():
                if filename:
                    self._enqueue(kind, event.name, {})

    def _marker(self, kind: str, name: str) -> Path:
        return self.markers / f"{kind}.{name}.json"

    def _pending_markers(self) -> Iterator[tuple[str, str]]:
        for path in sorted(self.markers.glob("*.json")):
            kind, _, name = path.name[: -len(".json")].partition(".")
            if kind in SUFFIXES and is_recording_name(name):
                yield kind, name
            else:
                _log.warn("left alone in {dir}: {path} (not an upload marker)",
                          dir=self.markers, path=path)  # fmt: skip

    def _enqueue(self, kind: str, name: str, facts: dict[str, str]) -> None:
        marker = self._marker(kind, name)
        if not marker.exists():
            content = {"kind": kind, "name": name, "node": self._node, **facts}
            write_durably(marker, json.dumps(content).encode("utf-8"))
        if self.running and (kind, name) not in self._jobs:
            job = ensureDeferred(self._upload(kind, name))
            self._jobs[(kind, name)] = job

            def forget(_: object) -> None:
                # Not the popped job itself as the result: a Deferred that results in itself
                # never fires its later callbacks (the stop waiting for it hung).
                self._jobs.pop((kind, name), None)

            job.addBoth(forget)

    async def _upload(self, kind: str, name: str) -> None:
        """Try until the bucket holds the recording or the daemon stops, waiting 1, 2, 4 ...
        seconds (at most ``retry_max``) between attempts."""
        delay = 1.0
        while self.running and (kind, name) not in self._dropped:
            try:
                await self._attempt(kind, name)
                return
            except UploadCancelled:
                return
            except Exception as e:
                self.failures += 1
                _log.warn("upload of {file} failed ({error}); next try in {delay:.0f} s",
                          file=_filename(kind, name), error=e, delay=delay)  # fmt: skip
            if not self.running or (kind, name) in self._dropped:
                return
            wait: Deferred[None] = deferLater(self._reactor, delay)
            self._waits[(kind, name)] = wait
            try:
                await wait
            except CancelledError:
                return
            finally:
                self._waits.pop((kind, name), None)
            delay = min(delay * 2, self._retry_max)

    async def _attempt(self, kind: str, name: str) -> None:
        path = self._tree.final_path(kind, name)
        marker = self._marker(kind, name)
        if not path.exists():
            # Confirmed and removed by an earlier run that died before removing its marker.
            marker.unlink(missing_ok=True)
            return
        facts = json.loads(marker.read_text("utf-8"))
        size = path.stat().st_size
        pool = self._reactor.getThreadPool()
        sha256, info = await deferToThreadPool(self._reactor, pool, _digest_and_info, kind, path)
        metadata = {"node": self._node, "kind": kind, "sha256": sha256, "recording": name}
        if info.duration is not None:
            metadata["duration"] = f"{info.duration:.3f}"
        elif "duration" in facts:
            metadata["duration"] = str(facts["duration"])
        if info.count is not None:
            metadata[COUNT_FIELDS[kind]] = str(info.count)
        for target in collision_names(name, self._node):
            if (kind, name) in self._dropped:
                return
            filename = _filename(kind, target)
            stored = await self._objects.head(kind, filename)
            if stored is None:
                try:
                    await self._objects.upload(path, kind, filename, metadata, self._cancel)
                except KeyTaken:
                    pass  # another upload got there first: the head below says whose it is
                stored = await self._objects.head(kind, filename)
                if stored is None:
                    raise StoreError(f"{filename} is not in the bucket after its upload")
            if stored.holds(sha256, size):
                break
            _log.info("{file} in the bucket is another recording (node {other}); renaming",
                      file=filename, other=stored.metadata.get("node", "?"))  # fmt: skip
        else:
            raise StoreError(f"no free name for {_filename(kind, name)} in the bucket")
        poster = self._tree.poster_path(name)
        if kind == VIDEO and poster.exists():
            await self._upload_poster(poster, target, metadata)
        poster_size = poster.stat().st_size if kind == VIDEO and poster.exists() else None
        path.unlink()
        if kind == VIDEO:
            poster.unlink(missing_ok=True)
        if self._sync is not None:
            row = make_row(kind, target, size, stored.modified, metadata_info(kind, metadata),
                           poster_size, STORED, described=True)  # fmt: skip
            self._sync.uploaded(row, name)
        marker.unlink(missing_ok=True)
        self.uploaded += 1
        _log.info("uploaded {file} to {key} ({size} bytes)", file=_filename(kind, name),
                  key=self._objects.location.key(kind, filename), size=size)  # fmt: skip

    async def _upload_poster(self, poster: Path, target: str, metadata: dict[str, str]) -> None:
        """The poster of the video stored as ``target``: that name is this recording's in the
        bucket, so a poster already under it is its own (an earlier attempt's)."""
        filename = f"{target}{POSTER_SUFFIX}"
        if await self._objects.head(POSTERS, filename) is not None:
            return
        meta = {"node": self._node, "kind": POSTERS, "recording": metadata["recording"]}
        try:
            await self._objects.upload(poster, POSTERS, filename, meta, self._cancel)
        except KeyTaken:
            pass


def _digest_and_info(kind: str, path: Path) -> tuple[str, Info]:
    return sha256_of(path)[1], read_info(kind, path)
