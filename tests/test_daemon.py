"""The real daemon, ``twistd -n livestream``, in a child process: how it stops, dies and starts.

These are the operator's view: a SIGTERM (systemd stop), a SIGKILL of the daemon and of its
encoders (the OOM killer, systemd's cgroup kill), a SIGKILL of the daemon alone, and start-up
errors. Outputs are checked by decoding them, never by trusting the daemon's replies.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import struct
import subprocess
from pathlib import Path

import av
from twisted.internet import error, reactor
from twisted.trial import unittest

from tests.support.daemon import (
    FPS,
    ROOT,
    TWISTD,
    DaemonCase,
    audio_chunks,
    ended,
    how_it_ended,
    last_line,
    run_twistd,
)
from tests.support.http import get_json
from tests.support.media import (
    h264_access_units,
    is_keyframe,
    jpeg_frames,
    opus_packets,
    video_facts,
    wav_facts,
)
from tests.support.ports import refuses
from tests.support.processes import children, kill, wait_gone
from tests.support.waiting import sleep
from tests.support.websocket import (
    CLOSE_MSG,
    connect_msg,
    open_client,
    stream_msg,
    stream_without_close,
)


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

    async def restart_and_recover(self, name: str, *extra: str):
        """A new daemon on the same media: its listing shows the recovered files, bounded."""
        daemon = self.daemon(*extra)
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

    async def test_sigkill_of_an_h264_and_opus_session_is_recovered(self) -> None:
        """A session that sent H.264 and Opus, --mux-audio, SIGKILL: no encoder ran, so the
        daemon's own fragmented MP4s are all there is; the restart publishes every frame but
        the one held for its duration, the Opus decoded into the WAV and copied into the MP4."""
        daemon = self.daemon("--mux-audio")
        await daemon.listening()
        units = h264_access_units(60)
        head, packets = opus_packets(4.0)
        client = await open_client(daemon.port)
        client.send(json.dumps({
            "eventType": "CONNECT", "id": "phone", "videoCodec": "h264", "audioCodec": "opus",
            "opusHead": base64.b64encode(head).decode(),
        }))  # fmt: skip
        name = (await client.event("CONNECTED"))["recording"]
        for seq, packet in enumerate(packets):
            if seq < len(units):
                key = 1 if is_keyframe(units[seq]) else 0
                client.send_binary(struct.pack(">BBIq", 0x21, key, seq, seq * 66_667) + units[seq])
            client.send_binary(struct.pack(">BBIq", 0x22, 0, seq, seq * 20_000) + packet)
        client.send(json.dumps({"eventType": "CONNECT", "id": "phone"}))
        self.assertEqual((await client.event("ERROR"))["code"], "already_connected")
        self.assertEqual(children(daemon.pid), [], "no process runs for an encoded session")
        kill(daemon.pid)
        await ended(daemon, 30)
        await client.closed.addTimeout(30, reactor)
        self.assertEqual(self.listdir("temp"), [f"{name}.opus.fmp4", f"{name}.video.fmp4"])

        await self.restart_and_recover(name, "--mux-audio")
        facts = video_facts(self.media / "video" / f"{name}.mp4")
        self.assertEqual((facts.codec, facts.frames, facts.faststart), ("h264", 59, True))
        with av.open(os.fspath(self.media / "video" / f"{name}.mp4")) as container:
            self.assertEqual(
                sorted((s.type, s.codec_context.name) for s in container.streams),
                [("audio", "opus"), ("video", "h264")],
            )
        wav = wav_facts(self.media / "audio" / f"{name}.wav")
        # What a decoder gives of every packet sent, less the last 0.2 s fragment at most.
        sent = (len(packets) * 960 - 312) * 44100 / 48000
        self.assertLessEqual(wav.samples, sent + 2)
        self.assertGreaterEqual(wav.samples, sent - 0.2 * 44100 - 2)
        self.assertEqual(self.listdir("temp"), [])


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


class EncoderFaultTests(DaemonCase):
    """An encoder killed or stopped mid-session, as the OOM killer, a signal or a hang would do
    it: a new one takes over in a piece of its own, the frames the dead one had not written are
    handed to it again, and the pieces are joined by stream copy into one MP4."""

    async def paced(self, client, frames, audio, at: int, fault) -> None:
        """Send ``frames`` (and ``audio``) at FPS, calling ``fault`` before frame ``at``."""
        for i, frame in enumerate(frames):
            if i == at:
                fault()
            client.send(stream_msg("VIDEO", frame))
            if audio:
                client.send(stream_msg("AUDIO", audio[i]))
            await sleep(1 / FPS)

    async def connect(self, daemon, client_id: str):
        client = await open_client(daemon.port)
        client.send(connect_msg(client_id))
        connected = await client.event("CONNECTED")
        return client, connected["recording"]

    def errors(self, client) -> list[str]:
        return [e["code"] for e in client.events if e["eventType"] == "ERROR"]

    async def test_encoders_killed_two_seconds_into_four_lose_nothing(self) -> None:
        """--mux-audio, 60 frames and their sound over 4 s; at 2 s both encoders (the video's and
        the audio track's) are SIGKILLed. The client is told twice that it may go on; the MP4 is
        one file with every frame once and the sound of the whole session."""
        daemon = self.daemon("--mux-audio")
        await daemon.listening()
        client, name = await self.connect(daemon, "phoenix")
        frames, audio = jpeg_frames(60), audio_chunks(60, 7)
        killed: list[int] = []

        def kill_encoders() -> None:
            killed.extend(children(daemon.pid))
            for pid in killed:
                kill(pid)

        await self.paced(client, frames, audio, 30, kill_encoders)
        self.assertEqual(len(killed), 2, "the video and the audio track each have an encoder")
        client.send(CLOSE_MSG)
        closed = await client.event("CLOSED", timeout=60)
        self.assertEqual(self.errors(client), ["encoder_replaced"] * 2, daemon.output())
        self.assertEqual(closed["recordings"], {"video": f"{name}.mp4", "audio": f"{name}.wav"})
        self.assertEqual(self.listdir("video"), [f"{name}.mp4"])
        facts = self.assert_video(f"{name}.mp4", at_least=55)
        self.assertLessEqual(facts.frames, 60, "a frame was recorded twice")
        self.assert_wav(f"{name}.wav", audio)
        with av.open(os.fspath(self.media / "video" / f"{name}.mp4")) as container:
            samples = sum(frame.samples for frame in container.decode(audio=0))
        sent = len(b"".join(audio)) // 2
        # Every sample once, give or take an AAC packet of priming per piece and the last one.
        self.assertLess(abs(samples - sent), 3 * 1024, (samples, sent))
        self.assertEqual(self.listdir("temp"), [])

    async def test_stuck_encoder_is_killed_and_replaced(self) -> None:
        """An encoder stopped (SIGSTOP) while frames keep coming fills its pipe; after
        --encoder-timeout without a read it is killed and replaced, and the frames it held are
        handed to its successor."""
        daemon = self.daemon("--encoder-timeout", "2")
        await daemon.listening()
        client, name = await self.connect(daemon, "sleepy")
        frames = jpeg_frames(60, "640x480", "mandelbrot")
        stopped: list[int] = []

        def stop_encoder() -> None:
            stopped.extend(children(daemon.pid))
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)

        self.addCleanup(lambda: [kill(pid) for pid in stopped])
        await self.paced(client, frames[:10], [], 5, stop_encoder)
        for frame in frames[10:]:
            client.send(stream_msg("VIDEO", frame))
        error = await client.event("ERROR", timeout=30)
        self.assertEqual(error["code"], "encoder_replaced")
        self.assertIn("read nothing for", daemon.output())
        client.send(CLOSE_MSG)
        closed = await client.event("CLOSED", timeout=60)
        self.assertEqual(closed["recordings"]["video"], f"{name}.mp4")
        facts = self.assert_video(f"{name}.mp4", at_least=55)
        self.assertLessEqual(facts.frames, 60, "a frame was recorded twice")
        self.assertEqual(self.listdir("temp"), [])

    async def test_sigkill_recovers_a_video_in_pieces(self) -> None:
        """An encoder replaced mid-session, then a SIGKILL of everything: the restart joins the
        pieces the two encoders left into one MP4."""
        daemon = self.daemon()
        await daemon.listening()
        client, name = await self.connect(daemon, "twice")
        frames = jpeg_frames(45)
        await self.paced(
            client, frames, [], 15, lambda: [kill(pid) for pid in children(daemon.pid)]
        )
        await sleep(1.0)  # the new encoder writes its fragments meanwhile
        encoders = children(daemon.pid)
        os.kill(daemon.pid, signal.SIGSTOP)
        for pid in encoders:
            kill(pid)
        kill(daemon.pid)
        await ended(daemon, 30)
        pieces = [f for f in self.listdir("temp") if f.endswith(".video.fmp4")]
        self.assertEqual(len(pieces), 2, self.listdir("temp"))
        self.assertIn(f"{name}.video.fmp4", pieces)
        await client.closed.addTimeout(30, reactor)

        daemon = self.daemon()
        await daemon.listening()
        deadline = reactor.seconds() + 30
        while f"{name}.mp4" not in (await get_json(daemon.port, "/recordings"))["video"]:
            self.assertLess(reactor.seconds(), deadline, self.listdir("temp"))
            await sleep(0.1)
        facts = self.assert_video(f"{name}.mp4", at_least=len(frames) - FPS)
        self.assertLessEqual(facts.frames, len(frames))
        self.assertEqual(self.listdir("temp"), [])
