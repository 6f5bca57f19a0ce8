"""Retention: delete the oldest finished recordings when they are too old, take too much room in
total, or leave too little free space; all three are off by default.

Only ``video/`` and ``audio/`` (and a deleted video's poster) are touched: never ``temp/``, and
never a recording whose session is still live. Oldest means the epoch-ms in the name, then the
file's mtime; every deletion is logged with its reason.

With a bucket (``--store s3://``) the library is the bucket, so the age and total rules act on
its objects (the total is the whole bucket's, every node's recordings together), and the local
files not uploaded yet are left alone: they are on their way, and the only copy. ``--retain-free``
is refused with a bucket (daemon/options.py): deleting objects frees no local disk, and deleting the
files owed to the bucket would lose recordings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from livestream.bucket.library import BucketLibrary
from livestream.library.tree import POSTER_SUFFIX, MediaTree, is_recording_name
from livestream.wire.kinds import SUFFIXES, VIDEO, MediaKind

_log = Logger()

INTERVAL = 60.0
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
    total = sum(r.room for r in ordered)
    cutoff_ms = (now - policy.days * 86400) * 1000
    doomed = []
    for rec in ordered:
        if policy.days and rec.epoch_ms < cutoff_ms:
            why = AGE
        elif policy.total_bytes and total > policy.total_bytes:
            why = TOTAL
        elif policy.free_bytes and free < policy.free_bytes:
            why = FREE
        else:
            break
        doomed.append((rec, why))
        total -= rec.room
        free += rec.room
    return doomed


def scan(tree: MediaTree, skip: set[str]) -> list[Finished]:
    """The finished recordings in the media tree, but those named in ``skip`` (live sessions)."""
    found = []
    for kind in MediaKind:
        for name, entry in tree.scan(kind):
            if not is_recording_name(name) or name in skip:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            poster, poster_size = None, 0
            if kind == VIDEO:
                candidate = tree.poster_path(name)
                try:
                    poster_size = candidate.stat().st_size
                    poster = candidate
                except FileNotFoundError:
                    pass
            found.append(Finished(kind, name, Path(entry.path), st.st_size, st.st_mtime,
                                  poster, poster_size))  # fmt: skip
    return found


class Retention(Service):
    """Sweeps once at start and then every ``interval`` seconds."""

    def __init__(
        self,
        reactor,
        tree: MediaTree,
        policy: RetentionPolicy,
        live: Callable[[], Iterable[str]],
        *,
        interval: float = INTERVAL,
        free_bytes: Callable[[], int] | None = None,
        bucket: BucketLibrary | None = None,
    ) -> None:
        self._reactor = reactor
        self._tree = tree
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

    def _sweep(self) -> object:
        if self._bucket is None:
            return self.sweep()
        return self.sweep_bucket().addErrback(
            lambda f: _log.warn(
                "retention: the bucket cannot be swept now: {error}", error=f.value
            )  # fmt: skip
        )

    def sweep_bucket(self) -> Deferred[list[str]]:
        """Delete from the bucket what the policy says; return the objects' file names."""
        assert self._bucket is not None
        return ensureDeferred(self._sweep_bucket(self._bucket))

    async def _sweep_bucket(self, bucket: BucketLibrary) -> list[str]:
        recordings = [
            Finished(r.kind, r.name, Path(f"{r.name}{SUFFIXES[r.kind]}"), r.size, r.modified,
                     Path(f"{r.name}{POSTER_SUFFIX}") if r.poster_size else None, r.poster_size)
            for r in await bucket.removable()
        ]  # fmt: skip
        deleted = []
        for rec, why in plan(recordings, self.policy, self._reactor.seconds(), 0):
            try:
                await bucket.remove(rec.kind, rec.name, rec.poster is not None)
            except Exception as e:
                _log.error("retention: cannot delete {file} from the bucket: {error}",
                           file=rec.path.name, error=e)  # fmt: skip
                continue
            deleted += [p.name for p in (rec.path, rec.poster) if p is not None]
            self._deleted(rec, why)
        return deleted

    def sweep(self) -> list[Path]:
        """Delete what the policy says; return the files deleted (posters included)."""
        free = self._free() if self.policy.free_bytes else 0
        recordings = scan(self._tree, set(self._live()))
        deleted = []
        for rec, why in plan(recordings, self.policy, self._reactor.seconds(), free):
            for path in (rec.path, rec.poster):
                if path is None:
                    continue
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as e:
                    _log.error("retention: cannot delete {path}: {error}", path=path, error=e)
                    continue
                deleted.append(path)
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
