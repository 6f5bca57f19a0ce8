"""Retention: delete the oldest finished recordings when they are too old, take too much room in
total, or leave too little free space; all three are off by default.

Only ``video/`` and ``audio/`` (and a deleted video's poster) are touched: never ``temp/``, and
never a recording whose session is still live. Oldest means the epoch-ms in the name, then the
file name; every deletion is logged with its reason. What there is, and its size, is read from
the index (``livestream.library.index``), oldest first, a batch at a time: a sweep reads what it
deletes and the recording after, never the whole library.

With a bucket (``--store s3://``) the library is the bucket, so the age and total rules act on
its objects (the total is the whole bucket's, every node's recordings together), and the local
files not uploaded yet are left alone: they are on their way, and the only copy. ``--retain-free``
is refused with a bucket (daemon/options.py): deleting objects frees no local disk, and deleting the
files owed to the bucket would lose recordings.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from livestream.bucket.library import BucketLibrary
from livestream.library import store
from livestream.library.index import RecordingIndex
from livestream.library.store import LOCAL, STORED, Row
from livestream.library.tree import MediaTree

_log = Logger()

INTERVAL = 60.0
# Recordings deleted per read of the index: the unlinks of one batch run on the reactor.
BATCH = 500
AGE = "age"
TOTAL = "total"
FREE = "free"


@dataclass(frozen=True)
class RetentionPolicy:
    """0 turns a rule off."""

    days: float = 0
    total_bytes: int = 0
    free_bytes: int = 0

    @property
    def on(self) -> bool:
        return bool(self.days or self.total_bytes or self.free_bytes)


@dataclass(frozen=True)
class Finished:
    """A finished recording file, with its poster if it is a video that has one."""

    kind: str
    name: str
    path: Path
    size: int
    mtime: float
    poster: Path | None = None
    poster_size: int = 0

    @property
    def epoch_ms(self) -> int:
        return int(self.name.rpartition("_")[2])

    @property
    def room(self) -> int:
        return self.size + self.poster_size


def plan(
    recordings: Iterable[Finished], policy: RetentionPolicy, now: float, free: int
) -> list[tuple[Finished, str]]:
    """What to delete and why, oldest first; pure, so every rule is testable without a disk."""
    ordered = sorted(recordings, key=lambda r: (r.epoch_ms, r.mtime, r.kind))
    return list(doomed(ordered, sum(r.room for r in ordered), policy, now, free))


def doomed(
    ordered: Iterable[Finished], total: int, policy: RetentionPolicy, now: float, free: int
) -> Iterator[tuple[Finished, str]]:
    """The rules applied to recordings already oldest first, whose sizes add up to ``total``:
    it stops at the first recording no rule takes, so only what goes is read."""
    cutoff_ms = (now - policy.days * 86400) * 1000
    for rec in ordered:
        if policy.days and rec.epoch_ms < cutoff_ms:
            why = AGE
        elif policy.total_bytes and total > policy.total_bytes:
            why = TOTAL
        elif policy.free_bytes and free < policy.free_bytes:
            why = FREE
        else:
            return
        yield rec, why
        total -= rec.room
        free += rec.room


def _oldest(
    db: sqlite3.Connection,
    *,
    tree: MediaTree,
    place: int,
    skip: set[str],
    after: tuple[float, str] | None,
    policy: RetentionPolicy,
    now: float,
    free: int,
) -> tuple[list[tuple[Finished, str]], tuple[float, str] | None]:
    """In a reader of the index: up to a batch of what the rules delete, oldest first (the
    time in the name, then the file name), from ``after`` on, among the recordings at
    ``place``. A row's paths are the media tree's (for the bucket, only their names count).
    Also the position of the last row read, where the next batch begins."""
    last: list[tuple[float, str]] = []

    def rows() -> Iterator[Finished]:
        found = db.execute(
            f"SELECT {store.COLUMNS} FROM recordings INDEXED BY by_created"
            " WHERE location & ? AND (created, filename) > (?, ?) ORDER BY created, filename",
            (place, *(after or (float("-inf"), ""))),
        )
        for values in found:
            row = Row(*values)
            last[:] = [(row.created, row.filename)]
            if row.name in skip:
                continue
            poster = tree.poster_path(row.name) if row.poster & place else None
            yield Finished(
                row.kind, row.name, tree.final_path(row.kind, row.name), row.size,
                row.modified, poster, row.poster_size if poster else 0,
            )  # fmt: skip

    total = sum(size for (_, at), (_, size) in store.totals(db).items() if at & place)
    batch = list(islice(doomed(rows(), total, policy, now, free), BATCH))
    return batch, last[0] if last else None


class Retention(Service):
    """Sweeps once at start and then every ``interval`` seconds, reading the index."""

    def __init__(
        self,
        reactor,
        tree: MediaTree,
        index: RecordingIndex,
        policy: RetentionPolicy,
        live: Callable[[], Iterable[str]],
        *,
        interval: float = INTERVAL,
        free_bytes: Callable[[], int] | None = None,
        bucket: BucketLibrary | None = None,
    ) -> None:
        self._reactor = reactor
        self._tree = tree
        self._index = index
        self.policy = policy
        self._live = live
        self._interval = interval
        self._free = free_bytes or tree.free_bytes
        self._bucket = bucket
        self._loop = LoopingCall(self._sweep)
        self._loop.clock = reactor

    def startService(self) -> None:
        super().startService()
        if self.policy.on:
            self._loop.start(self._interval, now=True).addErrback(
                lambda f: _log.failure("retention stopped", f)
            )

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _sweep(self) -> Deferred[object]:
        """Each sweep (the first too) waits until the index has been checked against the tree:
        a rule judged on part of the library would keep what it should delete."""
        return self._index.ready().addCallback(lambda _: self._sweep_now())

    def _sweep_now(self) -> Deferred[object]:
        if self._bucket is None:
            return self.sweep().addErrback(lambda f: _log.failure("retention: sweep failed", f))
        return self.sweep_bucket().addErrback(
            lambda f: _log.warn(
                "retention: the bucket cannot be swept now: {error}", error=f.value
            )  # fmt: skip
        )

    async def _batches(self, place: int, free: Callable[[], int]) -> AsyncIterator[
        list[tuple[Finished, str]]
    ]:  # fmt: skip
        """What the policy deletes, a batch at a time; each batch is read after the deletions
        of the one before are in the index (totals and free space as they are then)."""
        after: tuple[float, str] | None = None
        while True:
            batch, after = await self._index.read(partial(
                _oldest, tree=self._tree, place=place, skip=set(self._live()), after=after,
                policy=self.policy, now=self._reactor.seconds(), free=free(),
            ))  # fmt: skip
            if not batch:
                return
            yield batch
            if len(batch) < BATCH:
                return

    def sweep_bucket(self) -> Deferred[list[str]]:
        """Delete from the bucket what the policy says; return the objects' file names."""
        assert self._bucket is not None
        return ensureDeferred(self._sweep_bucket(self._bucket))

    async def _sweep_bucket(self, bucket: BucketLibrary) -> list[str]:
        deleted = []
        async for batch in self._batches(STORED, lambda: 0):
            for rec, why in batch:
                try:
                    await bucket.remove(rec.kind, rec.name, rec.poster is not None)
                except Exception as e:
                    _log.error("retention: cannot delete {file} from the bucket: {error}",
                               file=rec.path.name, error=e)  # fmt: skip
                    continue
                deleted += [p.name for p in (rec.path, rec.poster) if p is not None]
                self._deleted(rec, why)
        return deleted

    def sweep(self) -> Deferred[list[Path]]:
        """Delete what the policy says; fire with the files deleted (posters included)."""
        return ensureDeferred(self._sweep_local())

    async def _sweep_local(self) -> list[Path]:
        free = self._free if self.policy.free_bytes else lambda: 0
        deleted = []
        async for batch in self._batches(LOCAL, free):
            for rec, why in batch:
                for path in (rec.path, rec.poster):
                    if path is None:
                        continue
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        continue
                    except OSError as e:
                        _log.error("retention: cannot delete {path}: {error}", path=path,
                                   error=e)  # fmt: skip
                        continue
                    deleted.append(path)
                self._index.removed(rec.kind, rec.name)
                self._deleted(rec, why)
        return deleted

    def _deleted(self, rec: Finished, why: str) -> None:
        _log.info(
            "retention: deleted {file} ({why}: {reason})", file=rec.path.name, why=why,
            reason=self._reason(why), kind=rec.kind, recording=rec.name, bytes=rec.room,
        )  # fmt: skip

    def _reason(self, why: str) -> str:
        p = self.policy
        if why == AGE:
            return f"older than {p.days:g} days"
        if why == TOTAL:
            return f"recordings take more than {p.total_bytes} bytes"
        return f"less than {p.free_bytes} bytes free"
