"""Telling systemd how the daemon is doing: the sd_notify(3) protocol, without libsystemd.

The protocol is one datagram of ``KEY=value`` lines to the unix socket named by
``$NOTIFY_SOCKET``; that is all ``Type=notify`` and ``WatchdogSec=`` need, so a dependency on
libsystemd (and its C build) would not earn its place. Outside systemd the variable is absent and
nothing here runs.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

_log = Logger()

# Without a watchdog, how often a changed STATUS= line is sent.
STATUS_INTERVAL = 5.0


class Notifier:
    """Sends sd_notify messages to one socket; a message that cannot be sent is logged, never
    raised: the daemon records whether or not systemd hears about it."""

    def __init__(self, address: str | bytes, sock: socket.socket | None = None) -> None:
        self.address = address
        self._sock = sock if sock is not None else _datagram_socket()
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Notifier | None:
        """The notifier ``$NOTIFY_SOCKET`` asks for, or None outside systemd (or for a socket
        kind this module does not speak, which is logged)."""
        path = environ.get("NOTIFY_SOCKET", "")
        if not path:
            return None
        if path.startswith("@"):
            # An abstract socket: its name starts with a NUL byte instead of the '@'.
            return cls(b"\0" + path[1:].encode())
        if path.startswith("/"):
            return cls(path)
        _log.warn("NOTIFY_SOCKET={path!r} is neither a path nor '@name'; not notifying", path=path)
        return None

    def send(self, *fields: str) -> None:
        """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one message."""
        message = "\n".join(fields).encode()
        try:
            self._sock.sendto(message, self.address)
        except OSError as e:
            # Once per daemon: a gone notify socket would otherwise log every watchdog tick.
            if not self._failed:
                self._failed = True
                _log.warn("cannot notify systemd at {address!r}: {error}", address=self.address,
                          error=e.strerror or e)  # fmt: skip

    def close(self) -> None:
        self._sock.close()


def _datagram_socket() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    # A full receive queue drops a message rather than stalling the reactor.
    sock.setblocking(False)
    return sock


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3)
    advises, or None when no watchdog is asked of this process."""
    watched = environ.get("WATCHDOG_PID")
    if watched is not None and watched != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class SystemdNotify(Service):
    """READY=1 when started, STOPPING=1 when stopped, a STATUS= line, and the watchdog.

    Added last to the daemon's MultiService: children start in order, and the listeners raise
    SystemExit from their start when they cannot listen, so READY=1 goes out only once every
    listener listens. Children stop in reverse order, so STOPPING=1 goes out first, while the
    sessions are being finished. The watchdog ticks from a LoopingCall in the reactor: a wedged
    reactor stops the pings, and systemd restarts the daemon.
    """

    def __init__(
        self,
        clock: IReactorTime,
        notifier: Notifier,
        watchdog: float | None,
        status: Callable[[], str],
    ) -> None:
        self._notifier = notifier
        self._watchdog = watchdog
        self._status = status
        self._last_status = ""
        self._tick = LoopingCall(self._ping)
        self._tick.clock = clock

    def startService(self) -> None:
        super().startService()
        self._last_status = self._status()
        self._notifier.send("READY=1", f"STATUS={self._last_status}")
        self._tick.start(self._watchdog or STATUS_INTERVAL, now=False)

    def _ping(self) -> None:
        fields = ["WATCHDOG=1"] if self._watchdog else []
        status = self._status()
        if status != self._last_status:
            self._last_status = status
            fields.append(f"STATUS={status}")
        if fields:
            self._notifier.send(*fields)

    def stopService(self) -> None:
        super().stopService()
        # systemd watches a service only while it runs: from STOPPING=1 (or the SIGTERM) on, the
        # stop is bounded by TimeoutStopSec= instead, however long the sessions take to finish.
        self._tick.stop()
        self._notifier.send("STOPPING=1", f"STATUS=stopping: {self._status()}")
