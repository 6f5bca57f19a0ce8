"""Running under systemd: sd_notify, the units, socket activation.

The notify module is tested with a fake socket and a Clock; the units with ``systemd-analyze
verify``; the real daemon with a notify socket this test binds, and under
``systemd-socket-activate`` (systemd's own tool for passing a listening socket), recording
through the inherited socket with a real WebSocket client.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from livestream.notify import STATUS_INTERVAL, Notifier, SystemdNotify, watchdog_interval


class FakeSocket:
    def __init__(self, error: OSError | None = None) -> None:
        self.sent: list[tuple[bytes, str | bytes]] = []
        self.error = error

    def sendto(self, data: bytes, address: str | bytes) -> int:
        if self.error is not None:
            raise self.error
        self.sent.append((data, address))
        return len(data)


class NotifierTests(unittest.SynchronousTestCase):
    def test_absent_variable_means_no_notifier(self) -> None:
        self.assertIsNone(Notifier.from_environment({}))
        self.assertIsNone(Notifier.from_environment({"NOTIFY_SOCKET": ""}))

    def test_path_and_abstract_addresses(self) -> None:
        path = Notifier.from_environment({"NOTIFY_SOCKET": "/run/systemd/notify"})
        self.addCleanup(path.close)
        self.assertEqual(path.address, "/run/systemd/notify")
        abstract = Notifier.from_environment({"NOTIFY_SOCKET": "@/org/freedesktop/notify/1"})
        self.addCleanup(abstract.close)
        self.assertEqual(abstract.address, b"\0/org/freedesktop/notify/1")

    def test_unknown_address_kind_is_refused(self) -> None:
        self.assertIsNone(Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"}))

    def test_fields_go_in_one_datagram(self) -> None:
        sock = FakeSocket()
        Notifier("/run/n", sock).send("READY=1", "STATUS=0 live sessions")
        self.assertEqual(sock.sent, [(b"READY=1\nSTATUS=0 live sessions", "/run/n")])

    def test_a_failed_send_is_logged_once_not_raised(self) -> None:
        notifier = Notifier("/run/gone", FakeSocket(ConnectionRefusedError(111, "refused")))
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        notifier.send("WATCHDOG=1")
        notifier.send("WATCHDOG=1")
        warnings = [e for e in logged if "cannot notify" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1, logged)

    def test_datagrams_reach_a_real_socket(self) -> None:
        """The real socket kind: an abstract unix datagram socket, as systemd binds."""
        name = f"\0livestream-test-{os.getpid()}".encode()
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(name)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name[1:].decode()})
        self.addCleanup(notifier.close)
        notifier.send("READY=1")
        self.assertEqual(receiver.recv(4096), b"READY=1")


class WatchdogIntervalTests(unittest.SynchronousTestCase):
    def test_half_of_watchdog_usec(self) -> None:
        self.assertEqual(watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42), 15.0)
        self.assertEqual(
            watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "42"}, 42), 1.0
        )

    def test_no_watchdog(self) -> None:
        self.assertIsNone(watchdog_interval({}, 42))
        self.assertIsNone(watchdog_interval({"WATCHDOG_USEC": "0"}, 42))
        self.assertIsNone(watchdog_interval({"WATCHDOG_USEC": "soon"}, 42))
        # Meant for another process (a parent that exec'd us keeps its own watchdog).
        self.assertIsNone(watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"}, 42))


class SystemdNotifyTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.sock = FakeSocket()
        self.live = 0

    def service(self, watchdog: float | None) -> SystemdNotify:
        return SystemdNotify(
            self.clock, Notifier("/n", self.sock), watchdog, lambda: f"{self.live} live"
        )

    def messages(self) -> list[list[str]]:
        sent = [data.decode().split("\n") for data, _ in self.sock.sent]
        self.sock.sent.clear()
        return sent

    def test_ready_watchdog_status_stopping(self) -> None:
        service = self.service(watchdog=1.5)
        service.startService()
        self.assertEqual(self.messages(), [["READY=1", "STATUS=0 live"]])
        self.clock.advance(1.5)
        self.assertEqual(self.messages(), [["WATCHDOG=1"]])
        self.live = 2
        self.clock.advance(1.5)
        self.assertEqual(self.messages(), [["WATCHDOG=1", "STATUS=2 live"]])
        self.clock.advance(1.5)
        self.assertEqual(self.messages(), [["WATCHDOG=1"]])
        service.stopService()
        self.assertEqual(self.messages(), [["STOPPING=1", "STATUS=stopping: 2 live"]])
        self.clock.advance(10)
        self.assertEqual(self.messages(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_without_watchdog_only_changed_status(self) -> None:
        service = self.service(watchdog=None)
        service.startService()
        self.assertEqual(self.messages(), [["READY=1", "STATUS=0 live"]])
        self.clock.advance(STATUS_INTERVAL * 3)
        self.assertEqual(self.messages(), [])
        self.live = 1
        self.clock.advance(STATUS_INTERVAL)
        self.assertEqual(self.messages(), [["STATUS=1 live"]])
        service.stopService()
        self.assertEqual(self.messages(), [["STOPPING=1", "STATUS=stopping: 1 live"]])
