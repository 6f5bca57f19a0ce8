"""The index learns the bucket: every node's recordings, from the bucket's listing, in the
background, so no request ever lists the bucket or asks it about each object.

A round lists the bucket (in the object store's threads), puts the listing into a temporary
table of the index's writer, then in small writer tasks adds the objects the index lacks, drops
the ones gone from the bucket, and puts the posters right; then it asks the bucket (one HEAD
each, a few at a time) for what the uploader wrote in the metadata of objects it has not
described yet: duration and frames or samples. The next round begins ``interval`` seconds after
(or twice as long as the last listing took, for a bucket so large that listing it is slow).

What this node uploads or deletes itself is told to the index at once (:meth:`BucketSync.uploaded`,
:meth:`BucketSync.unstored`), and remembered for the round under way, whose listing was taken
before: an object this node has just stored is not dropped for missing from it, nor one just
deleted brought back.

Until the first round is over (or ``FIRST_WAIT`` seconds, if the bucket does not answer) the
index's reads wait, so a node that just started does not answer with the bucket missing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from functools import partial

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from livestream.bucket.objectstore import ObjectInfo, ObjectStore
from livestream.library import store
from livestream.library.catalog import COUNT_FIELDS
from livestream.library.index import RecordingIndex
from livestream.library.mediainfo import UNKNOWN, Info
from livestream.library.rows import make_row
from livestream.library.store import LOCAL, STORED, Row
from livestream.library.tree import POSTER_SUFFIX, POSTERS, is_recording_name
from livestream.wire.kinds import SUFFIXES, VIDEO

_log = Logger()

INTERVAL = 1.0
FIRST_WAIT = 10.0
BATCH = 5000
# HEADs of objects to describe: at once, and per round (the rest wait for the next rounds).
HEADS_AT_ONCE = 8
HEADS_PER_ROUND = 2000


class BucketSync(Service):
    def __init__(
        self,
        reactor,
        objects: ObjectStore,
        index: RecordingIndex,
        interval: float = INTERVAL,
    ) -> None:
        self._reactor = reactor
        self._objects = objects
        self._index = index
        self._interval = interval
        # File names this node stored or deleted during the round under way.
        self._stored_now: set[str] = set()
        self._deleted_now: set[str] = set()
        self._loop: Deferred[None] | None = None
        self._sleep: Deferred[None] | None = None
        self.rounds = 0
        first: Deferred[None] = Deferred()
        self._first = first
        index.hold_reads(first, FIRST_WAIT)

    def startService(self) -> None:
        super().startService()
        self._loop = ensureDeferred(self._run())
        self._loop.addErrback(lambda f: _log.failure("the bucket's listing stopped", f))

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._sleep is not None:
            self._sleep.cancel()
        return self._loop

    async def _run(self) -> None:
        while self.running:
            began = time.monotonic()
            try:
                await self.round()
            except Exception as e:
                _log.warn("cannot list the bucket {bucket}: {error}",
                          bucket=str(self._objects.location), error=e)  # fmt: skip
            finally:
                if not self._first.called:
                    self._first.callback(None)
            if not self.running:
                return
            self._sleep = deferLater(
                self._reactor, max(self._interval, 2 * (time.monotonic() - began))
            )
            try:
                await self._sleep
            except Exception:
                return
            finally:
                self._sleep = None

    async def round(self) -> None:
        """One listing of the bucket, applied to the index, and what it lacked described."""
        self._stored_now, self._deleted_now = set(), set()
        listed = await self._objects.listing()
        write = self._index.write_task
        await write(_begin)
        objects = iter(listed)
        while await write(partial(_record_listed, objects=objects)):
            pass
        after: str | None = ""
        while after is not None:
            after = await write(partial(self._check_stored, after=after))
        after = ""
        while after is not None:
            after = await write(partial(self._add_listed, after=after))
        await write(_end)
        await self._describe()
        self.rounds += 1

    def _check_stored(self, db: sqlite3.Connection, after: str) -> str | None:
        """A batch of the rows said to be in the bucket: drop those it no longer lists, and
        put their posters' bucket bit right."""
        rows = store.against_found(db, "listed", STORED, after, BATCH)
        gone = []
        for filename, kind, poster, listed, listed_poster in rows:
            if not listed:
                if filename not in self._stored_now:
                    gone.append(filename)
                continue
            if kind == VIDEO and bool(poster & STORED) != (listed_poster is not None):
                store.set_poster(db, filename, STORED, listed_poster)
        store.drop_place(db, gone, STORED)
        return rows[-1][0] if len(rows) == BATCH else None

    def _add_listed(self, db: sqlite3.Connection, after: str) -> str | None:
        found = db.execute(
            "SELECT l.filename, l.kind, l.size, l.modified,"
            " (SELECT size FROM temp.listed p WHERE p.kind = ? AND"
            "   p.filename = substr(l.filename, 1, length(l.filename) - 4) || ?)"
            " FROM temp.listed l WHERE l.filename > ? AND l.kind != ? AND NOT EXISTS"
            " (SELECT 1 FROM recordings r WHERE r.filename = l.filename AND r.location & ?)"
            " ORDER BY l.filename LIMIT ?",
            (POSTERS, POSTER_SUFFIX, after, POSTERS, STORED, BATCH),
        ).fetchall()
        rows = [
            make_row(kind, filename[: -len(SUFFIXES[kind])], size, modified, UNKNOWN,
                     poster if kind == VIDEO else None, STORED, described=False)
            for filename, kind, size, modified, poster in found
            if filename not in self._deleted_now
        ]  # fmt: skip
        store.upsert(db, rows, STORED)
        return found[-1][0] if len(found) == BATCH else None

    async def _describe(self) -> None:
        """What the uploader wrote in the metadata of objects not described yet (another
        node's, or stored before this index existed)."""
        pending = await self._index.read(
            partial(store.undescribed, limit=HEADS_PER_ROUND, place=STORED), held=False
        )
        described: list[tuple[str, float | None, int | None]] = []
        for start in range(0, len(pending), HEADS_AT_ONCE):
            heads = await DeferredList(
                [
                    self._objects.head(kind, filename)
                    for filename, kind in pending[start : start + HEADS_AT_ONCE]
                ],
                consumeErrors=True,
            )
            for (filename, kind), (ok, head) in zip(
                pending[start : start + HEADS_AT_ONCE], heads, strict=True
            ):
                if ok:
                    info = metadata_info(kind, head.metadata) if head is not None else UNKNOWN
                    described.append((filename, info.duration, info.count))
        if described:
            await self._index.write_task(lambda db: store.describe(db, described))

    def uploaded(self, row: Row, local_name: str) -> Deferred[None]:
        """This node's file ``local_name`` is in the bucket as ``row`` (under another name if
        another node had taken its own) and gone from the disk: both said in one write."""
        self._stored_now.add(row.filename)
        self._deleted_now.discard(row.filename)
        local = f"{local_name}{SUFFIXES[row.kind]}"

        def task(db: sqlite3.Connection) -> None:
            store.upsert(db, [row], STORED)
            store.drop_place(db, [local], LOCAL)

        return self._index.write_task(task)

    def unstored(self, kind: str, name: str) -> Deferred[None]:
        """This node deleted an object (and a video's poster with it)."""
        filename = f"{name}{SUFFIXES[kind]}"
        self._deleted_now.add(filename)
        self._stored_now.discard(filename)
        return self._index.write_task(lambda db: store.drop_place(db, [filename], STORED))


def _begin(db: sqlite3.Connection) -> None:
    store.start_found(db, "listed")


def _end(db: sqlite3.Connection) -> None:
    db.execute("DROP TABLE IF EXISTS temp.listed")


def _record_listed(db: sqlite3.Connection, objects: Iterator[ObjectInfo]) -> bool:
    batch = []
    for o in objects:
        suffix = SUFFIXES.get(o.kind, POSTER_SUFFIX)
        if is_recording_name(o.filename[: -len(suffix)]):
            batch.append((o.filename, o.kind, o.size, o.modified))
        if len(batch) == BATCH:
            break
    db.executemany("INSERT OR IGNORE INTO temp.listed VALUES (?, ?, ?, ?)", batch)
    return len(batch) == BATCH


def metadata_info(kind: str, metadata: dict[str, str]) -> Info:
    """What the uploader wrote in an object's metadata; None for what is missing or bad."""
    try:
        duration: float | None = float(metadata["duration"])
    except (KeyError, ValueError):
        duration = None
    try:
        count: int | None = int(metadata[COUNT_FIELDS[kind]])
    except (KeyError, ValueError):
        count = None
    return Info(duration, count)
