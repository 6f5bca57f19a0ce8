"""The index of every finished recording, kept in SQLite beside the media tree, so that no
listing reads the tree and no request does work that grows with the library on the reactor.

SQLite because it ships with Python, keeps a million rows in a file of a few hundred MB with an
index for every order a route asks for (a page is a walk of ``limit`` entries), lets readers
run beside the writer (WAL), and survives a crash whole. The index holds nothing the media
tree and the bucket cannot tell again: a lost, corrupt or foreign file is moved aside and the
index rebuilt in the background while the daemon serves.

Threads: one writer (a thread pool of one, so writes are applied in the order they were asked
for) and a few readers, each with its own connection. A read waits until every write asked for
before it is applied, so a client that saw its session's ``CLOSED`` finds the recording listed.

At start the index is checked against the tree (:mod:`livestream.library.reconcile`): the
file names of ``video/``, ``audio/`` and ``posters/`` are compared with the rows, and only
files the index does not know have their headers read.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from livestream.library import query as queries
from livestream.library import reconcile, store
from livestream.library.rows import row_of
from livestream.library.store import LOCAL, IndexDamaged, IndexUnavailable, Row
from livestream.library.tree import INDEX_DIR, MediaTree
from livestream.wire.kinds import SUFFIXES, MediaKind

_log = Logger()

T = TypeVar("T")

INDEX_FILE = "library.sqlite3"
READERS = 2
# States /healthz reports.
OPENING = "opening"
RECONCILING = "reconciling"
REBUILDING = "rebuilding"
READY = "ready"
# Listing files kept after a newer one is made: a request that was handed one still opens it.
LISTINGS_KEPT = 2
# Seconds from a failed write to the check against the tree that puts it right, at first; and
# at most, while checks keep failing.
RECHECK_AFTER = 5.0
RECHECK_MAX = 300.0
# Totals of filtered pages remembered while the index is unchanged.
COUNTS_KEPT = 256
# Names per piece of the seed listing.
LISTING_PIECE = 50000


class Page:
    """One page of the details route: its rows, the total matching, and where the next begins."""

    def __init__(self, rows: list[Row], total: int, next_cursor: str | None) -> None:
        self.rows = rows
        self.total = total
        self.next = next_cursor


class RecordingIndex(Service):
    """The index as a service: opened and checked at start, its threads stopped at stop."""

    def __init__(self, reactor: Any, tree: MediaTree, path: Path | None = None) -> None:
        self._reactor = reactor
        self._tree = tree
        self.path = path if path is not None else tree.root / INDEX_DIR / INDEX_FILE
        # What the connections open: the file, or a shared index in memory (see _open).
        self._target: Path | str = self.path
        self.in_memory = False
        # The tree's directories as the last clean stop left them (None: not stopped cleanly).
        self._stopped_cleanly: str | None = None
        self.state = OPENING
        # (kind, location) -> (count, bytes), as of the last write: metrics and health read it.
        self.totals: dict[tuple[str, int], tuple[int, int]] = {}
        # Bumped by every write that changed a row: the seed listing is remade when it moves.
        self.generation = 0
        self._writer = ThreadPool(1, 1, "livestream-index-writer")
        self._readers = ThreadPool(1, READERS, "livestream-index-reader")
        self._db: sqlite3.Connection | None = None
        # Reader connections, per thread, remade when the file is replaced (``_epoch``).
        self._local = threading.local()
        self._epoch = 0
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._issued = 0
        self._applied = 0
        self._barriers: list[tuple[int, Deferred[None]]] = []
        self._opened: Deferred[None] = Deferred()
        self._ready: Deferred[None] = Deferred()
        # What reads wait for besides the writes before them (the bucket's first listing), and
        # how each is let go (at stop, its timer must not outlive the daemon).
        self._holds: list[tuple[Deferred[None], Callable[[], object]]] = []
        self._listing: tuple[int, Path] | None = None
        # Totals counted, by (filters, generation).
        self._counts: dict[tuple[str, int], int] = {}
        # The listing files made, oldest first (those of an earlier run are removed at open).
        self._made: list[Path] = []
        self._building: Deferred[Path] | None = None
        self._job: Deferred[None] | None = None
        # Writes that failed, and the check against the tree they cause.
        self.write_errors = 0
        self._recheck: Any = None
        self._recheck_after = RECHECK_AFTER

    # --- lifecycle

    def startService(self) -> None:
        super().startService()
        self._writer.start()
        self._readers.start()
        self._job = ensureDeferred(self._start())
        self._job.addErrback(lambda f: _log.failure("the recordings index stopped", f))

    def stopService(self) -> Deferred[None]:
        """Stop the check between two of its tasks, apply every write asked for (the sessions
        finished at stop), then stop the threads."""
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self._writer.joined:
            return
        for _, release in self._holds:
            release()
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        if self._job is not None:
            await self._job
        if self._opened.called:
            await self._opened_and_settled(held=False)
            if self._ready.called:
                # Last of the services to stop but the listeners': the tree is still now.
                await self._in_writer_thread(self._leave_clean_stop)
        self._stop_threads()

    def _stop_threads(self) -> None:
        self._writer.stop()
        self._readers.stop()
        with self._lock:
            connections, self._connections = self._connections, []
        if self._db is not None:
            connections.append(self._db)
            self._db = None
        for db in connections:
            db.close()

    async def _start(self) -> None:
        started = time.monotonic()
        try:
            fresh = await self._in_writer_thread(self._open)
        finally:
            # Even if it could not be opened at all: reads then fail (500) rather than hang.
            self._opened.callback(None)
        self.state = REBUILDING if fresh else RECONCILING
        _log.info(
            "recordings index {path}: {what}", path=str(self.path),
            what="building it from the media tree" if fresh else "checking it against the tree",
        )  # fmt: skip
        if not fresh and self._stopped_cleanly == reconcile.directories(self._tree):
            _log.info("recordings index: no file came or went since its clean stop")
        else:
            if not fresh and self._stopped_cleanly is None:
                # A crash may have torn a page (a disk's, not SQLite's, doing): look first.
                damage = await self._in_writer_thread(self._check)
                if damage is not None:
                    _log.error("recordings index {path} is damaged ({damage}): rebuilding it",
                               path=str(self.path), damage=damage)  # fmt: skip
                    self.state = REBUILDING
                    await self._in_writer_thread(self._replace)
            await reconcile.run(self._tree, self.write_task, lambda: bool(self.running))
            if not self.running:
                return
        await self._in_writer_thread(self._top_up)
        self.state = READY
        self._ready.callback(None)
        count = sum(n for n, _ in self.totals.values())
        _log.info("recordings index ready: {count} recordings in {seconds:.1f} s",
                  count=count, seconds=time.monotonic() - started)  # fmt: skip

    def _open(self) -> bool:
        """In the writer: open the index, or start a new one where the file is unusable, or
        one in memory where no file can be had; True when the index starts empty."""
        try:
            try:
                return self._open_file()
            except IndexDamaged as e:
                _log.error("recordings index unusable ({error}): rebuilding it", error=str(e))
                self._replace()
                return True
        except (IndexUnavailable, IndexDamaged, OSError) as e:
            _log.error("recordings index cannot be kept in {path} ({error}): kept in memory "
                       "until the next start", path=str(self.path), error=str(e))  # fmt: skip
            if self._db is not None:
                self._db.close()
            self._target = store.memory_uri(f"livestream-index-{id(self)}")
            self._db = store.open_index(self._target)
            self.in_memory = True
            return True

    def _open_file(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for old in self.path.parent.glob("listing-*.json*"):
            old.unlink(missing_ok=True)
        fresh = not self.path.exists()
        self._db = store.open_index(self.path)
        self._stopped_cleanly = store.take_clean_stop(self._db)
        self.totals = store.totals(self._db)
        self._top_up()
        return fresh

    def _leave_clean_stop(self) -> None:
        if self._db is None or self.in_memory:
            return
        try:
            store.leave_clean_stop(self._db, reconcile.directories(self._tree))
        except sqlite3.Error as e:
            _log.warn("recordings index: cannot note its clean stop: {error}", error=e)

    def _check(self) -> str | None:
        assert self._db is not None
        try:
            store.check(self._db)
        except IndexDamaged as e:
            return str(e)
        return None

    def _replace(self) -> None:
        """Move the unusable file aside (kept for a look, once) and start an empty index."""
        if self._db is not None:
            self._db.close()
            self._db = None
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{self.path}{suffix}")
            if path.exists():
                os.replace(path, Path(f"{self.path}.damaged{suffix}"))
        self._db = store.open_index(self._target)
        self.totals = {}
        with self._lock:
            self._epoch += 1

    def ready(self) -> Deferred[None]:
        """Fires once the index has been checked against the tree (or rebuilt from it)."""
        return _after(self._ready) if not self._ready.called else succeed(None)

    def _check_again_soon(self) -> None:
        """After a failed write (a full disk, an I/O error), check the index against the tree
        again in a while, and again with twice the wait while the checks fail."""
        if self._recheck is not None or not self.running or not self._ready.called:
            return
        self._recheck = self._reactor.callLater(self._recheck_after, self._check_again)

    def _check_again(self) -> None:
        self._recheck = None
        errors = self.write_errors
        self._recheck_after = min(self._recheck_after * 2, RECHECK_MAX)

        async def check() -> None:
            _log.info("recordings index: checking it against the media tree again")
            await reconcile.run(self._tree, self.write_task, lambda: bool(self.running))
            if self.write_errors == errors:
                self._recheck_after = RECHECK_AFTER
                await self._in_writer_thread(self._top_up)

        self._job = ensureDeferred(check())
        self._job.addErrback(lambda f: _log.failure("checking the recordings index failed", f))

    def _top_up(self) -> None:
        assert self._db is not None
        if self.in_memory:
            return
        try:
            st = os.statvfs(self.path.parent)
            store.keep_reserve(self._db, st.f_bavail * st.f_frsize)
        except (sqlite3.Error, OSError) as e:
            _log.warn("recordings index: cannot keep its reserve of space: {error}", error=e)

    # --- writes

    def write_task(self, task: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        """Run ``task`` in the writer's thread in one transaction; reads asked for after this
        call see what it wrote."""
        self._issued += 1
        ticket = self._issued
        d: Deferred[Any] = self._in_writer_thread(self._transaction, task)
        return d.addBoth(self._written, ticket)

    def _transaction(
        self, task: Callable[[sqlite3.Connection], T]
    ) -> tuple[T, bool, dict[tuple[str, int], tuple[int, int]]]:
        db = self._db
        assert db is not None, "the index was written before it was opened"
        before = db.total_changes
        db.execute("BEGIN IMMEDIATE")
        try:
            result = task(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        changed = db.total_changes != before
        return result, changed, store.totals(db) if changed else self.totals

    def _written(self, outcome: Any, ticket: int) -> Any:
        self._applied = ticket
        if isinstance(outcome, tuple):
            result, changed, totals = outcome
            if changed:
                self.generation += 1
                self.totals = totals
            outcome = result
        else:
            # Logged here, not raised to whoever asked: what a lost write would have said is
            # found again by a check of the index against the tree, soon.
            self.write_errors += 1
            _log.failure("a write to the recordings index failed", outcome)
            self._check_again_soon()
            outcome = None
        ready = [d for at, d in self._barriers if at <= ticket]
        self._barriers = [(at, d) for at, d in self._barriers if at > ticket]
        for d in ready:
            d.callback(None)
        return outcome

    def recorded(self, kind: str, name: str) -> Deferred[None]:
        """A finished file was published into the tree (a session, recovery)."""

        def task(db: sqlite3.Connection) -> None:
            row = row_of(self._tree, kind, name)
            if row is not None:
                store.upsert(db, [row], LOCAL)

        return self.write_task(task)

    def removed(self, kind: str, name: str) -> Deferred[None]:
        """A finished file left the tree (a delete, retention, an upload that moved it)."""
        filename = f"{name}{SUFFIXES[kind]}"
        return self.write_task(lambda db: store.drop_place(db, [filename], LOCAL))

    # --- reads

    async def read(self, task: Callable[[sqlite3.Connection], T], *, held: bool = True) -> T:
        """Run ``task`` in a reader's thread, in one snapshot, once every write asked for so far
        is applied (and, if ``held``, what reads are held for has happened: the work that holds
        them reads with ``held=False``)."""
        await self._opened_and_settled(held)
        return await self._reading(task)

    async def _reading(self, task: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await deferToThreadPool(self._reactor, self._readers, self._in_reader, task)
        except sqlite3.OperationalError:
            if self._target != self.path or self.path.exists():
                raise
        # The index's file is gone (its media tree removed under the daemon): a reader cannot
        # open it again, but the writer's connection still holds it, so reads go there until
        # the next start, which finds no index and rebuilds it from the tree.
        _log.warn("recordings index: {path} is gone; read through the writer", path=self.path)
        return await self._in_writer_thread(self._in_writer_read, task)

    def _in_writer_read(self, task: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        if db is None:
            raise IndexUnavailable("the recordings index is closed")
        db.execute("BEGIN")
        try:
            return task(db)
        finally:
            db.execute("COMMIT")

    def hold_reads(self, until: Deferred[None], limit: float) -> None:
        """Reads wait until ``until`` fires, or ``limit`` seconds have passed."""
        gate: Deferred[None] = Deferred()

        def release(result: object = None) -> object:
            if not gate.called:
                gate.callback(None)
            if timer.active():
                timer.cancel()
            return result

        timer = self._reactor.callLater(limit, release)
        until.addBoth(release)
        self._holds.append((gate, release))

    async def _opened_and_settled(self, held: bool = True) -> None:
        if not self._opened.called:
            await _after(self._opened)
        self._holds = [(gate, release) for gate, release in self._holds if not gate.called]
        for gate, _ in self._holds if held else ():
            await _after(gate)
        if self._applied < self._issued:
            barrier: Deferred[None] = Deferred()
            self._barriers.append((self._issued, barrier))
            await barrier

    def _in_reader(self, task: Callable[[sqlite3.Connection], T]) -> T:
        db = self._reader_connection()
        db.execute("BEGIN")
        try:
            return task(db)
        finally:
            db.execute("COMMIT")

    def _reader_connection(self) -> sqlite3.Connection:
        held = getattr(self._local, "db", None)
        with self._lock:
            epoch = self._epoch
        if held is not None and held[0] == epoch:
            return held[1]
        if held is not None:
            held[1].close()
        db = store.connect(self._target, readonly=True)
        with self._lock:
            self._connections = [c for c in self._connections if held is None or c is not held[1]]
            self._connections.append(db)
        self._local.db = (epoch, db)
        return db

    def _in_writer_thread(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._writer, f, *args)

    def page(self, query: queries.Query) -> Deferred[Page]:
        return ensureDeferred(self._page(query))

    async def _page(self, query: queries.Query) -> Page:
        """The total is counted once per filters while the index does not change: the pages
        after the first (a client walking cursors) cost their rows alone, however many
        recordings the filters match."""
        await self._opened_and_settled()
        key = (query.digest(), self.generation)
        known = self._counts.get(key)

        def task(db: sqlite3.Connection) -> Page:
            total = known if known is not None else queries.count(db, query)
            rows = queries.page(db, query, total)
            more = len(rows) > query.limit
            rows = rows[: query.limit]
            return Page(rows, total, query.cursor_after(rows[-1]) if more else None)

        found = await self._reading(task)
        if key[1] == self.generation:
            if len(self._counts) >= COUNTS_KEPT or any(g != key[1] for _, g in self._counts):
                self._counts.clear()
            self._counts[key] = found.total
        return found

    def get(self, kind: str, name: str) -> Deferred[Row | None]:
        filename = f"{name}{SUFFIXES[kind]}"
        return ensureDeferred(self.read(lambda db: store.one(db, filename)))

    def seed_listing(self) -> Deferred[Path | bytes]:
        """The seed's ``GET /recordings`` document as of every write asked for so far: in a
        file, the last one made while nothing changed, or a new one made in a reader; or, if
        no file can be written (a full disk, the tree gone), the document itself."""
        return ensureDeferred(self._seed_listing())

    async def _seed_listing(self) -> Path | bytes:
        try:
            return await self._listing_file()
        except (OSError, sqlite3.OperationalError) as e:
            _log.warn("recordings index: cannot write the listing ({error}); answered from memory",
                      error=str(e))  # fmt: skip
            return await self.read(seed_document)

    async def _listing_file(self) -> Path:
        await self._opened_and_settled()
        while True:
            listing = self._listing
            if listing is not None and listing[0] == self.generation and listing[1].exists():
                return listing[1]
            if self._building is None:
                generation = self.generation
                target = self.path.parent / f"listing-{generation}.json"
                self._building = ensureDeferred(
                    self._reading(partial(write_seed_listing, target=target))
                )
                try:
                    made = await self._building
                finally:
                    self._building = None
                self._keep_listing(generation, made)
                if generation == self.generation:
                    return made
            else:
                await _after(self._building)

    def _keep_listing(self, generation: int, path: Path) -> None:
        if self._listing is None or self._listing[0] < generation:
            self._listing = (generation, path)
        self._made.append(path)
        while len(self._made) > LISTINGS_KEPT:
            self._made.pop(0).unlink(missing_ok=True)


def _after(d: Deferred[Any]) -> Deferred[None]:
    """Fires when ``d`` does, leaving ``d``'s result to its own callbacks."""
    waiting: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        waiting.callback(None)
        return result

    d.addBoth(fire)
    return waiting


def _seed_pieces(db: sqlite3.Connection) -> Iterator[str]:
    """``{"video": [...], "audio": [...]}``, every name oldest first (the seed's order: the
    epoch-ms, then the stem), in pieces; each made by SQLite, which lets go of the GIL while
    it runs, so the reactor's thread is not held up by a million names."""
    yield "{"
    for i, kind in enumerate(MediaKind):
        yield f'{", " if i else ""}"{kind}": ['
        after: tuple[str, str] = ("", "")
        first = True
        while True:
            # The last (stamp, stem) of the piece, as one string: a space sorts before every
            # character of either, so the largest string is the largest pair.
            piece, last = db.execute(
                "SELECT group_concat(json_quote(filename), ', '), max(stamp || ' ' || stem)"
                " FROM (SELECT filename, stamp, stem FROM recordings INDEXED BY by_seed_order"
                " WHERE kind = ? AND (stamp, stem) > (?, ?) ORDER BY stamp, stem LIMIT ?)",
                (str(kind), *after, LISTING_PIECE),
            ).fetchone()
            if piece is None:
                break
            yield piece if first else ", " + piece
            first = False
            stamp, _, stem = last.partition(" ")
            after = (stamp, stem)
        yield "]"
    yield "}"


def write_seed_listing(db: sqlite3.Connection, target: Path) -> Path:
    """Write the seed listing into ``target`` and rename it into place."""
    part = target.with_suffix(".part")
    try:
        with open(part, "w", encoding="utf-8") as out:
            out.writelines(_seed_pieces(db))
        os.replace(part, target)
    except OSError:
        part.unlink(missing_ok=True)
        raise
    return target


def seed_document(db: sqlite3.Connection) -> bytes:
    return "".join(_seed_pieces(db)).encode("utf-8")
