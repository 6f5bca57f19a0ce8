"""The media tree: safe names, in-progress files in ``temp/``, one rename into place.

Nothing here trusts a client id as a path: names are built from a sanitised stem and a timestamp,
and every path handed out is a child of one of the three directories.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from livestream.wire.kinds import AUDIO, SUFFIXES, VIDEO, MediaKind

TEMP = "temp"
# A video's poster (a frame of it) is not a recording of its own: it lives beside the kinds.
POSTERS = "posters"
POSTER_SUFFIX = ".jpg"
POSTER_TYPE = "image/jpeg"
# The recordings index and the listing files made from it (livestream.library.index): a
# dot-name, so nothing that walks the tree takes it for media.
INDEX_DIR = ".index"
_SUFFIXES = {**SUFFIXES, POSTERS: POSTER_SUFFIX}

# What a live session keeps in temp/: the encoder's fragmented MP4 (playable up to its last
# fragment if the daemon dies; for H.264 from the client, written by the daemon), the faststart
# copy being made from it, the growing WAV, with --mux-audio the AAC track's own fragmented MP4,
# muxed into the video at publish; Opus from the client, kept as it came (a fragmented MP4) to
# be decoded into the WAV and copied into the video; and a poster being decoded.
VIDEO_STREAM = ".video.fmp4"
VIDEO_PART = ".video.part.mp4"
AUDIO_STREAM = ".audio.wav"
AAC_STREAM = ".audio.fmp4"
OPUS_STREAM = ".opus.fmp4"
POSTER_PART = ".poster.jpg"
TEMP_SUFFIXES = (VIDEO_STREAM, VIDEO_PART, AUDIO_STREAM, AAC_STREAM, OPUS_STREAM, POSTER_PART)
# An encoder that dies mid-session is replaced, and its successor writes a piece of its own:
# ``<name>+<ms><suffix>``, where ``ms`` is where the piece starts on the session's timeline (the
# first piece, from 0, is ``<name><suffix>``). The start in the name is what joins the pieces in
# time, at publish or after a crash; ``+`` is outside the safe alphabet of names.
PIECED = (VIDEO_STREAM, AAC_STREAM)
PIECE_MARK = "+"
_START = "[1-9][0-9]{0,11}"
_PIECE = re.compile(rf"^(.+)\+({_START})$")
_PIECE_START = re.compile(_START)
# The list of pieces handed to ffmpeg's concat demuxer while they are joined: a dot-name,
# never taken for a recording's file.
JOIN_LIST = ".ffconcat"

MAX_STEM_LENGTH = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*_[0-9]+$")


def safe_stem(client_id: str) -> str:
    """A file-name stem for an id: a small safe alphabet, no leading dot, bounded length."""
    stem = _UNSAFE.sub("_", client_id)[:MAX_STEM_LENGTH]
    if stem.startswith("."):
        stem = "_" + stem[1:]
    return stem or "_"


def is_recording_name(name: str) -> bool:
    """True for a ``<stem>_<epoch-ms>`` name this tree could have made."""
    return len(name) <= MAX_STEM_LENGTH + 21 and _NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class Piece:
    """One encoder's part of a session's stream: where it starts on the timeline, its file."""

    start_ms: int
    path: Path


@dataclass(frozen=True)
class Leftover:
    """The files a session left in ``temp/`` when the daemon died, by their temp suffix."""

    name: str
    paths: dict[str, Path]


class MediaTree:
    """The media tree under ``--media``: every path of a recording is handed out here.

    A tree, not a store: "store" is the bucket (``--store``, ``livestream.bucket``).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()
        self._reserved: set[str] = set()

    def dir(self, kind: str) -> Path:
        return self.root / kind

    def ensure(self) -> None:
        """Create the tree; raise OSError with the path if it cannot be made writable."""
        for kind in (VIDEO, AUDIO, TEMP, POSTERS):
            self.dir(kind).mkdir(parents=True, exist_ok=True)
            if not os.access(self.dir(kind), os.W_OK | os.X_OK):
                raise PermissionError(f"{self.dir(kind)} is not writable")

    def reserve(self, client_id: str, epoch_ms: int) -> str:
        """A name no other session, live or finished, uses: the millisecond moves on if taken."""
        stem = safe_stem(client_id)
        while True:
            name = f"{stem}_{epoch_ms}"
            if name not in self._reserved and not self._exists(name):
                self._reserved.add(name)
                return name
            epoch_ms += 1

    def release(self, name: str) -> None:
        self._reserved.discard(name)

    def _exists(self, name: str) -> bool:
        if any(self.final_path(kind, name).exists() for kind in MediaKind):
            return True
        return any(self.temp_path(name, suffix).exists() for suffix in TEMP_SUFFIXES)

    def probe(self) -> None:
        """Make and remove one empty file in ``temp/``: that a session could start here now.
        Raises the OSError that says why not (ENOENT: the tree is gone; EROFS; EIO). The
        dot-name is skipped by recovery and listings if the daemon dies in between."""
        fd, path = tempfile.mkstemp(prefix=".probe-", dir=self.dir(TEMP))
        os.close(fd)
        os.unlink(path)

    def free_bytes(self) -> int:
        """Space left for recordings (what an unprivileged writer may use)."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def temp_path(self, name: str, suffix: str) -> Path:
        return self.dir(TEMP) / f"{name}{suffix}"

    def piece_path(self, name: str, suffix: str, start_ms: int) -> Path:
        """The file of the piece of ``name``'s stream ``suffix`` that starts at ``start_ms``."""
        if start_ms <= 0:
            return self.temp_path(name, suffix)
        return self.dir(TEMP) / f"{name}{PIECE_MARK}{start_ms}{suffix}"

    def pieces(self, name: str, suffix: str) -> list[Piece]:
        """The pieces of ``name``'s stream ``suffix`` in ``temp/``, in timeline order (none
        when ``temp/`` itself is gone)."""
        found = []
        first = self.temp_path(name, suffix)
        prefix = f"{name}{PIECE_MARK}"
        try:
            entries = os.scandir(self.dir(TEMP))
        except FileNotFoundError:
            return []
        with entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.name.endswith(suffix):
                    start = entry.name[len(prefix) : -len(suffix)]
                    if _PIECE_START.fullmatch(start) and entry.is_file(follow_symlinks=False):
                        found.append(Piece(int(start), Path(entry.path)))
                elif entry.name == first.name:
                    found.append(Piece(0, first))
        return sorted(found, key=lambda piece: piece.start_ms)

    def drop_pieces(self, name: str, *suffixes: str) -> None:
        """Remove every piece of ``name``'s streams ``suffixes``."""
        for suffix in suffixes:
            for piece in self.pieces(name, suffix):
                piece.path.unlink(missing_ok=True)

    def join_list(self, name: str, suffix: str) -> Path:
        """Where the concat list of ``name``'s pieces of ``suffix`` is written (a dot-name)."""
        return self.dir(TEMP) / f".{name}{suffix}{JOIN_LIST}"

    def final_path(self, kind: str, name: str) -> Path:
        return self.dir(kind) / f"{name}{SUFFIXES[kind]}"

    def poster_path(self, name: str) -> Path:
        return self.dir(POSTERS) / f"{name}{POSTER_SUFFIX}"

    def save_poster(self, name: str, jpeg: bytes) -> None:
        """Write the poster of video ``name`` beside the other posters and rename it into place,
        so a poster is whole or absent. The dot-name of the part is never served or listed."""
        part = self.dir(POSTERS) / f".{name}{POSTER_SUFFIX}.part"
        try:
            with open(part, "wb") as f:
                f.write(jpeg)
            os.rename(part, self.poster_path(name))
        except OSError:
            part.unlink(missing_ok=True)
            raise

    def delete(self, kind: str, name: str) -> bool:
        """Remove a finished recording (and a video's poster); False if there was none."""
        try:
            os.unlink(self.final_path(kind, name))
        except FileNotFoundError:
            return False
        if kind == VIDEO:
            self.poster_path(name).unlink(missing_ok=True)
        return True

    def publish(self, src: Path, kind: str, name: str) -> str:
        """Move a finished temp file into place in one rename; return the listed file name."""
        dst = self.final_path(kind, name)
        os.rename(src, dst)
        return dst.name

    def listing(self) -> dict[str, list[str]]:
        """Every finished file, oldest first: what the uploader owes the bucket at its start.
        (The routes list the index, ``library.index``, not the tree.)"""
        return {
            kind: sorted((f"{name}{kind.suffix}" for name in self.scan(kind)), key=by_time)
            for kind in MediaKind
        }

    def scan(self, kind: str) -> Iterator[str]:
        """The recording names of the visible, well-named regular files of ``video/``,
        ``audio/`` or ``posters/`` (``<name><suffix>`` for that directory's suffix; not
        symlinks), read lazily: a directory of a million is never a list. None if the
        directory is missing; other errors of it (its permissions) are raised, for the caller
        to decide.

        The one walk of the finished files: the uploader's start and the index's check
        against the tree."""
        suffix = _SUFFIXES[kind]
        try:
            entries = os.scandir(self.dir(kind))
        except FileNotFoundError:
            return
        with entries:
            for entry in entries:
                if entry.name.endswith(suffix) and not entry.name.startswith("."):
                    name = entry.name[: -len(suffix)]
                    if is_recording_name(name) and entry.is_file(follow_symlinks=False):
                        yield name

    def leftovers(self) -> tuple[list[Leftover], list[Path]]:
        """What sessions left in ``temp/``, grouped by recording name, and any stranger files."""
        groups: dict[str, dict[str, Path]] = {}
        strangers: list[Path] = []
        for entry in sorted(os.scandir(self.dir(TEMP)), key=lambda e: e.name):
            suffix = next((s for s in TEMP_SUFFIXES if entry.name.endswith(s)), None)
            name = entry.name[: -len(suffix)] if suffix else ""
            piece = _PIECE.fullmatch(name) if suffix in PIECED else None
            if piece is not None:
                name = piece.group(1)
            if suffix is None or not is_recording_name(name) or not entry.is_file():
                if not entry.name.startswith("."):
                    strangers.append(Path(entry.path))
                continue
            # A stream in pieces is under its suffix by one of them (``pieces`` has them all).
            groups.setdefault(name, {}).setdefault(suffix, Path(entry.path))
        return [Leftover(name, paths) for name, paths in groups.items()], strangers


def by_time(filename: str) -> tuple[str, str]:
    """The seed listing's order: the epoch-ms in the name, then the stem."""
    stem = filename.rsplit(".", 1)[0]
    head, _, stamp = stem.rpartition("_")
    return (stamp.rjust(16, "0"), head)
