"""ffmpeg as a child process: find it, spawn it, feed it, and learn how it ended."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IPushProducer, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger()

STDERR_TAIL_LINES = 20
COMMON_ARGS = ("-hide_banner", "-nostats", "-loglevel", "error", "-y")


class FFmpegUnusable(Exception):
    """ffmpeg cannot be found or cannot encode H.264; the message says how to fix it."""


@dataclass(frozen=True)
class FFmpegResult:
    exit_code: int | None
    signal: int | None
    stderr_tail: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        how = f"signal {self.signal}" if self.signal else f"exit status {self.exit_code}"
        return f"ffmpeg ended with {how}: {self.stderr_tail or '(no output)'}"


class ChildPipes(Protocol):
    """A running child's transport as used here: Twisted's ``Process`` has all of it, but
    ``IProcessTransport``, the type a ProcessProtocol's transport has, declares neither the
    consumer half (a producer on stdin) nor pausing and resuming what the child writes."""

    def write(self, data: bytes) -> None: ...
    def closeStdin(self) -> None: ...
    def signalProcess(self, signalID: str | int) -> None: ...
    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...


class FFmpegProcess(ProcessProtocol):
    """One ffmpeg run. ``ended`` fires with an :class:`FFmpegResult` whatever way it exits."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.ended: Deferred[FFmpegResult] = Deferred()
        self.exited = False
        self._tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._partial = b""

    def errReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-4096:]
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._tail.append(line)
                _log.debug("ffmpeg {label}: {line}", label=self.label, line=line)

    def outReceived(self, data: bytes) -> None:
        """ffmpeg writes its output to files; anything on stdout is ignored."""

    def processEnded(self, reason: Failure) -> None:
        self.exited = True
        if self._partial:
            self.errReceived(b"\n")
        value = reason.value
        exit_code = 0 if isinstance(value, ProcessDone) else getattr(value, "exitCode", None)
        result = FFmpegResult(exit_code, getattr(value, "signal", None), "\n".join(self._tail))
        self.ended.callback(result)


def pipes(proto: ProcessProtocol) -> ChildPipes:
    """The transport of a spawned child: the one place it is seen as what it is (ChildPipes)."""
    if proto.transport is None:
        raise RuntimeError("the process has not been spawned")
    return cast(ChildPipes, proto.transport)


def spawn(
    reactor: IReactorProcess,
    executable: str,
    args: Sequence[str],
    label: str,
    *,
    proto: FFmpegProcess | None = None,
    read_fds: Sequence[int] = (),
) -> FFmpegProcess:
    """Start ffmpeg with ``args``; its stdin stays open for the caller to write to.

    ``proto`` replaces the plain :class:`FFmpegProcess` when the caller reads what ffmpeg
    writes; ``read_fds`` are further pipes (``pipe:3``) ffmpeg writes to and ``proto`` reads.
    """
    proto = proto if proto is not None else FFmpegProcess(label)
    argv = [executable, *COMMON_ARGS, *args]
    fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
    fds.update({fd: "r" for fd in read_fds})
    reactor.spawnProcess(proto, executable, argv, env=_child_env(), childFDs=fds)
    return proto


def run(
    reactor: IReactorProcess, executable: str, args: Sequence[str], label: str
) -> Deferred[FFmpegResult]:
    """Run a one-shot ffmpeg (no input on stdin) to completion."""
    proto = spawn(reactor, executable, args, label)
    pipes(proto).closeStdin()
    return proto.ended


def end_input(clock: IReactorTime, proto: FFmpegProcess, grace: float) -> Deferred[FFmpegResult]:
    """Close ffmpeg's stdin so it finishes its file; only if it hangs past ``grace`` kill it."""
    transport = pipes(proto)
    transport.unregisterProducer()
    transport.closeStdin()
    if proto.exited:
        return proto.ended

    def escalate(signal_name: str, then: float | None) -> None:
        _log.warn(
            "ffmpeg {label} did not finish within its grace period; sending {signal}",
            label=proto.label,
            signal=signal_name,
        )
        try:
            transport.signalProcess(signal_name)
        except ProcessExitedAlready:
            return
        if then is not None:
            timers.append(clock.callLater(then, escalate, "KILL", None))

    timers = [clock.callLater(grace, escalate, "TERM", 5.0)]

    def cancel_timers(result: FFmpegResult) -> FFmpegResult:
        for timer in timers:
            if timer.active():
                timer.cancel()
        return result

    proto.ended.addBoth(cancel_timers)
    return proto.ended


def _child_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "FONTCONFIG_FILE")
    return {k: v for k, v in os.environ.items() if k in keep}


def find(explicit: str | None) -> str:
    """The ffmpeg to use: ``--ffmpeg``, else one on PATH that has libx264, else imageio-ffmpeg's.

    Raises :class:`FFmpegUnusable` with one line a user can act on.
    """
    if explicit:
        path = shutil.which(explicit)
        if path is None:
            raise FFmpegUnusable(
                f"--ffmpeg {explicit}: no such executable; give the path of an ffmpeg with "
                "libx264, or leave --ffmpeg out to use the one on PATH or imageio-ffmpeg's"
            )
        try:
            _check(path)
        except FFmpegUnusable as e:
            raise FFmpegUnusable(f"--ffmpeg {explicit} is not a usable ffmpeg: {e}") from None
        return path
    candidates = [p for p in (shutil.which("ffmpeg"), _bundled()) if p]
    problems = []
    for path in candidates:
        try:
            _check(path)
        except FFmpegUnusable as e:
            problems.append(str(e))
        else:
            return path
    detail = "; ".join(problems) if problems else "none on PATH and imageio-ffmpeg is not installed"
    raise FFmpegUnusable(
        f"no usable ffmpeg ({detail}); install the project (pip install -e .) to get "
        "imageio-ffmpeg's, install one with libx264, or pass --ffmpeg PATH"
    )


def _bundled() -> str | None:
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        return None


def _check(path: str) -> None:
    try:
        out = subprocess.run(
            [path, "-hide_banner", "-encoders"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FFmpegUnusable(f"{path} cannot be run ({e})") from None
    if out.returncode != 0:
        raise FFmpegUnusable(f"{path} cannot be run (exit status {out.returncode})")
    if b"libx264" not in out.stdout:
        raise FFmpegUnusable(f"{path} has no libx264 encoder")
