"""A recording file as a row of the index, from what the tree or the bucket tells of it."""

from __future__ import annotations

from livestream.library.catalog import created_at, regular_file
from livestream.library.mediainfo import UNKNOWN, Info, read_info
from livestream.library.store import LOCAL, Row
from livestream.library.tree import MediaTree, by_time
from livestream.wire.kinds import SUFFIXES, VIDEO


def row_of(tree: MediaTree, kind: str, name: str, *, headers: bool = True) -> Row | None:
    """A local file's row, from an lstat (and its poster's) and, with ``headers``, a read of
    its headers; None if it is not there as a regular file."""
    path = tree.final_path(kind, name)
    st = regular_file(path)
    if st is None:
        return None
    info = read_info(kind, path) if headers else UNKNOWN
    poster = regular_file(tree.poster_path(name)) if kind == VIDEO else None
    return make_row(
        kind, name, st.st_size, st.st_mtime, info, poster.st_size if poster else None, LOCAL,
        described=headers,
    )  # fmt: skip


def make_row(
    kind: str,
    name: str,
    size: int,
    mtime: float,
    info: Info,
    poster_size: int | None,
    place: int,
    *,
    described: bool,
) -> Row:
    """A row at ``place`` (LOCAL or STORED), its poster there if ``poster_size`` is not None."""
    stem, _, _ = name.rpartition("_")
    stamp, _ = by_time(f"{name}{SUFFIXES[kind]}")
    duration, count = (info.duration, info.count) if described else (None, None)
    return Row(
        f"{name}{SUFFIXES[kind]}", kind, stem, stamp, created_at(name, mtime), size, mtime,
        duration, count, 0 if poster_size is None else place, poster_size or 0, place,
    )  # fmt: skip
