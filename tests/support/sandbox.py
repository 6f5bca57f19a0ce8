"""Run a command under the seccomp rules livestream.service asks systemd for, without systemd.

    python -m tests.support.sandbox --allow read,write,... [--mdwe]
        [--families AF_INET,AF_UNIX] -- CMD...

systemd turns ``SystemCallFilter=``, ``SystemCallErrorNumber=EPERM``,
``MemoryDenyWriteExecute=yes`` and ``RestrictAddressFamilies=`` into seccomp filters loaded just
before it execs the service; this does the same with libseccomp (which systemd uses too), so a
test can run the real daemon, and the ffmpeg it starts, under them. The filters mirror systemd's
(src/shared/seccomp-util.c): an allow-list whose other calls fail with EPERM; mmap of memory both
writable and executable, and mprotect/pkey_mprotect adding PROT_EXEC, fail with EPERM; socket()
of another address family fails with EAFNOSUPPORT. Filters stay across fork and exec.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import mmap
import os
import socket
import sys

ALLOW = 0x7FFF0000
MASKED_EQ, EQ, LT, GT = 7, 4, 2, 6
SHM_EXEC = 0o100000


def _errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Filter:
    def __init__(self, lib: ctypes.CDLL, default_action: int) -> None:
        self._lib = lib
        self._ctx = lib.seccomp_init(default_action)
        if not self._ctx:
            raise OSError("seccomp_init failed")

    def rule(self, action: int, name: str, *cmp: tuple[int, int, int, int]) -> None:
        nr = self._lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:  # not a system call of this architecture (setuid32 on x86-64)
            return
        array = (_ArgCmp * max(len(cmp), 1))(*(_ArgCmp(*c) for c in cmp))
        rc = self._lib.seccomp_rule_add_array(self._ctx, action, nr, len(cmp), array)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add {name}: {os.strerror(-rc)}")

    def load(self) -> None:
        rc = self._lib.seccomp_load(self._ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")
        self._lib.seccomp_release(self._ctx)


def _libseccomp() -> ctypes.CDLL:
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp),
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def apply(allow: list[str], mdwe: bool, families: list[int]) -> None:
    lib = _libseccomp()
    if mdwe:
        wx = mmap.PROT_WRITE | mmap.PROT_EXEC
        memory = _Filter(lib, ALLOW)
        memory.rule(_errno(errno.EPERM), "mmap", (2, MASKED_EQ, wx, wx))
        for name in ("mprotect", "pkey_mprotect"):
            memory.rule(_errno(errno.EPERM), name, (2, MASKED_EQ, mmap.PROT_EXEC, mmap.PROT_EXEC))
        memory.rule(_errno(errno.EPERM), "shmat", (2, MASKED_EQ, SHM_EXEC, SHM_EXEC))
        memory.load()
    if families:
        # As systemd does: refuse below the lowest, above the highest, and each gap between.
        refused = _Filter(lib, ALLOW)
        nope = _errno(errno.EAFNOSUPPORT)
        low, high = min(families), max(families)
        refused.rule(nope, "socket", (0, LT, low, 0))
        refused.rule(nope, "socket", (0, GT, high, 0))
        for family in range(low + 1, high):
            if family not in families:
                refused.rule(nope, "socket", (0, EQ, family, 0))
        refused.load()
    # Last, as systemd does: it forbids seccomp() itself, and so any filter after it.
    allowed = _Filter(lib, _errno(errno.EPERM))
    for name in allow:
        allowed.rule(ALLOW, name)
    allowed.load()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.sandbox")
    parser.add_argument("--allow", required=True, help="comma-separated system call names")
    parser.add_argument("--mdwe", action="store_true", help="as MemoryDenyWriteExecute=yes")
    parser.add_argument("--families", default="", help="as RestrictAddressFamilies=")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    families = [getattr(socket, name) for name in args.families.split(",") if name]
    apply(args.allow.split(","), args.mdwe, families)
    os.execv(args.command[0], args.command)


if __name__ == "__main__":
    main(sys.argv[1:])
