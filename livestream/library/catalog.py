"""The details of every finished recording, as ``GET /api/recordings`` answers them.

Read from the media tree on each request (a listing is a directory scan and one stat per file;
durations and counts come from :mod:`livestream.library.mediainfo`, cached while a file is
unchanged). Only what the seed listing would show is described: visible, well-named regular
files of ``video/`` and ``audio/``; symlinks are not followed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from livestream.library.mediainfo import Info, InfoCache
from livestream.library.tree import POSTER_SUFFIX, POSTERS, MediaTree, is_recording_name
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


# (created, file name, entry): what newest_first sorts.
Entry = tuple[float, str, dict[str, object]]


def newest_first(entries: list[Entry]) -> list[dict[str, object]]:
    entries.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [doc for _, _, doc in entries]


class Catalog:
    def __init__(self, tree: MediaTree) -> None:
        self._tree = tree
        self._info = InfoCache()

    def details(self) -> list[dict[str, object]]:
        """Every finished recording, newest first."""
        return newest_first(self.entries())

    def entries(self) -> list[Entry]:
        """Every finished recording in the media tree, unsorted."""
        posters = {name for name, _ in self._files(POSTERS)}
        found: list[Entry] = []
        seen: set[Path] = set()
        for kind, suffix in SUFFIXES.items():
            for name, dirent in self._files(kind):
                path = Path(dirent.path)
                try:
                    st = dirent.stat(follow_symlinks=False)
                except OSError:
                    continue  # deleted since the scan
                seen.add(path)
                info = self._info.get(path, st.st_mtime_ns, st.st_size)
                created = created_at(name, st.st_mtime)
                doc = describe(kind, name, st.st_size, created, info, name in posters)
                found.append((created, f"{name}{suffix}", doc))
        self._info.prune(seen)
        return found

    def _files(self, kind: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """(name, entry) of the well-named regular files (not symlinks) of one directory; none
        if it cannot be read."""
        try:
            found = self._tree.scan(kind)
        except OSError:
            return
        for name, entry in found:
            if is_recording_name(name) and entry.is_file(follow_symlinks=False):
                yield name, entry


def created_at(name: str, mtime: float) -> float:
    """When recording began: the epoch-ms in its name, or ``mtime`` (the file's, or the
    object's) if that is absurd."""
    try:
        seconds = int(name.rpartition("_")[2]) / 1000
        datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return mtime
    return seconds
