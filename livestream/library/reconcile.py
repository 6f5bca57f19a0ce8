"""The index checked against the media tree at start: new files added, vanished ones dropped,
posters put right; never a header read again for a file the index already knows.

Everything runs as small tasks of the index's writer, one after another, so the writes of live
sessions (which take their turn between them) wait for one task at most, and a read never waits
for the whole check. The names found are kept in a temporary table of the writer's connection,
not in Python, so a million names cost the daemon no memory of its own.

Sessions publish while the check runs: a file published after its directory was read is not in
the temporary table, so a row missing from it is dropped only if its file is really gone (an
lstat); a file deleted after the read is not added (its lstat fails).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from livestream.library import store
from livestream.library.catalog import regular_file
from livestream.library.mediainfo import read_info
from livestream.library.rows import row_of
from livestream.library.store import LOCAL
from livestream.library.tree import POSTER_SUFFIX, POSTERS, MediaTree
from livestream.wire.kinds import SUFFIXES, VIDEO, MediaKind

_log = Logger()

T = TypeVar("T")
Writer = Callable[[Callable[[sqlite3.Connection], T]], Deferred[T]]

# Rows per task: up to a few hundred ms of the writer's time each (every task costs two
# handovers of the GIL between threads, up to 5 ms each, so small tasks waste more than they
# spare; a write of a live session waits for one task at most).
SCAN_BATCH = 20000
CHECK_BATCH = 5000
ADD_BATCH = 4000
# Files whose headers are read per task (a few small reads each).
DESCRIBE_BATCH = 500


async def run(tree: MediaTree, write: Writer, running: Callable[[], bool]) -> None:
    """Bring the index in line with the tree; stops early (between tasks) when the daemon does."""
    await write(_start)
    for directory in (*MediaKind, POSTERS):
        names = _names(tree, directory)
        while running():
            if not await write(partial(_record_seen, directory=directory, names=names)):
                break
    after: str | None = ""
    while running() and after is not None:
        after = await write(partial(_check_known, tree=tree, after=after))
    after = ""
    while running() and after is not None:
        after = await write(partial(_add_new, tree=tree, after=after))
    await write(lambda db: db.execute("DROP TABLE IF EXISTS temp.seen"))
    while running():
        if not await write(partial(_describe, tree=tree)):
            break


def directories(tree: MediaTree) -> str:
    """The identity and modification time of ``video/``, ``audio/`` and ``posters/``: the
    same at the next start as at a clean stop means no file was added, removed or renamed in
    them meanwhile, so the check is not needed (a directory's mtime moves with its names)."""
    found = {}
    for directory in (*MediaKind, POSTERS):
        try:
            st = os.stat(tree.dir(directory))
        except OSError:
            continue
        found[str(directory)] = [st.st_dev, st.st_ino, st.st_mtime_ns]
    return json.dumps(found, sort_keys=True)


def _start(db: sqlite3.Connection) -> None:
    store.start_found(db, "seen")


def _names(tree: MediaTree, directory: str) -> Iterator[str]:
    """The file names of the recordings (or posters) of one directory, read lazily; none if
    it cannot be read."""
    suffix = SUFFIXES.get(directory, POSTER_SUFFIX)
    try:
        for name in tree.scan(directory):
            yield f"{name}{suffix}"
    except OSError as e:
        _log.error("recordings index: cannot read {dir}: {error}", dir=str(tree.dir(directory)),
                   error=str(e))  # fmt: skip


def _record_seen(db: sqlite3.Connection, directory: str, names: Iterator[str]) -> bool:
    """Up to a batch of ``names`` into the table of names seen; False once they run out."""
    batch = [(name, directory) for _, name in zip(range(SCAN_BATCH), names, strict=False)]
    db.executemany("INSERT OR IGNORE INTO temp.seen VALUES (?, ?, NULL, NULL)", batch)
    return len(batch) == SCAN_BATCH


def _check_known(db: sqlite3.Connection, tree: MediaTree, after: str) -> str | None:
    """A batch of the rows said to be local: drop those whose file is gone, put their posters'
    local bit right. The last file name checked, or None at the end."""
    rows = store.against_found(db, "seen", LOCAL, after, CHECK_BATCH)
    gone = []
    for filename, kind, poster, seen, poster_seen in rows:
        name = filename[: -len(SUFFIXES[kind])]
        if not seen and regular_file(tree.final_path(kind, name)) is None:
            gone.append(filename)
            continue
        if kind == VIDEO and bool(poster & LOCAL) != (poster_seen is not None):
            st = regular_file(tree.poster_path(name))
            store.set_poster(db, filename, LOCAL, st.st_size if st is not None else None)
    store.drop_place(db, gone, LOCAL)
    return rows[-1][0] if len(rows) == CHECK_BATCH else None


def _add_new(db: sqlite3.Connection, tree: MediaTree, after: str) -> str | None:
    """A batch of the files seen that the index does not hold as local: added with what an
    lstat tells (their headers are read later, by :func:`_describe`)."""
    found = db.execute(
        "SELECT s.filename, s.kind FROM temp.seen s WHERE s.filename > ? AND s.kind != ? AND"
        " NOT EXISTS (SELECT 1 FROM recordings r WHERE r.filename = s.filename"
        "   AND r.location & ?) ORDER BY s.filename LIMIT ?",
        (after, POSTERS, LOCAL, ADD_BATCH),
    ).fetchall()
    rows = [
        row_of(tree, kind, filename[: -len(SUFFIXES[kind])], headers=False)
        for filename, kind in found
    ]
    store.upsert(db, [row for row in rows if row is not None], LOCAL)
    return found[-1][0] if len(found) == ADD_BATCH else None


def _describe(db: sqlite3.Connection, tree: MediaTree) -> bool:
    """Read the headers of a batch of local files added without them; False when none is left.
    (A file gone since gives UNKNOWN: its row is dropped at the next start's check.)"""
    batch = store.undescribed(db, DESCRIBE_BATCH)
    found = []
    for filename, kind in batch:
        path = tree.final_path(kind, filename[: -len(SUFFIXES[kind])])
        info = read_info(kind, path)
        found.append((filename, info.duration, info.count))
    store.describe(db, found)
    return len(batch) == DESCRIBE_BATCH
