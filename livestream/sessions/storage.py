"""Writes to the media tree that fail for a reason other than a full disk.

A full disk (ENOSPC, EDQUOT) is the free-space reserve's business and ends a session with
``storage_full``. Any other error of a write is a storage *failure*: EIO from a failing device,
EROFS from a filesystem the kernel turned read-only, ENOENT from a media tree that was removed
(or a mount that went away). It ends the session whose write failed with ``storage_failed``.
"""

from __future__ import annotations

import errno
import os

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
