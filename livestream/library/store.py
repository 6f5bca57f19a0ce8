"""The index's tables in SQLite: the schema, and the statements every other part runs.

Pure (no Twisted, no threads): each function takes the connection of the thread it runs in, so
the same code serves the writer, the readers and the tests.

One row per recording file (``filename`` is ``<name>.mp4`` or ``<name>.wav``): where it is
(``local``, ``stored`` in the bucket), its size, when it began, what its headers say, and
whether its poster is on this disk or in the bucket. Every order a route asks for has its own
index, so a page is a walk of at most ``limit`` entries however large the library: newest or
oldest first (by ``created``, then file name), by client (the name's stem), by kind, and the
seed listing's order (the epoch-ms digits, then the stem). Totals by kind and location are kept
by triggers, so counting every recording is a read of four rows, not a scan.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from livestream.library.tree import POSTER_SUFFIX, POSTERS

# Raised when the schema is older or newer: the index is rebuilt rather than migrated (it holds
# nothing that the media tree and the bucket cannot tell again).
SCHEMA_VERSION = 2

# Free space kept inside the index's files for the rows written while the disk is full.
RESERVE_BYTES = 4 << 20

# Where a file or its poster is: bits of ``local`` and ``stored`` columns' meaning, as one value.
LOCAL = 1
STORED = 2

_SCHEMA = """
CREATE TABLE recordings (
    filename TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    stem TEXT NOT NULL,
    stamp TEXT NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL,
    modified REAL NOT NULL,
    duration REAL,
    count INTEGER,
    described INTEGER NOT NULL DEFAULT 0,
    poster INTEGER NOT NULL DEFAULT 0,
    poster_size INTEGER NOT NULL DEFAULT 0,
    location INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX by_created ON recordings (created, filename);
CREATE INDEX by_kind ON recordings (kind, created, filename);
CREATE INDEX by_stem ON recordings (stem, created, filename);
CREATE INDEX by_seed_order ON recordings (kind, stamp, stem);
CREATE INDEX undescribed ON recordings (filename) WHERE described = 0;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE totals (
    kind TEXT NOT NULL,
    location INTEGER NOT NULL,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (kind, location)
) WITHOUT ROWID;
CREATE TRIGGER counted_in AFTER INSERT ON recordings BEGIN
    INSERT INTO totals VALUES (new.kind, new.location, 1, new.size + new.poster_size)
        ON CONFLICT DO UPDATE SET count = count + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER counted_out AFTER DELETE ON recordings BEGIN
    UPDATE totals SET count = count - 1, bytes = bytes - old.size - old.poster_size
        WHERE kind = old.kind AND location = old.location;
END;
CREATE TRIGGER counted_again AFTER UPDATE OF location, size, poster_size ON recordings BEGIN
    UPDATE totals SET count = count - 1, bytes = bytes - old.size - old.poster_size
        WHERE kind = old.kind AND location = old.location;
    INSERT INTO totals VALUES (new.kind, new.location, 1, new.size + new.poster_size)
        ON CONFLICT DO UPDATE SET count = count + 1, bytes = bytes + excluded.bytes;
END;
"""

COLUMNS = (
    "filename, kind, stem, stamp, created, size, modified, duration, count, poster, "
    "poster_size, location"
)


@dataclass(frozen=True)
class Row:
    """One recording file as the index knows it."""

    filename: str
    kind: str
    stem: str
    stamp: str
    created: float
    size: int
    # The file's mtime, or the object's LastModified: what a download's Last-Modified says.
    modified: float
    duration: float | None
    count: int | None
    # Where the poster of a video is (LOCAL, STORED bits), and its size (what retention frees).
    poster: int
    poster_size: int
    location: int

    @property
    def name(self) -> str:
        return self.filename.rpartition(".")[0]


class IndexDamaged(Exception):
    """The file is not an index this daemon can use: not SQLite, corrupt, or another schema."""


class IndexUnavailable(Exception):
    """The index's file cannot be opened or written (its disk is full, read-only, failing)."""


def memory_uri(name: str) -> str:
    """An index in memory, shared by the connections of this process that open this URI: what
    the daemon falls back to when the index's file cannot be opened or written at start."""
    return f"file:{name}?mode=memory&cache=shared"


def connect(target: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode (readers never wait for the writer, nor it for them), in
    autocommit: each writer's task says where its transaction begins and ends. ``target`` is
    the file, or a :func:`memory_uri`."""
    in_memory = isinstance(target, str)
    db = sqlite3.connect(
        target, isolation_level=None, check_same_thread=False, timeout=30, uri=in_memory
    )
    db.execute("PRAGMA busy_timeout = 30000")
    if readonly:
        db.execute("PRAGMA query_only = 1")
        if in_memory:
            # Shared-cache readers would wait on the writer's table locks otherwise.
            db.execute("PRAGMA read_uncommitted = 1")
    elif not in_memory:
        db.execute("PRAGMA journal_mode = WAL")
        # A power cut may lose the last transactions, never the file: the media tree holds the
        # truth, and the next start's check finds what was lost.
        db.execute("PRAGMA synchronous = NORMAL")
    # KiB of pages kept in memory: the writer walks every index of a million rows when the
    # index is rebuilt; a reader walks a page of one.
    db.execute(f"PRAGMA cache_size = {-16384 if readonly else -65536}")
    return db


def open_index(target: Path | str) -> sqlite3.Connection:
    """The writer's connection to the index, creating it if there is none; raises
    IndexDamaged if the file is not an index this daemon can use, IndexUnavailable if it
    cannot be opened or written at all (permissions, a full disk, an I/O error)."""
    fresh = isinstance(target, str) or not target.exists()
    try:
        db = connect(target)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if fresh or version == 0:
            tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
            if tables:
                raise IndexDamaged(f"{target} holds other tables")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise IndexDamaged(f"{target} has schema {version}, not {SCHEMA_VERSION}")
    except sqlite3.OperationalError as e:
        raise IndexUnavailable(f"{target}: {e}") from None
    except sqlite3.DatabaseError as e:
        raise IndexDamaged(f"{target}: {e}") from None
    return db


def keep_reserve(db: sqlite3.Connection, room: int) -> None:
    """Keep ``RESERVE_BYTES`` of free pages in the file, and the write-ahead log as large (at
    most a sixteenth of ``room``, the disk's free space, on a small disk).

    A session that ends on a full disk must still be listed: its row then goes into pages the
    file already has (SQLite reuses free pages before it grows the file, and the log's space
    once checkpointed) instead of blocks the disk no longer has. Space is claimed by writing
    a blob and deleting it, at each open (while the disk has room) and after each check."""
    page = db.execute("PRAGMA page_size").fetchone()[0]
    want = min(RESERVE_BYTES, room // 16)
    missing = want // page - db.execute("PRAGMA freelist_count").fetchone()[0]
    if missing <= 0:
        return
    db.execute("CREATE TABLE IF NOT EXISTS reserve (data BLOB)")
    db.execute("INSERT INTO reserve VALUES (zeroblob(?))", (missing * page,))
    db.execute("DELETE FROM reserve")
    db.execute("PRAGMA wal_checkpoint(PASSIVE)")


def check(db: sqlite3.Connection) -> None:
    """Raise IndexDamaged unless SQLite's own quick check passes (a read of every page)."""
    try:
        answer = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise IndexDamaged(str(e)) from None
    if answer != "ok":
        raise IndexDamaged(answer)


def totals(db: sqlite3.Connection) -> dict[tuple[str, int], tuple[int, int]]:
    """(kind, location) -> (count, bytes)."""
    return {
        (kind, location): (count, size)
        for kind, location, count, size in db.execute(
            "SELECT kind, location, count, bytes FROM totals WHERE count > 0"
        )
    }


def upsert(db: sqlite3.Connection, rows: Iterable[Row], place: int) -> None:
    """Insert or update each row; ``place`` (LOCAL or STORED) is added to where the file is,
    and the row's poster bits for that place replace the old ones."""
    db.executemany(
        f"INSERT INTO recordings ({COLUMNS}, described) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (filename) DO UPDATE SET "
        "size = excluded.size, created = excluded.created, modified = excluded.modified, "
        "poster_size = CASE WHEN excluded.poster THEN excluded.poster_size "
        "  WHEN poster & ~:place THEN poster_size ELSE 0 END, "
        "duration = coalesce(excluded.duration, duration), "
        "count = coalesce(excluded.count, count), "
        "described = max(described, excluded.described), "
        "poster = (poster & ~:place) | excluded.poster, "
        "location = location | :place".replace(":place", str(place)),
        [
            (
                r.filename,
                r.kind,
                r.stem,
                r.stamp,
                r.created,
                r.size,
                r.modified,
                r.duration,
                r.count,
                r.poster,
                r.poster_size,
                r.location,
                int(r.duration is not None or r.count is not None),
            )
            for r in rows
        ],  # fmt: skip
    )


def drop_place(db: sqlite3.Connection, filenames: Iterable[str], place: int) -> None:
    """The files are no longer at ``place``: a row at no place left goes."""
    names = [(f,) for f in filenames]
    db.executemany(
        f"UPDATE recordings SET location = location & ~{place}, poster = poster & ~{place}, "
        f"poster_size = CASE WHEN poster & ~{place} THEN poster_size ELSE 0 END "
        "WHERE filename = ?",
        names,
    )
    db.executemany("DELETE FROM recordings WHERE filename = ? AND location = 0", names)


def set_poster(db: sqlite3.Connection, filename: str, place: int, size: int | None) -> None:
    """The poster of a video is at ``place`` with ``size`` bytes, or not (None)."""
    if size is None:
        db.execute(
            f"UPDATE recordings SET poster = poster & ~{place}, poster_size = CASE WHEN "
            f"poster & ~{place} THEN poster_size ELSE 0 END WHERE filename = ?",
            (filename,),
        )
    else:
        db.execute(
            f"UPDATE recordings SET poster = poster | {place}, poster_size = ? WHERE filename = ?",
            (size, filename),
        )


def one(db: sqlite3.Connection, filename: str) -> Row | None:
    found = db.execute(f"SELECT {COLUMNS} FROM recordings WHERE filename = ?", (filename,))
    row = found.fetchone()
    return Row(*row) if row is not None else None


def undescribed(db: sqlite3.Connection, limit: int, place: int = LOCAL) -> list[tuple[str, str]]:
    """(filename, kind) of up to ``limit`` rows at ``place`` whose headers were never read."""
    return db.execute(
        "SELECT filename, kind FROM recordings INDEXED BY undescribed "
        "WHERE described = 0 AND location & ? LIMIT ?",
        (place, limit),
    ).fetchall()


def describe(db: sqlite3.Connection, found: Iterable[tuple[str, float | None, int | None]]) -> None:
    """Store what the headers said (None for what they could not tell: not asked again)."""
    db.executemany(
        "UPDATE recordings SET duration = ?, count = ?, described = 1 WHERE filename = ?",
        [(duration, count, filename) for filename, duration, count in found],
    )


def start_found(db: sqlite3.Connection, table: str) -> None:
    """A temporary table (of the writer's connection) for what a check found: the names in
    the tree (``size`` unknown) or the bucket's listing."""
    db.execute(f"DROP TABLE IF EXISTS temp.{table}")
    db.execute(
        f"CREATE TEMP TABLE {table} (filename TEXT PRIMARY KEY, kind TEXT NOT NULL,"
        " size INTEGER, modified REAL)"
    )


def against_found(
    db: sqlite3.Connection, table: str, place: int, after: str, limit: int
) -> list[tuple[str, str, int, bool, int | None]]:
    """A batch of the rows at ``place`` whose file names come after ``after``, each with
    what ``table`` (see :func:`start_found`) says of it: (file name, kind, poster bits, whether
    its file was found, its poster's size if that was found: 0 when its size is unknown)."""
    return db.execute(
        "SELECT r.filename, r.kind, r.poster,"
        f" EXISTS (SELECT 1 FROM temp.{table} f WHERE f.filename = r.filename),"
        f" (SELECT coalesce(size, 0) FROM temp.{table} p WHERE p.kind = ? AND"
        "   p.filename = substr(r.filename, 1, length(r.filename) - 4) || ?)"
        " FROM recordings r WHERE r.filename > ? AND r.location & ?"
        " ORDER BY r.filename LIMIT ?",
        (POSTERS, POSTER_SUFFIX, after, place, limit),
    ).fetchall()


# What a clean stop leaves in ``meta``: the state of the tree's directories then.
CLEAN_STOP = "clean_stop"


def take_clean_stop(db: sqlite3.Connection) -> str | None:
    """What the last clean stop recorded, or None after a crash (or the first start); taken
    away, so that a crash of this run is not taken for a clean stop at the next."""
    try:
        found = db.execute("SELECT value FROM meta WHERE key = ?", (CLEAN_STOP,)).fetchone()
        db.execute("DELETE FROM meta WHERE key = ?", (CLEAN_STOP,))
    except sqlite3.DatabaseError as e:
        raise IndexDamaged(str(e)) from None
    return found[0] if found else None


def leave_clean_stop(db: sqlite3.Connection, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (CLEAN_STOP, value))
