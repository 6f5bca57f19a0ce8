"""A finished recording as ``GET /api/recordings`` describes it, wherever it is kept: its URL,
its poster's, when it began (the epoch-ms of its name), and what its headers say."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from livestream.library.mediainfo import Info
from livestream.library.store import LOCAL, STORED, Row
from livestream.library.tree import POSTER_SUFFIX, POSTERS
from livestream.wire.kinds import AUDIO, SUFFIXES, VIDEO

URL_PREFIX = "/recordings"
# What a recording's count is called, in the details and in an object's metadata.
# The count a recording's details give, by kind; looked up by a kind or a plain kind string
# (an object key's or a metadata's).
COUNT_FIELDS: dict[str, str] = {VIDEO: "frames", AUDIO: "samples"}


def iso_utc(seconds: float) -> str:
    """ISO 8601 in UTC with milliseconds: ``2024-11-24T15:33:20.000Z``."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def recording_url(kind: str, name: str) -> str:
    return f"{URL_PREFIX}/{kind}/{name}{SUFFIXES[kind]}"


def poster_url(name: str) -> str:
    return f"{URL_PREFIX}/{POSTERS}/{name}{POSTER_SUFFIX}"


def regular_file(path: Path) -> os.stat_result | None:
    """The stat of ``path`` if it is a regular file itself (not a symlink to one)."""
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def describe(
    kind: str, name: str, size: int, created: float, info: Info, poster: bool
) -> dict[str, object]:
    """One entry of ``GET /api/recordings``, wherever the recording is kept."""
    return {
        "kind": kind,
        "name": f"{name}{SUFFIXES[kind]}",
        "size": size,
        "created": iso_utc(created),
        "duration": info.duration,
        COUNT_FIELDS[kind]: info.count,
        "url": recording_url(kind, name),
        "poster": poster_url(name) if kind == VIDEO and poster else None,
    }


LOCATIONS = {LOCAL: "local", STORED: "bucket", LOCAL | STORED: "both"}


def entry(row: Row) -> dict[str, object]:
    """A row of the index as a page of the details route lists it."""
    return describe(
        row.kind, row.name, row.size, row.created, Info(row.duration, row.count), bool(row.poster)
    )


def full_entry(row: Row) -> dict[str, object]:
    """One recording's own details: its entry, and the client id its name shows and where it
    is kept (``local``, ``bucket`` or ``both``)."""
    return {**entry(row), "client": row.stem, "location": LOCATIONS.get(row.location, "local")}


def created_at(name: str, mtime: float) -> float:
    """When recording began: the epoch-ms in its name, or ``mtime`` (the file's, or the
    object's) if that is absurd."""
    try:
        seconds = int(name.rpartition("_")[2]) / 1000
        datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return mtime
    return seconds
