"""Writes to the media tree that fail for a reason other than a full disk, and how long they have.

A full disk (ENOSPC, EDQUOT) is the free-space reserve's business and ends a session with
``storage_full``. Any other error of a write is a storage *failure*: EIO from a failing device,
EROFS from a filesystem the kernel turned read-only, ENOENT from a media tree that was removed
(or a mount that went away). It ends the session whose write failed with ``storage_failed``,
and the registry keeps the fault (:class:`StorageState`) for ``/healthz`` until a session
publishes its files again: the one proof that a recording's writes, fsync and renames all work
once more. An empty file made in ``temp/`` proves less (a failing device may still take it).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

_log = Logger()

FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_full(error: OSError) -> bool:
    """True for the errors of a full disk or quota, which the reserve deals with."""
    return error.errno in FULL


def error_name(error: OSError) -> str:
    """The errno's symbolic name (``EIO``, ``EROFS``): what a client, a metric and ``/healthz``
    are told, never the path that the exception's text carries."""
    if error.errno is None:
        return "unknown"
    return errno.errorcode.get(error.errno, f"errno {error.errno}")


def describe(error: OSError) -> str:
    """The kind of failure for a person (``EROFS: read-only file system``), without the path."""
    name = error_name(error)
    if error.errno == errno.ENOENT:
        return f"{name}: the media directory is gone"
    if error.errno is None:
        return name
    return f"{name}: {os.strerror(error.errno).lower()}"


def failure_message(error: OSError) -> str:
    """What the client of a session that a storage failure ends is told."""
    if error.errno == errno.ENOENT:
        # Its files went with the tree: nothing is kept to speak of.
        return f"the server's storage failed ({describe(error)}); the recording ends"
    return (
        f"the server's storage failed ({describe(error)}); the recording ends, what reached "
        "the disk is kept"
    )


@dataclass(frozen=True)
class StorageFault:
    """Writes to the media tree have been failing since ``since`` (epoch seconds); ``error`` is
    the errno name of the latest failure."""

    error: str
    since: float


class StorageState:
    """Whether writing to the media tree is failing now: set by a failed write, cleared by a
    session that publishes its files after it."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.fault: StorageFault | None = None

    def failed(self, error: str) -> None:
        """A write failed with errno name ``error``; the fault dates from the first of a spell."""
        fault = self.fault
        if fault is None:
            _log.error("writes to the media tree fail ({error}): /healthz is degraded until a "
                       "session publishes its files again", error=error)  # fmt: skip
            self.fault = StorageFault(error, self._clock.seconds())
        elif fault.error != error:
            self.fault = StorageFault(error, fault.since)

    def recovered(self) -> None:
        """A session published its files: writes work again."""
        fault, self.fault = self.fault, None
        if fault is not None:
            _log.info("writes to the media tree work again after {seconds:.0f}s of {error}",
                      seconds=self._clock.seconds() - fault.since, error=fault.error)  # fmt: skip
