"""Disks that fail: a small real filesystem, one turned read-only under a live daemon, and a
write that fails where the recorder makes it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from twisted.trial.unittest import SkipTest


def _mount(*args: str) -> None:
    """Run mount(8) with ``args``; skip the test where mounting is not allowed."""
    done = subprocess.run(["mount", *args], capture_output=True, check=False)
    if done.returncode != 0:
        raise SkipTest(f"cannot mount here: {done.stderr.decode().strip()}")


def small_disk(testcase, mib: int) -> Path:
    """A fresh tmpfs of ``mib`` MiB (needs root; the test is skipped otherwise), unmounted when
    the test ends; returns the media tree's path on it (not yet made)."""
    path = Path(testcase.mktemp()).absolute()
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        raise SkipTest("mounting a small tmpfs needs root")
    _mount("-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", os.fspath(path))
    testcase.addCleanup(subprocess.run, ["umount", "-l", os.fspath(path)], check=False)
    return path / "media"


def turn_read_only(testcase, path: Path) -> None:
    """Make everything under ``path`` read-only for whatever opens, creates or renames a file
    there from now on (EROFS, from the kernel), as a filesystem the kernel turned read-only is.

    ``mount -o remount,ro`` refuses (EBUSY, tried here) while any file on it is open for
    writing, which a live daemon always has (its encoder's output, the WAV, the index); so
    ``path`` is bind-mounted over itself and that new mount, which has no writer yet, is made
    read-only. Files open before keep being written, as on a filesystem that fails only its
    new work; their write errors are what :class:`FailingWrites` stands for.
    Undone by :func:`writable_again` or when the test ends."""
    _mount("--bind", os.fspath(path), os.fspath(path))
    testcase.addCleanup(subprocess.run, ["umount", os.fspath(path)], check=False)
    _mount("-o", "remount,bind,ro", os.fspath(path))


def writable_again(path: Path) -> None:
    """Undo :func:`turn_read_only`: the writable mount beneath shows again."""
    subprocess.run(["umount", os.fspath(path)], check=True)


class FailingWrites:
    """A recorder's file whose next write fails with ``code`` (say EIO) and whose later writes
    go through: no real device can be made to fail on demand here, so the fault is injected
    where the recorder writes, with the error the kernel would give. Everything else is the
    real file's."""

    def __init__(self, real, code: int) -> None:
        self._real = real
        self._code: int | None = code

    def write(self, data) -> int:
        if self._code is not None:
            code, self._code = self._code, None
            raise OSError(code, os.strerror(code), self._real.name)
        return self._real.write(data)

    def __getattr__(self, name: str):
        return getattr(self._real, name)
