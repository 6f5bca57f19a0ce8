"""Is the daemon able to record? What ``GET /healthz`` answers, for a load balancer or systemd.

Each check is cheap enough to run on every probe: no ffmpeg is spawned (it was run once at start,
when it was chosen; here it must still be there and executable), the media tree is proved
writable by making and removing one empty file in ``temp/``, and free space is one statvfs.

The recordings index says its state (``opening``, ``reconciling``, ``rebuilding``, ``ready``)
and how many recordings it holds; one that could not be kept on disk (held in memory) makes the
status ``degraded``. So does a write of a session that failed for a reason other than a full disk
(EIO, EROFS, the tree gone: ``storage``, with the errno's name and since when), until a session
publishes its files again. With a bucket, its figures are added: whether it answered the last
background check, and the uploads owed and failed. A bucket out of reach does not fail the
probe: recording goes on to the local disk and the uploads wait, so the status is ``degraded``
(still 200) rather than ``fail``.
"""

from __future__ import annotations

import shutil
from typing import Protocol

from livestream.library.catalog import iso_utc
from livestream.library.tree import MediaTree

OK = "ok"
DEGRADED = "degraded"
FAIL = "fail"


class StoreFigures(Protocol):
    """What the bucket's health is judged by; read only (the store's watch keeps them)."""

    @property
    def reachable(self) -> bool | None: ...
    @property
    def failures(self) -> int: ...
    @property
    def backlog(self) -> int: ...


class Fault(Protocol):
    @property
    def error(self) -> str: ...
    @property
    def since(self) -> float: ...


class StorageFigures(Protocol):
    """Whether the sessions' writes to the media tree are failing (``sessions.storage``)."""

    @property
    def fault(self) -> Fault | None: ...


class IndexFigures(Protocol):
    """What the recordings index says of itself (``library.index``)."""

    state: str
    in_memory: bool
    totals: dict[tuple[str, int], tuple[int, int]]


class Health:
    """``ffmpeg`` is the encoder the daemon was started with; ``min_free_bytes`` the reserve
    below which new sessions are refused (0: no reserve); ``storage`` whether the sessions'
    writes are failing (the registry's)."""

    def __init__(
        self,
        tree: MediaTree,
        ffmpeg: str,
        min_free_bytes: int = 0,
        objects: StoreFigures | None = None,
        index: IndexFigures | None = None,
        storage: StorageFigures | None = None,
    ) -> None:
        self._tree = tree
        self._storage = storage
        self._index = index
        self._ffmpeg = ffmpeg
        self._min_free = min_free_bytes
        self._objects = objects

    def status(self) -> tuple[str, dict[str, object]]:
        """(``ok``, ``degraded`` or ``fail``, the checks by name)."""
        ok, checks = self.check()
        degraded = False
        index = self._index
        if index is not None:
            # An index being checked or rebuilt still answers; one only in memory is lost at
            # the next start (rebuilt then, at a cost): worth a look, not a failed probe.
            checks["index"] = {
                "state": index.state,
                "recordings": sum(n for n, _ in index.totals.values()),
                "in_memory": index.in_memory,
            }
            degraded = index.in_memory
        if self._storage is not None:
            # A write that failed (EIO, EROFS): worth a look while it lasts. The probe above
            # says whether new files can be made at all (if not, the status is fail).
            fault = self._storage.fault
            checks["storage"] = (
                {"failing": False}
                if fault is None
                else {"failing": True, "error": fault.error, "since": iso_utc(fault.since)}
            )
            degraded = degraded or fault is not None
        if not ok:
            return FAIL, checks
        objects = self._objects
        if objects is not None:
            checks["store_reachable"] = objects.reachable
            checks["upload_backlog"] = objects.backlog
            checks["upload_failures"] = objects.failures
            degraded = degraded or objects.reachable is False
        return (DEGRADED if degraded else OK), checks

    def check(self) -> tuple[bool, dict[str, object]]:
        """(every check of the local recording path passes, the checks by name)."""
        free = self._free_bytes()
        checks: dict[str, object] = {
            "ffmpeg": self._ffmpeg_usable(),
            "media_writable": self._media_writable(),
            "free_bytes": free,
            "min_free_bytes": self._min_free,
        }
        enough = free is not None and free >= self._min_free
        return bool(checks["ffmpeg"] and checks["media_writable"] and enough), checks

    def _ffmpeg_usable(self) -> bool:
        return shutil.which(self._ffmpeg) is not None

    def _media_writable(self) -> bool:
        try:
            self._tree.probe()
        except OSError:
            return False
        return True

    def _free_bytes(self) -> int | None:
        try:
            return self._tree.free_bytes()
        except OSError:
            return None
