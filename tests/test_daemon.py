"""The real daemon, ``twistd -n livestream``, in a child process: how it stops, dies and starts.

These are the operator's view: a SIGTERM (systemd stop), a SIGKILL of the daemon and of its
encoders (the OOM killer, systemd's cgroup kill), a SIGKILL of the daemon alone, and start-up
errors. Outputs are checked by decoding them, never by trusting the daemon's replies.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import av
from twisted.internet import error, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from tests.support.daemon import ROOT, Daemon
from tests.support.http import get_json
from tests.support.media import jpeg_frames, pcm, video_facts, wav_facts
from tests.support.ports import free_port
from tests.support.waiting import sleep
from tests.support.websocket import connect_msg, open_client, record

FPS = 15
# One chunk of audio per video frame: 1/15 s of 44.1 kHz mono.
SAMPLES_PER_CHUNK = 44100 // FPS
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def audio_chunks(count: int, client: int) -> list[bytes]:
    return [pcm(SAMPLES_PER_CHUNK, seed=client * 1000 + i) for i in range(count)]


# --- processes -------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (the daemon's ffmpeg encoders), found by scanning /proc."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pid and stat[0] not in ("Z", "X"):
                kids.append(int(entry))
    return kids


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` runs; return those still running at the deadline."""
    deadline = reactor.seconds() + timeout
    while True:
        left = [p for p in pids if alive(p)]
        if not left or reactor.seconds() > deadline:
            return left
        await sleep(0.05)


# --- the daemon ------------------------------------------------------------------------------


def ended(daemon: Daemon, timeout: float = 60) -> Deferred:
    """A fresh Deferred for the daemon's exit code (``proto.ended`` is shared, so never awaited
    directly: awaiting a Deferred consumes its result)."""
    d: Deferred = Deferred()

    def relay(result):
        if not d.called:
            d.callback(result)
        return result

    daemon.proto.ended.addBoth(relay)
    return d.addTimeout(timeout, reactor)


def how_it_ended(daemon: Daemon) -> str:
    """``exit N`` or ``signal NAME`` from the raw wait status (``proto.ended`` only gives an exit
    code, None for any death by signal, which would hide *which* signal)."""
    status = daemon.proto.transport.status
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"


async def stop(daemon: Daemon) -> None:
    """Cleanup: SIGKILL the daemon and its encoders if they still run, and wait for its end."""
    if daemon.proto is None:
        return
    if not daemon.proto.ended.called:
        pid = daemon.pid
        for kid in children(pid):
            kill(kid)
        kill(pid)
    await ended(daemon, 30)


async def refuses(port: int) -> bool:
    """True if a TCP connection to ``port`` is refused: nothing listens there.

    A reset while connecting counts too: the listening socket closed with this connection still
    in its accept queue."""
    try:
        proto = await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5).connect(
            Factory.forProtocol(Protocol)
        )
    except error.ConnectionRefusedError:
        return True
    except error.ConnectError as e:
        if e.osError != errno.ECONNRESET:
            raise
        return True
    proto.transport.abortConnection()
    return False


async def stream_without_close(port: int, client_id: str, frames, audio):
    """A session that sends everything but CLOSE, and knows the daemon has handled all of it.

    A second CONNECT is refused with a recoverable ERROR; messages are handled in order, so once
    that reply is back every STREAM before it has reached the session's recorders.
    """
    client, connected, _ = await record(port, client_id, frames, audio, close=False)
    client.send(connect_msg(client_id))
    reply = await client.event("ERROR")
    assert reply["code"] == "already_connected", reply
    return client, connected["recording"]


class DaemonCase(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.workdir = Path(self.mktemp()).absolute()
        self.workdir.mkdir(parents=True)
        self.media = self.workdir / "media"

    def daemon(self, *extra: str) -> Daemon:
        d = Daemon(self.workdir, self.media, free_port(), "--fps", str(FPS), *extra)
        d.start()
        self.addCleanup(stop, d)
        return d

    def assert_video(self, name: str, frames: int | None = None, at_least: int | None = None):
        path = self.media / "video" / name
        self.assertTrue(path.is_file(), f"{path} missing; video/ holds {self.listdir('video')}")
        facts = video_facts(path)
        self.assertEqual(facts.codec, "h264", facts)
        self.assertEqual(facts.pix_fmt, "yuv420p", facts)
        self.assertEqual(facts.rate, FPS, facts)
        self.assertTrue(facts.faststart, f"moov is not before mdat in {name}: {facts}")
        if frames is not None:
            self.assertEqual(facts.frames, frames, facts)
        if at_least is not None:
            self.assertGreaterEqual(facts.frames, at_least, facts)
        return facts

    def assert_wav(self, name: str, chunks: list[bytes]) -> None:
        path = self.media / "audio" / name
        self.assertTrue(path.is_file(), f"{path} missing; audio/ holds {self.listdir('audio')}")
        facts = wav_facts(path)
        self.assertEqual((facts.rate, facts.channels, facts.sample_width), (44100, 1, 2))
        self.assertTrue(facts.riff_size_ok, f"wrong RIFF size in {name}")
        sent = b"".join(chunks)
        self.assertEqual(len(facts.data), len(sent))
        self.assertTrue(facts.data == sent, f"{name}: audio bytes differ from those sent")
        self.assertEqual(path.stat().st_size, 44 + len(sent))

    def listdir(self, kind: str) -> list[str]:
        path = self.media / kind
        return sorted(os.listdir(path)) if path.is_dir() else []


class StopTests(DaemonCase):
    async def test_sigterm_finishes_live_sessions(self) -> None:
        """SIGTERM: every live session is finished and announced, then the daemon exits."""
        daemon = self.daemon()
        await daemon.listening()
        frames = jpeg_frames(45)
        sent = {"alice": audio_chunks(45, 1), "bob": audio_chunks(45, 2)}
        sessions = {}
        for client_id, audio in sent.items():
            sessions[client_id] = await stream_without_close(daemon.port, client_id, frames, audio)
        closed = {cid: client.event("CLOSED", timeout=60) for cid, (client, _) in sessions.items()}

        daemon.signal("TERM")

        # The listener closes first, while the sessions are still being finished.
        deadline = reactor.seconds() + 10
        while not await refuses(daemon.port) and reactor.seconds() < deadline:
            await sleep(0.02)
        self.assertTrue(await refuses(daemon.port), "still accepting connections after SIGTERM")

        closes = {}
        for client_id, (client, name) in sessions.items():
            # CLOSED comes first (a close before it fails this wait), naming the session's files.
            event = await closed[client_id]
            self.assertEqual(
                event["recordings"], {"video": f"{name}.mp4", "audio": f"{name}.wav"}, client_id
            )
            closes[client_id] = await client.closed.addTimeout(30, reactor)

        await ended(daemon)
        self.assertIn("Server Shut Down.", daemon.output())
        self.assertTrue(await refuses(daemon.port), "something still listens after exit")
        with self.assertRaises(error.ConnectionRefusedError):
            await open_client(daemon.port, timeout=5)

        self.assertEqual(
            self.listdir("video"), sorted(f"{name}.mp4" for _, name in sessions.values())
        )
        self.assertEqual(
            self.listdir("audio"), sorted(f"{name}.wav" for _, name in sessions.values())
        )
        for client_id, (_, name) in sessions.items():
            self.assert_video(f"{name}.mp4", frames=len(frames))
            self.assert_wav(f"{name}.wav", sent[client_id])
        self.assertEqual(self.listdir("temp"), [])

        # Then a WebSocket close with 1012 (service restart), handshake completed.
        for client_id, (clean, code, reason) in closes.items():
            self.assertEqual((code, clean), (1012, True), (client_id, reason, daemon.output()))

        # And the daemon exits cleanly. twistd, once shut down, re-raises the signal that stopped
        # it so its parent (systemd) sees the conventional death by SIGTERM, a clean stop there.
        self.assertIn(how_it_ended(daemon), ("exit 0", "signal SIGTERM"), daemon.output())


class CrashTests(DaemonCase):
    async def crash_mid_session(self, *extra: str, with_encoders: bool):
        """Stream 60 frames and their audio, give the encoder time, then SIGKILL.

        Returns (recording name, frames, audio chunks, encoder pids).
        """
        daemon = self.daemon(*extra)
        await daemon.listening()
        frames = jpeg_frames(60)
        audio = audio_chunks(60, 3)
        client, name = await stream_without_close(daemon.port, "crashy", frames, audio)
        await sleep(1.5)  # the encoder writes its fragments meanwhile
        encoders = children(daemon.pid)
        self.assertTrue(encoders, "the daemon has no encoder child while a session streams")
        if with_encoders:
            # As a cgroup kill: nothing gets to react. The daemon is frozen first so that it does
            # not even see its encoders die.
            os.kill(daemon.pid, signal.SIGSTOP)
            for pid in encoders:
                kill(pid)
        kill(daemon.pid)
        await ended(daemon, 30)
        self.assertEqual(how_it_ended(daemon), "signal SIGKILL")
        await client.closed.addTimeout(30, reactor)
        return name, frames, audio, encoders

    async def restart_and_recover(self, name: str):
        """A new daemon on the same media: its listing shows the recovered files, bounded."""
        daemon = self.daemon()
        await daemon.listening()
        want_video, want_audio = f"{name}.mp4", f"{name}.wav"
        deadline = reactor.seconds() + 30
        while True:
            listing = await get_json(daemon.port, "/recordings")
            if want_video in listing["video"] and want_audio in listing["audio"]:
                break
            if reactor.seconds() > deadline:
                self.fail(
                    f"not recovered within 30s: listing {listing}, temp/ {self.listdir('temp')}"
                    f"\n{daemon.output()}"
                )
            await sleep(0.1)
        return daemon, listing

    async def test_sigkill_of_daemon_and_encoders_is_recovered(self) -> None:
        """SIGKILL of everything: the restart publishes what the encoder had written."""
        name, frames, audio, _ = await self.crash_mid_session(with_encoders=True)
        self.assertEqual(self.listdir("temp"), sorted([f"{name}.video.fmp4", f"{name}.audio.wav"]))
        self.assertEqual(self.listdir("video") + self.listdir("audio"), [])

        daemon, listing = await self.restart_and_recover(name)
        self.assertEqual(listing, {"video": [f"{name}.mp4"], "audio": [f"{name}.wav"]})
        # At most about the last second is lost (the encoder had 1.5 s; fragments are 0.2 s).
        self.assert_video(f"{name}.mp4", at_least=len(frames) - FPS)
        self.assert_wav(f"{name}.wav", audio)  # audio is written unbuffered: all of it
        self.assertEqual(self.listdir("temp"), [])
        self.assertFalse(daemon.proto.ended.called)

    async def test_sigkill_with_mux_audio_recovers_both_tracks_into_one_mp4(self) -> None:
        """--mux-audio, SIGKILL of everything: the video's and the audio track's fragmented MP4s
        are each cut back to their last whole fragment and muxed into one faststart MP4."""
        name, frames, audio, encoders = await self.crash_mid_session(
            "--mux-audio", with_encoders=True
        )
        self.assertEqual(len(encoders), 2, "the video and the audio track each have an encoder")
        self.assertEqual(
            self.listdir("temp"),
            sorted(f"{name}{suffix}" for suffix in (".video.fmp4", ".audio.fmp4", ".audio.wav")),
        )
        await self.restart_and_recover(name)
        self.assert_video(f"{name}.mp4", at_least=len(frames) - FPS)
        self.assert_wav(f"{name}.wav", audio)
        with av.open(os.fspath(self.media / "video" / f"{name}.mp4")) as container:
            self.assertEqual(sorted(s.type for s in container.streams), ["audio", "video"])
            samples = sum(frame.samples for frame in container.decode(audio=0))
        sent = len(b"".join(audio)) // 2
        # Like the video, at most about the last second is lost.
        self.assertGreaterEqual(samples, sent - 44100)
        self.assertEqual(self.listdir("temp"), [])

    async def test_sigkill_of_daemon_alone_is_recovered_whole(self) -> None:
        """SIGKILL of the daemon only: its encoders see their input end and finish their files;
        the restart publishes every frame."""
        name, frames, audio, encoders = await self.crash_mid_session(with_encoders=False)
        left = await wait_gone(encoders, 30)
        for pid in left:
            kill(pid)
        self.assertEqual(left, [], "orphaned encoders did not finish after their input ended")

        await self.restart_and_recover(name)
        self.assert_video(f"{name}.mp4", frames=len(frames))
        self.assert_wav(f"{name}.wav", audio)
        self.assertEqual(self.listdir("temp"), [])


# --- start-up ----------------------------------------------------------------------------------


def run_twistd(
    workdir: Path, *args: str, port: int | None = None, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``twistd -n livestream ARGS`` (with ``env`` added to its environment) to its end;
    (exit status, stdout + stderr)."""
    port = free_port() if port is None else port
    argv = [
        TWISTD, "-n", "--pidfile=", "livestream",
        "--listen", f"tcp:{port}:interface=127.0.0.1", "--media", os.fspath(workdir / "media"),
        *args,
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        cwd=workdir,
        env=dict(os.environ, PYTHONPATH=os.fspath(ROOT), **(env or {})),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout.decode("utf-8", "replace")


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class StartupTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.workdir = Path(self.mktemp()).absolute()
        self.workdir.mkdir(parents=True)

    def stand_in_ffmpeg(self) -> Path:
        """An executable that fails as a broken ffmpeg would."""
        script = self.workdir / "stand-in.sh"
        script.write_text("#!/bin/sh\necho 'stand-in: broken' >&2\nexit 1\n")
        script.chmod(0o755)
        return script

    def failures(self) -> dict[str, tuple[int, str]]:
        """Every start-up error case: name -> (exit status, output)."""
        results = {
            "missing ffmpeg": run_twistd(self.workdir, "--ffmpeg", "/nonexistent/ffmpeg"),
            "broken ffmpeg": run_twistd(self.workdir, "--ffmpeg", str(self.stand_in_ffmpeg())),
            "fps 0": run_twistd(self.workdir, "--fps", "0"),
        }
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            results["port taken"] = run_twistd(self.workdir, port=port)
        return results

    def test_missing_ffmpeg(self) -> None:
        code, out = run_twistd(self.workdir, "--ffmpeg", "/nonexistent/ffmpeg")
        self.assertNotEqual(code, 0, out)
        line = last_line(out)
        self.assertIn("/nonexistent/ffmpeg", line, f"last line {line!r} of:\n{out}")
        self.assertIn("no such executable", line, f"last line {line!r} of:\n{out}")

    def test_broken_ffmpeg(self) -> None:
        script = self.stand_in_ffmpeg()
        code, out = run_twistd(self.workdir, "--ffmpeg", str(script))
        self.assertNotEqual(code, 0, out)
        line = last_line(out)
        self.assertIn(str(script), line, f"last line {line!r} of:\n{out}")
        self.assertIn("exit status 1", line, f"last line {line!r} of:\n{out}")
        # The user must learn that it is the ffmpeg that is at fault, whatever its file is called.
        self.assertIn(
            "ffmpeg", line.replace(str(script), ""), f"the error does not say ffmpeg: {line!r}"
        )

    def test_fps_zero(self) -> None:
        code, out = run_twistd(self.workdir, "--fps", "0")
        self.assertNotEqual(code, 0, out)
        line = last_line(out)
        self.assertIn(
            "--fps must be between 1 and 120, not 0", line, f"last line {line!r} of:\n{out}"
        )

    def test_port_taken(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            code, out = run_twistd(self.workdir, port=port)
        self.assertNotEqual(code, 0, out)
        self.assertIn(str(port), out)
        self.assertIn("Address already in use", out)
        self.assertEqual(self.listdir_temp(), [])

    def listdir_temp(self) -> list[str]:
        temp = self.workdir / "media" / "temp"
        return sorted(os.listdir(temp)) if temp.is_dir() else []

    def test_startup_errors_are_one_line(self) -> None:
        """What a user sees is one readable line, not the usage text or a traceback.

        twistd's own start-up log lines ("starting up", "reactor class") may come first where
        logging has already begun (the port case).
        """
        verbose = {}
        for case, (code, out) in self.failures().items():
            lines = [
                line
                for line in out.splitlines()
                if line.strip() and "starting up" not in line and "reactor class" not in line
            ]
            if code == 0 or len(lines) != 1:
                verbose[case] = f"exit {code}, {len(lines)} lines:\n{out}"
        if verbose:
            self.fail("\n\n".join(f"== {case}: {what}" for case, what in verbose.items()))

    def test_help_lists_the_options(self) -> None:
        done = subprocess.run(
            [TWISTD, "livestream", "--help"],
            cwd=self.workdir,
            env=dict(os.environ, PYTHONPATH=os.fspath(ROOT)),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
        out = done.stdout.decode()
        self.assertEqual(done.returncode, 0, out + done.stderr.decode())
        for option in ("--listen", "--media", "--fps", "--ffmpeg", "--preset"):
            self.assertIn(option, out)
