"""``livestream-send``: its pure parts (frame splitting, pacing and flow control on a fake clock),
and the command itself, run as a subprocess against the daemon's real service tree."""

from __future__ import annotations

import configparser
import json
import os
import random
import re
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from livestream.auth.access import Access
from livestream.auth.tokens import Verifier, mint
from livestream.cli.send.outbox import Outbox
from livestream.cli.send.source import Source
from livestream.cli.send.split import JPEGSplitter, PCMChunker
from livestream.sessions.outcome import DISCONNECT
from livestream.wire.jpeg import NotAJPEG
from livestream.wire.kinds import AUDIO, BYTES_PER_SECOND, VIDEO
from tests.support.daemon import ROOT
from tests.support.http import get_json
from tests.support.media import ffmpeg_exe, jpeg_frames, video_facts, wav_facts
from tests.support.ports import free_port
from tests.support.processes import Collect
from tests.support.server import start_server
from tests.support.tls import authority, server_files
from tests.support.waiting import cut_connection, sleep

SECRET = b"a secret for livestream-send tests, 32+ bytes"


def with_thumbnail(jpeg: bytes, thumbnail: bytes) -> bytes:
    """``jpeg`` with an APP1 (EXIF-like) segment holding a whole JPEG, EOI included, as cameras
    write them."""
    payload = b"Exif\x00\x00" + thumbnail
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


class SplitterTests(SynchronousTestCase):
    def split(self, stream: bytes, seed: int) -> list[bytes]:
        rng = random.Random(seed)
        splitter = JPEGSplitter()
        frames, pos = [], 0
        while pos < len(stream):
            step = rng.choice((1, 2, 3, 100, 5000, 70000))
            frames += splitter.feed(stream[pos : pos + step])
            pos += step
        self.assertEqual(splitter.pending, 0)
        return frames

    def test_frames_in_any_pieces(self) -> None:
        """ffmpeg's JPEGs, concatenated as image2pipe writes them and read in pieces of any
        size (one byte, mid-marker, several frames at once), come out whole and in order."""
        frames = list(jpeg_frames(12))
        for seed in range(4):
            self.assertEqual(self.split(b"".join(frames), seed), frames)

    def test_thumbnail_is_not_an_end(self) -> None:
        """The EOI of a thumbnail inside a segment does not end the frame that holds it."""
        big, small = jpeg_frames(2)
        framed = with_thumbnail(big, small)
        self.assertEqual(self.split(framed + small + framed, 0), [framed, small, framed])

    def test_garbage(self) -> None:
        """Bytes that do not start a JPEG are refused, not glued to a frame."""
        with self.assertRaises(NotAJPEG):
            JPEGSplitter().feed(jpeg_frames(1)[0] + b"garbage")
        with self.assertRaises(NotAJPEG):
            JPEGSplitter(max_frame=1000).feed(jpeg_frames(1)[0][:2000])

    def test_pcm_chunks(self) -> None:
        chunker = PCMChunker(4)
        self.assertEqual(chunker.feed(b"abcdefghi"), [b"abcd", b"efgh"])
        self.assertEqual(chunker.feed(b"j"), [])
        self.assertEqual(chunker.flush(), b"ij")
        self.assertEqual(chunker.flush(), b"")


class Source_:
    """A stand-in for the source's process transport."""

    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False


class OutboxTests(SynchronousTestCase):
    def make(self, realtime: bool, **kw) -> tuple[Clock, list, Outbox, Source_]:
        clock = Clock()
        self.numbered: list[tuple[str, int, float]] = []
        self.keys: list[bool] = []
        sent: list[tuple[float, str, bytes]] = []

        def send(kind: str, seq: int, at: Fraction, key: bool, data: bytes) -> bool:
            self.numbered.append((kind, seq, float(at * 1000)))
            self.keys.append(key)
            sent.append((clock.seconds(), kind, data))
            return True

        outbox = Outbox(clock, send, 10, realtime=realtime, **kw)
        source = Source_()
        outbox.attach(source)
        return clock, sent, outbox, source

    def test_real_time(self) -> None:
        """Frame n leaves at n/fps and audio at its byte offset, interleaved in time order,
        however early the source delivered them."""
        clock, sent, outbox, _ = self.make(True)
        outbox.audio(b"\x00" * (BYTES_PER_SECOND // 20))  # 0.00-0.05 s
        outbox.audio(b"\x00" * (BYTES_PER_SECOND // 20))  # 0.05-0.10 s
        outbox.audio(b"\x00" * (BYTES_PER_SECOND // 10))  # 0.10-0.20 s
        for i in range(3):
            outbox.frame(b"f%d" % i)
        outbox.source_done()
        self.assertEqual([(at, kind) for at, kind, _ in sent], [(0, AUDIO), (0, VIDEO)])
        clock.pump([0.05, 0.05, 0.05, 0.05, 0.05])
        self.assertEqual(
            [(round(at, 2), kind) for at, kind, _ in sent],
            [(0, AUDIO), (0, VIDEO), (0.05, AUDIO), (0.1, AUDIO), (0.1, VIDEO), (0.2, VIDEO)],
        )
        self.assertEqual((outbox.frames, outbox.audio_seconds), (3, Fraction(1, 5)))
        self.successResultOf(outbox.drained())
        # Numbered per source; captureTime is the media time (ms) on the clock's start.
        self.assertEqual(
            sorted(self.numbered),
            [(AUDIO, 0, 0), (AUDIO, 1, 50), (AUDIO, 2, 100),
             (VIDEO, 0, 0), (VIDEO, 1, 100), (VIDEO, 2, 200)],
        )  # fmt: skip

    def test_fast_and_socket_back_pressure(self) -> None:
        """Fast, everything leaves at once, except while the socket's transport has paused the
        outbox; emptied waits for the last item."""
        clock, sent, outbox, _ = self.make(False)
        outbox.frame(b"a")
        outbox.pauseProducing()
        outbox.frame(b"b")
        outbox.audio(b"cc")
        outbox.source_done()
        drained = outbox.drained()
        self.assertEqual([data for _, _, data in sent], [b"a"])
        self.assertNoResult(drained)
        outbox.resumeProducing()
        self.assertEqual([data for _, _, data in sent], [b"a", b"cc", b"b"])
        self.successResultOf(drained)

    def test_source_paused_while_too_much_waits(self) -> None:
        """Over ``high`` queued bytes the source is paused; below ``low`` it reads again."""
        clock, sent, outbox, source = self.make(False, high=250, low=100)
        outbox.pauseProducing()
        for _ in range(3):
            outbox.frame(b"x" * 100)
        self.assertTrue(source.paused)
        outbox.resumeProducing()
        self.assertFalse(source.paused)
        self.assertEqual((len(sent), outbox.queued), (3, 0))

    def test_stopped(self) -> None:
        """A lost connection drops what waits and sends nothing more."""
        clock, sent, outbox, source = self.make(True)
        outbox.frame(b"a")
        outbox.frame(b"b")
        outbox.stopProducing()
        outbox.frame(b"c")
        clock.advance(1)
        self.assertEqual([data for _, _, data in sent], [b"a"])
        self.assertEqual(outbox.queued, 0)

    def test_kept_until_acknowledged_and_sent_again(self) -> None:
        """Keeping (resume), what was sent stays until an ACK covers it; after a drop nothing
        is sent until the resumed connection, which gets the rest again first, in order and
        with the same numbers; the counts do not count it twice."""
        clock, sent, outbox, _ = self.make(False, keep=True)
        for name in (b"a", b"b", b"c"):
            outbox.frame(name)
        outbox.audio(b"11")
        outbox.acknowledge(video=0, audio=None)
        outbox.stopProducing()
        outbox.frame(b"d")
        outbox.source_done()
        drained = outbox.drained()
        self.assertEqual([data for _, _, data in sent], [b"a", b"b", b"c", b"11"])
        self.assertNoResult(drained)
        del sent[:], self.numbered[:]
        outbox.acknowledge(video=1, audio=None)
        outbox.resend()
        self.assertEqual([data for _, _, data in sent], [b"11", b"c", b"d"])
        self.assertEqual([seq for _, seq, _ in self.numbered], [0, 2, 3])
        self.successResultOf(drained)
        self.assertEqual(
            (outbox.frames, outbox.audio_seconds, outbox.resent),
            (4, Fraction(2, BYTES_PER_SECOND), 2),
        )

    def test_keep_bound_pauses_the_source(self) -> None:
        """Past ``keep_seconds`` of media not acknowledged nothing more is sent: what waits
        piles up until the source is paused, and nothing is dropped; an ACK lets it go on."""
        clock, sent, outbox, source = self.make(False, keep=True, keep_seconds=1, high=250,
                                                low=100)  # fmt: skip
        for i in range(30):
            outbox.frame(b"%03d" % i + b"x" * 20)
        self.assertEqual(len(sent), 10)  # 0.0 s to 0.9 s
        self.assertTrue(source.paused)
        outbox.acknowledge(video=4, audio=None)
        self.assertEqual(len(sent), 15)
        outbox.acknowledge(video=14, audio=None)
        self.assertEqual(len(sent), 25)
        self.assertTrue(source.paused)
        outbox.acknowledge(video=24, audio=None)
        self.assertEqual(len(sent), 30)
        self.assertFalse(source.paused)
        self.assertEqual([data[:3] for _, _, data in sent], [b"%03d" % i for i in range(30)])

    def test_connection_closing(self) -> None:
        """A chunk the closing connection does not take stays first in line."""
        clock = Clock()
        taken: list[bytes] = []
        open_ = [True]
        outbox = Outbox(clock, lambda kind, seq, at, key, data: open_[0] and not taken.append(data),
                        10, realtime=False, keep=True)  # fmt: skip
        outbox.frame(b"a")
        open_[0] = False
        outbox.frame(b"b")
        outbox.frame(b"c")
        outbox.stopProducing()
        open_[0] = True
        outbox.resend()
        self.assertEqual(taken, [b"a", b"a", b"b", b"c"])


class SourceArgsTests(SynchronousTestCase):
    def test_test_pattern(self) -> None:
        args = Source(None, 10, (320, 240), 2.0).args()
        self.assertIn("testsrc2=size=320x240:rate=10:duration=2", args)
        self.assertIn("sine=frequency=440:sample_rate=44100:duration=2", args)
        self.assertEqual(args[-1], "pipe:3")

    def test_file_without_audio(self) -> None:
        """A file's first real video stream (not a cover picture), and no audio pipe when the
        file has no audio: ffmpeg refuses an output without a stream."""
        args = Source("in.mp4", 15, None, None, audio=False).args()
        self.assertEqual(args[args.index("-map") + 1], "0:V:0")
        self.assertIn("fps=15", args)
        self.assertNotIn("pipe:3", args)

    def test_console_script_declared(self) -> None:
        setup = configparser.ConfigParser()
        setup.read(ROOT / "setup.cfg")
        scripts = setup["options.entry_points"]["console_scripts"].split("\n")
        self.assertIn("livestream-send = livestream.cli.send.main:main", scripts)


def tone(seconds: float) -> bytes:
    """The PCM the test pattern's ffmpeg makes for ``seconds``: the same arguments, the audio
    output alone, to stdout."""
    args = Source(None, 10, (320, 240), seconds, video=False).args()
    assert args[-1] == "pipe:3"
    return subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *args[:-1], "pipe:1"],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    ).stdout  # fmt: skip


class SendTests(TestCase):
    timeout = 60

    async def serve(self, **options) -> int:
        self.media = Path(self.mktemp()).absolute() / "media"
        self.service, port = await start_server(self, self.media, fps=10, **options)
        return port

    async def send(self, *argv: str, env: dict[str, str] | None = None):
        """Run ``python -m livestream.cli.send.main``; return (exit status, stdout, stderr,
        seconds)."""
        started = time.monotonic()
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "livestream.cli.send.main", *argv],
            env=dict(os.environ, PYTHONPATH=os.fspath(ROOT), **(env or {})),
            reactor=reactor,
        )  # fmt: skip
        return code, out.decode(), err.decode(), time.monotonic() - started

    def check_recording(self, stdout: str, frames: int, seconds: float) -> None:
        names = json.loads(stdout)
        video = video_facts(self.media / "video" / names["video"])
        self.assertEqual((video.codec, video.frames), ("h264", frames))
        samples = wav_facts(self.media / "audio" / names["audio"]).samples
        self.assertAlmostEqual(samples, seconds * 44100, delta=4410)

    async def test_real_time_json(self) -> None:
        """The test pattern for 2 s at 10 fps, paced: 20 frames and 2 s of tone, taking about
        2 s; the progress goes to stderr and only the names to stdout."""
        port = await self.serve()
        code, out, err, took = await self.send(
            f"ws://127.0.0.1:{port}/", "--test-pattern", "--duration", "2", "--fps", "10",
            "--size", "320x240", "--id", "pattern",
        )  # fmt: skip
        self.assertEqual(code, 0, err)
        self.assertGreater(took, 1.9)
        self.assertEqual(out.count("\n"), 1)
        self.assertTrue(json.loads(out)["video"].startswith("pattern_"))
        self.assertIn("20 frames, 2.0 s audio", err.splitlines()[-1])
        self.check_recording(out, 20, 2)

    async def test_fast_binary(self) -> None:
        """--fast --binary: 8 s of media goes in well under 8 s, all of it recorded."""
        port = await self.serve()
        code, out, err, took = await self.send(
            f"ws://127.0.0.1:{port}/", "--test-pattern", "--duration", "8", "--fps", "10",
            "--size", "320x240", "--fast", "--binary",
        )  # fmt: skip
        self.assertEqual(code, 0, err)
        self.assertLess(took, 7)
        self.check_recording(out, 80, 8)

    async def test_file(self) -> None:
        """A 25 fps MP4 with AAC audio, sent at 10 fps: 2 s of it is 20 frames and 2 s of
        audio."""
        tmp = Path(self.mktemp()).absolute()
        tmp.mkdir(parents=True)
        clip = tmp / "clip.mp4"
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
             "-i", "testsrc=size=320x240:rate=25:duration=2", "-f", "lavfi",
             "-i", "sine=frequency=300:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-shortest", os.fspath(clip)],
            check=True, stdin=subprocess.DEVNULL, timeout=30,
        )  # fmt: skip
        port = await self.serve()
        code, out, err, _ = await self.send(
            f"ws://127.0.0.1:{port}/", os.fspath(clip), "--fps", "10", "--fast"
        )
        self.assertEqual(code, 0, err)
        self.check_recording(out, 20, 2)
        self.assertEqual(video_facts(self.media / "video" / json.loads(out)["video"]).width, 320)

    async def test_tokens(self) -> None:
        """A token from LIVESTREAM_TOKEN opens the session; a bad one (or none) is refused with
        one readable line and exit status 1, and no recording."""
        port = await self.serve(access=Access(Verifier(SECRET)))
        url = f"ws://127.0.0.1:{port}/"
        good = mint(SECRET, ["publish"], 300)
        code, out, err, _ = await self.send(url, "--test-pattern", "--duration", "1", "--fast",
                                            env={"LIVESTREAM_TOKEN": good})  # fmt: skip
        self.assertEqual(code, 0, err)
        for argv in (["--token", "not-a-token"], ["--token", mint(b"x" * 32, ["publish"], 300)]):
            code, out, err, _ = await self.send(url, "--test-pattern", "--duration", "1", *argv)
            self.assertEqual((code, out), (1, ""))
            self.assertEqual(err.count("\n"), 1, err)
            self.assertTrue(err.startswith("livestream-send: unauthorized: "), err)
        code, out, err, _ = await self.send(url, "--test-pattern", "--duration", "1",
                                            env={"LIVESTREAM_TOKEN": ""})  # fmt: skip
        self.assertEqual(code, 1)
        self.assertIn("unauthorized", err)

    async def test_bad_urls_and_sources(self) -> None:
        """What cannot work stops at once with one line: not a WebSocket URL (a usage error),
        nothing listening, a file that is not there."""
        code, _, err, _ = await self.send("http://127.0.0.1/", "--test-pattern")
        self.assertEqual(code, 2)
        self.assertIn("not a ws:// or wss:// URL", err)
        closed_port = free_port()
        code, _, err, _ = await self.send(f"ws://127.0.0.1:{closed_port}/", "--test-pattern")
        self.assertEqual((code, err),
                         (1, f"livestream-send: cannot connect to ws://127.0.0.1:{closed_port}/: "
                             "Connection refused\n"))  # fmt: skip
        code, _, err, _ = await self.send(f"ws://127.0.0.1:{closed_port}/", "/nonexistent.mp4")
        self.assertEqual(code, 1)
        self.assertIn("/nonexistent.mp4: ", err)
        self.assertIn("No such file", err)

    async def test_server_gone(self) -> None:
        """The daemon stopping mid-stream (it finishes the recording, sends CLOSED, then closes
        with 1012) ends the sender with status 1 and says so; the names still go to stdout."""
        port = await self.serve()
        sending = Deferred.fromCoroutine(
            self.send(f"ws://127.0.0.1:{port}/", "--test-pattern", "--fps", "10")
        )
        registry = self.service.getServiceNamed("sessions")
        while not registry.sessions or registry.sessions[0].frames < 5:
            await sleep(0.1)
        await self.service.stopService()
        code, out, err, _ = await sending
        self.assertEqual(code, 1)
        self.assertIn("livestream-send: the server closed the connection (1012", err)
        names = json.loads(out)
        frames = video_facts(self.media / "video" / names["video"]).frames
        # Frames still in flight as the daemon closed the session were refused (session_closed).
        sent = int(err.split(" frames,")[0].split()[-1])
        self.assertTrue(5 <= frames <= sent, (frames, sent))

    async def test_interrupted(self) -> None:
        """Ctrl-C (SIGINT) ends the stream, not the recording: what was read is sent at once,
        the session is closed, and the names printed, with status 0."""
        port = await self.serve()
        done = Collect()
        argv = [sys.executable, "-m", "livestream.cli.send.main", f"ws://127.0.0.1:{port}/",
                "--test-pattern", "--fps", "10", "--size", "320x240"]  # fmt: skip
        reactor.spawnProcess(done, sys.executable, argv,
                             env=dict(os.environ, PYTHONPATH=os.fspath(ROOT)))  # fmt: skip
        registry = self.service.getServiceNamed("sessions")
        while not registry.sessions or registry.sessions[0].frames < 10:
            await sleep(0.1)
        done.transport.signalProcess("INT")
        code = await done.ended
        out, err = done.out.decode(), done.err.decode()
        self.assertEqual(code, 0, err)
        frames = video_facts(self.media / "video" / json.loads(out)["video"]).frames
        self.assertIn(f"{frames} frames", err.splitlines()[-1])

    async def test_wss_with_cafile(self) -> None:
        """wss:// verifies the server's certificate: with the test CA in --cafile it records;
        without it (the system's trust store), it does not connect."""
        tmp = Path(self.mktemp()).absolute()
        key, cert = server_files(tmp / "tls")
        ca = tmp / "ca.pem"
        ca.write_bytes(authority("livestream test CA")[1].public_bytes(serialization.Encoding.PEM))
        port = await self.serve(
            listen=f"ssl:{{port}}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        )
        url = f"wss://localhost:{port}/"
        code, out, err, _ = await self.send(url, "--test-pattern", "--duration", "1", "--fast",
                                            "--fps", "10", "--cafile", os.fspath(ca))  # fmt: skip
        self.assertEqual(code, 0, err)
        self.check_recording(out, 10, 1)
        code, out, err, _ = await self.send(url, "--test-pattern", "--duration", "1")
        self.assertEqual((code, out), (1, ""))


class ResumeTests(TestCase):
    """The sender against a server that offers resume (and one that does not), its connection
    cut from the server's side while it streams, as a failing network would."""

    timeout = 30
    SECONDS = 3.5
    FPS = 10

    async def serve(self, **options) -> int:
        self.media = Path(self.mktemp()).absolute() / "media"
        self.service, self.port = await start_server(self, self.media, fps=self.FPS, **options)
        self.registry = self.service.getServiceNamed("sessions")
        return self.port

    def start(self, *argv: str) -> Collect:
        """Stream the test pattern for SECONDS in real time, in a subprocess."""
        done = Collect()
        command = [sys.executable, "-m", "livestream.cli.send.main", f"ws://127.0.0.1:{self.port}/",
                   "--test-pattern", "--duration", f"{self.SECONDS:g}", "--fps", str(self.FPS),
                   "--size", "320x240", "--id", "fragile", "--ffmpeg", ffmpeg_exe(),
                   *argv]  # fmt: skip
        reactor.spawnProcess(done, sys.executable, command,
                             env=dict(os.environ, PYTHONPATH=os.fspath(ROOT)))  # fmt: skip
        return done

    async def cut(self, after_frames: int, previous: object = None) -> object:
        """Cut the live session's connection once it has ``after_frames`` (see
        :func:`tests.support.waiting.cut_connection`); return the connection cut."""
        return await cut_connection(self.registry, after_frames, previous)

    async def cut_three_times(self, *argv: str) -> None:
        port = await self.serve()
        done = self.start(*argv)
        owner = None
        for frames in (5, 12, 20):
            owner = await self.cut(frames, owner)
        code = await done.ended
        out, err = done.out.decode(), done.err.decode()
        self.assertEqual(code, 0, err)
        self.assertIn("35 frames, 3.5 s audio", err.splitlines()[-1])
        resent = re.search(r"resumed after 3 drops \((\d+) chunks sent again\)", err)
        self.assertIsNotNone(resent, err)
        self.assertGreater(int(resent[1]), 0)  # the cuts did lose chunks in flight
        self.assertEqual(out.count("\n"), 1)
        names = json.loads(out)
        self.assertEqual(names["video"][:-4], names["audio"][:-4])
        # One recording: the cuts did not start others.
        self.assertEqual(await get_json(port, "/recordings"),
                         {"video": [names["video"]], "audio": [names["audio"]]})  # fmt: skip
        video = video_facts(self.media / "video" / names["video"])
        self.assertEqual(video.frames, round(self.SECONDS * self.FPS))
        self.assertEqual(wav_facts(self.media / "audio" / names["audio"]).data,
                         tone(self.SECONDS))  # fmt: skip

    async def test_cut_three_times_json(self) -> None:
        """Cut three times, the sender comes back each time with its resume token and sends
        again what was not acknowledged: one recording, every frame and sample once."""
        await self.cut_three_times()

    async def test_cut_three_times_binary(self) -> None:
        await self.cut_three_times("--binary")

    async def test_without_resume_a_cut_ends_it(self) -> None:
        """A server that does not offer resume (--resume-grace 0, or an older one): a cut ends
        the sender with status 1 and one line; the server keeps what it got."""
        await self.serve(resume_grace=0)
        done = self.start()
        await self.cut(5)
        code = await done.ended
        out, err = done.out.decode(), done.err.decode()
        self.assertEqual((code, out), (1, ""), err)
        self.assertEqual(err.splitlines()[-1], "livestream-send: the connection was lost")
        listing = await get_json(self.port, "/recordings")
        self.assertEqual((len(listing["video"]), len(listing["audio"])), (1, 1))

    async def test_resume_failed(self) -> None:
        """The server ended the session before the sender came back (its grace ran out):
        status 1, and one line that names the files the server made of it."""
        await self.serve()
        done = self.start()
        await self.cut(12)  # a second in, after ACKs that acknowledged frames and audio
        (session,) = self.registry.sessions
        finished = session.finish(DISCONNECT)
        code = await done.ended
        out, err = done.out.decode(), done.err.decode()
        self.assertEqual((code, out), (1, ""), err)
        line = err.splitlines()[-1]
        self.assertTrue(line.startswith(
            "livestream-send: the connection was lost and the server could not resume the "
            "session (resume_failed: "
        ), line)  # fmt: skip
        self.assertTrue(line.endswith(f"should be in {session.name}.mp4 and {session.name}.wav"),
                        line)  # fmt: skip
        await finished
        listing = await get_json(self.port, "/recordings")
        self.assertEqual(listing, {"video": [f"{session.name}.mp4"],
                                   "audio": [f"{session.name}.wav"]})  # fmt: skip
