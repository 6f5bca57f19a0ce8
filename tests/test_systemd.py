"""Running under systemd: sd_notify, the units, socket activation.

The notify module is tested with a fake socket and a Clock; the units with ``systemd-analyze
verify``; the real daemon with a notify socket this test binds, and under
``systemd-socket-activate`` (systemd's own tool for passing a listening socket), recording
through the inherited socket with a real WebSocket client.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from livestream.ops.notify import STATUS_INTERVAL, Notifier, SystemdNotify, watchdog_interval
from tests.support.daemon import (
    FPS,
    ROOT,
    TWISTD,
    Daemon,
    DaemonCase,
    audio_chunks,
    ended,
    how_it_ended,
    last_line,
    run_twistd,
    stop,
)
from tests.support.media import jpeg_frames
from tests.support.ports import free_port, refuses
from tests.support.processes import children
from tests.support.tls import server_files, trusting
from tests.support.waiting import sleep
from tests.support.websocket import (
    CLOSE_MSG,
    connect_msg,
    open_client,
    record,
    stream_msg,
    stream_without_close,
)

UNITS = ROOT / "systemd"
ANALYZE = shutil.which("systemd-analyze")
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")
# Where livestream.service expects the installed venv (README, "Running it as a service").
INSTALLED_TWISTD = "/opt/livestream/.venv/bin/twistd"


def exec_start() -> list[str]:
    """livestream.service's ExecStart= as an argv (continuation lines joined)."""
    text = (UNITS / "livestream.service").read_text().replace("\\\n", " ")
    lines = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0].removeprefix("ExecStart="))


def unit_settings() -> dict[str, list[str]]:
    """livestream.service's [Service] settings: key -> its values, in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    text = (UNITS / "livestream.service").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def syscall_groups() -> dict[str, list[str]]:
    """systemd's system call groups (``@system-service``...), each with its names and groups."""
    out = subprocess.run(
        [ANALYZE, "syscall-filter"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith("@"):
            members = groups[line.strip()] = []
        elif line.startswith(" ") and not line.strip().startswith("#") and line.strip():
            members.append(line.strip())
    return groups


def sandbox_launcher(mdwe: bool | None = None) -> tuple[str, ...]:
    """``python -m tests.support.sandbox ...`` with the seccomp rules of livestream.service
    (``mdwe`` overrides its MemoryDenyWriteExecute=)."""
    settings = unit_settings()
    groups = syscall_groups()

    def expand(names: str) -> set[str]:
        calls: set[str] = set()
        for name in names.split():
            calls |= expand(" ".join(groups[name])) if name.startswith("@") else {name}
        return calls

    filters = settings["SystemCallFilter"]
    assert not filters[0].startswith("~"), "the first SystemCallFilter= is an allow-list"
    allowed = expand(filters[0])
    for denied in filters[1:]:
        allowed -= expand(denied.removeprefix("~"))
    assert settings["SystemCallErrorNumber"] == ["EPERM"], settings["SystemCallErrorNumber"]
    launcher = [sys.executable, "-m", "tests.support.sandbox", "--allow", ",".join(sorted(allowed))]
    if mdwe is None:
        mdwe = settings.get("MemoryDenyWriteExecute") == ["yes"]
    if mdwe:
        launcher.append("--mdwe")
    families = settings["RestrictAddressFamilies"][0].split()
    return (*launcher, "--families", ",".join(families), "--")


def unit_listen() -> str:
    """The --listen description livestream.service passes: the one the tests run."""
    argv = exec_start()
    return argv[argv.index("--listen") + 1]


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


class UnitFileTests(unittest.TestCase):
    def verify(self, edit=lambda text: text) -> subprocess.CompletedProcess[str]:
        """``systemd-analyze verify`` of copies of both units, with ``edit`` applied to the
        service's text.

        It checks that ExecStart's program exists, and /opt/livestream is not installed here: the
        copies run this venv's twistd instead.
        """
        if ANALYZE is None:
            raise unittest.SkipTest("systemd-analyze is not installed (Debian package systemd)")
        copies = Path(self.mktemp())
        copies.mkdir()
        service = (UNITS / "livestream.service").read_text().replace(INSTALLED_TWISTD, TWISTD)
        (copies / "livestream.service").write_text(edit(service))
        shutil.copy(UNITS / "livestream.socket", copies)
        return subprocess.run(
            [ANALYZE, "verify", "--man=no", "livestream.service", "livestream.socket"],
            cwd=copies, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def test_units_verify(self) -> None:
        """systemd-analyze accepts both units without a word; only ExecStart's path differs."""
        self.assertEqual(exec_start()[0], INSTALLED_TWISTD)
        done = self.verify()
        # Unknown keys and unparsable values are only warnings (exit 0): any output fails too.
        self.assertEqual((done.returncode, done.stdout + done.stderr), (0, ""))

    def test_a_unit_error_is_caught(self) -> None:
        """The check above can fail: a misspelt setting is reported."""
        done = self.verify(lambda text: text.replace("KillMode=", "KilMode="))
        self.assertIn("Unknown key 'KilMode'", done.stderr)

    def test_the_service_listens_on_the_socket_unit(self) -> None:
        self.assertEqual(unit_listen(), "systemd:domain=INET:index=0")
        socket_unit = (UNITS / "livestream.socket").read_text()
        # domain=INET must match the socket's family: an IPv4 address, not a bare port (which
        # makes systemd bind a dual-stack IPv6 socket).
        self.assertIn("\nListenStream=0.0.0.0:8080\n", socket_unit)


def socket_activate(port: int) -> tuple[str, ...]:
    """systemd-socket-activate on a loopback ``port``: it passes the socket as systemd passes
    livestream.socket's (fd 3, LISTEN_FDNAMES its name), and, as systemd, an environment of its
    own: PYTHONPATH (this worktree, see tests.support.daemon.Daemon) must be handed on."""
    return (
        SOCKET_ACTIVATE, "--listen", f"127.0.0.1:{port}", "--fdname=livestream.socket",
        "--setenv=PYTHONPATH",
    )  # fmt: skip


class SocketActivationTests(DaemonCase):
    def setUp(self) -> None:
        if SOCKET_ACTIVATE is None:
            raise unittest.SkipTest(
                "systemd-socket-activate is not installed (Debian package systemd)"
            )
        super().setUp()

    async def test_records_through_the_inherited_socket(self) -> None:
        """systemd-socket-activate binds the port, waits for a connection, then execs twistd
        with the socket as fd 3 (LISTEN_FDS=1, LISTEN_FDNAMES as systemd sets them for
        livestream.socket); the first connection waits in the backlog meanwhile."""
        port = free_port()
        daemon = Daemon(
            self.workdir, self.media, port, "--fps", str(FPS),
            listen=unit_listen(),
            launcher=socket_activate(port),
        )  # fmt: skip
        daemon.start()
        self.addCleanup(stop, daemon)
        # Had twistd bound the port itself, it would have failed: systemd-socket-activate holds it.
        await daemon.listening()

        frames = jpeg_frames(30)
        audio = audio_chunks(30, 5)
        _, connected, closed = await record(port, "activated", frames, audio)
        name = connected["recording"]
        self.assertEqual(closed["recordings"], {"video": f"{name}.mp4", "audio": f"{name}.wav"})
        self.assert_video(f"{name}.mp4", frames=len(frames))
        self.assert_wav(f"{name}.wav", audio)

    def test_without_the_socket_one_line(self) -> None:
        """--listen systemd:... without a passed socket stops the daemon with one line."""
        code, out = run_twistd(self.workdir, "--listen", unit_listen())
        self.assertNotEqual(code, 0, out)
        self.assertIn("systemd passed no socket", last_line(out), out)
        self.assertNotIn("Traceback", out)


class SandboxTests(DaemonCase):
    """The daemon under the seccomp rules of livestream.service (tests/support/sandbox.py)."""

    def setUp(self) -> None:
        if ANALYZE is None or SOCKET_ACTIVATE is None:
            raise unittest.SkipTest(
                "systemd-analyze or systemd-socket-activate is not installed (Debian package "
                "systemd)"
            )
        try:
            ctypes.CDLL("libseccomp.so.2")
        except OSError:
            raise unittest.SkipTest(
                "libseccomp is not installed (Debian package libseccomp2)"
            ) from None
        super().setUp()

    async def test_under_the_units_sandbox(self) -> None:
        """As systemd runs the unit: socket-activated, and under its seccomp rules (system call
        filter, MemoryDenyWriteExecute, address families), which ffmpeg inherits. A session is
        recorded, another is finished by SIGTERM, and every file decodes."""
        port = free_port()
        daemon = Daemon(
            self.workdir, self.media, port, "--fps", str(FPS),
            listen=unit_listen(),
            launcher=(*socket_activate(port), *sandbox_launcher()),
        )  # fmt: skip
        daemon.start()
        self.addCleanup(stop, daemon)
        await daemon.listening()

        frames = jpeg_frames(30)
        audio = audio_chunks(30, 6)
        _, connected, _ = await record(port, "sandboxed", frames, audio)
        first = connected["recording"]
        client, second = await stream_without_close(port, "stopped", frames, audio)
        # The rules are on: the daemon's and its encoder's three filters (the system call
        # allow-list, memory, address families).
        encoders = children(daemon.pid)
        self.assertTrue(encoders, "no encoder while a session streams")
        for pid in (daemon.pid, *encoders):
            status = Path(f"/proc/{pid}/status").read_text()
            self.assertIn("\nSeccomp:\t2\n", status, pid)
            self.assertIn("\nSeccomp_filters:\t3\n", status, pid)
        closed = client.event("CLOSED", timeout=60)
        daemon.signal("TERM")
        await closed
        await ended(daemon)
        self.assertIn(how_it_ended(daemon), ("exit 0", "signal SIGTERM"), daemon.output())
        for name in (first, second):
            self.assert_video(f"{name}.mp4", frames=len(frames))
            self.assert_wav(f"{name}.wav", audio)
        self.assertNotIn("Traceback", daemon.output())

    def tls_daemon(self, mdwe: bool) -> Daemon:
        key, cert = server_files(self.workdir / "tls")
        port = free_port()
        daemon = Daemon(
            self.workdir, self.media, port, "--fps", str(FPS),
            listen=f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            launcher=sandbox_launcher(mdwe=mdwe),
        )  # fmt: skip
        daemon.start()
        self.addCleanup(stop, daemon)
        return daemon

    async def test_tls_stops_at_start_under_memory_deny_write_execute(self) -> None:
        """pyOpenSSL's callbacks need memory both writable and executable: rather than fail
        every TLS handshake, the daemon stops at start with one line saying what to change."""
        daemon = self.tls_daemon(mdwe=True)
        await ended(daemon)
        self.assertNotEqual(how_it_ended(daemon), "exit 0")
        line = last_line(daemon.output())
        self.assertIn("set MemoryDenyWriteExecute=no", line, daemon.output())
        self.assertNotIn("Traceback", daemon.output())

    async def test_tls_records_with_memory_deny_write_execute_off(self) -> None:
        """The rest of the sandbox is no obstacle to TLS (README: TLS in the service)."""
        daemon = self.tls_daemon(mdwe=False)
        deadline = reactor.seconds() + 30
        while await refuses(daemon.port):
            self.assertLess(reactor.seconds(), deadline, daemon.output())
            self.assertFalse(daemon.proto.ended.called, daemon.output())
            await sleep(0.1)
        client = await open_client(daemon.port, tls=trusting("livestream test CA"))
        client.send(connect_msg("secure"))
        name = (await client.event("CONNECTED"))["recording"]
        frames = jpeg_frames(15)
        for frame in frames:
            client.send(stream_msg("VIDEO", frame))
        client.send(CLOSE_MSG)
        await client.event("CLOSED", timeout=60)
        self.assert_video(f"{name}.mp4", frames=len(frames))


class NotifyReceiver(DatagramProtocol):
    """systemd's side of NOTIFY_SOCKET: every datagram, as its list of fields."""

    def __init__(self) -> None:
        self.messages: list[list[str]] = []

    def datagramReceived(self, data: bytes, addr) -> None:
        self.messages.append(data.decode().split("\n"))

    async def first(self, field: str, after: int = 0, timeout: float = 30) -> int:
        """The index of the first message from ``after`` on that holds ``field``."""
        deadline = reactor.seconds() + timeout
        while True:
            for i, message in enumerate(self.messages[after:], after):
                if field in message:
                    return i
            if reactor.seconds() > deadline:
                raise AssertionError(f"no {field!r} within {timeout}s: {self.messages}")
            await sleep(0.02)


class NotifyDaemonTests(DaemonCase):
    def notify_socket(self) -> tuple[str, NotifyReceiver]:
        """A unix datagram socket in a short temp dir (a socket path has at most 107 bytes)."""
        where = tempfile.mkdtemp(prefix="livestream-notify-")
        self.addCleanup(shutil.rmtree, where)
        path = os.path.join(where, "notify")
        receiver = NotifyReceiver()
        port = reactor.listenUNIXDatagram(path, receiver)
        self.addCleanup(port.stopListening)
        return path, receiver

    async def test_ready_watchdog_status_stopping(self) -> None:
        path, receiver = self.notify_socket()
        daemon = Daemon(
            self.workdir, self.media, free_port(), "--fps", str(FPS),
            env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "600000"},
        )  # fmt: skip
        daemon.start()
        self.addCleanup(stop, daemon)

        ready = await receiver.first("READY=1")
        # READY=1 means listening: systemd orders what needs the daemon after it.
        self.assertFalse(await refuses(daemon.port), daemon.output())
        self.assertEqual(receiver.messages[ready], ["READY=1", "STATUS=0 live sessions"])
        # Pings every WATCHDOG_USEC/2 = 0.3 s.
        first = await receiver.first("WATCHDOG=1", ready)
        await receiver.first("WATCHDOG=1", first + 1, timeout=5)

        frames = jpeg_frames(15)
        audio = audio_chunks(15, 7)
        client, name = await stream_without_close(daemon.port, "watched", frames, audio)
        await receiver.first("STATUS=1 live sessions", timeout=5)
        closed = client.event("CLOSED", timeout=60)

        daemon.signal("TERM")
        stopping = await receiver.first("STOPPING=1")
        self.assertEqual(
            receiver.messages[stopping], ["STOPPING=1", "STATUS=stopping: 1 live sessions"]
        )
        await closed
        await ended(daemon)
        self.assertFalse(
            any("WATCHDOG=1" in m for m in receiver.messages[stopping:]), receiver.messages
        )
        self.assertEqual(sum("READY=1" in m for m in receiver.messages), 1)
        self.assert_video(f"{name}.mp4", frames=len(frames))
        self.assert_wav(f"{name}.wav", audio)

    def test_no_ready_when_a_listener_fails(self) -> None:
        """A port that cannot be had stops the daemon before READY=1: systemd sees a failed
        start, not a running service that does not listen."""
        where = tempfile.mkdtemp(prefix="livestream-notify-")
        self.addCleanup(shutil.rmtree, where)
        path = os.path.join(where, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
            receiver.bind(path)
            receiver.setblocking(False)
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                port = taken.getsockname()[1]
                code, out = run_twistd(self.workdir, port=port, env={"NOTIFY_SOCKET": path})
            self.assertNotEqual(code, 0, out)
            self.assertIn("Address already in use", out)
            with self.assertRaises(BlockingIOError):
                receiver.recv(4096)
