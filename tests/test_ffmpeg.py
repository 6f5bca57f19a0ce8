"""ffmpeg as a child: how its end is reported, how its input is ended, and how it is found."""

from __future__ import annotations

import os
import stat

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from livestream.recording import ffmpeg
from livestream.recording.ffmpeg import (
    COMMON_ARGS,
    STDERR_TAIL_LINES,
    FFmpegProcess,
    FFmpegResult,
    FFmpegUnusable,
    end_input,
)
from tests.support.fakes import FakeProcessTransport, ProcessReactor


def ended(proto: FFmpegProcess, error: Exception) -> None:
    proto.processEnded(Failure(error))


def result_of(proto: FFmpegProcess) -> FFmpegResult:
    results: list[FFmpegResult] = []
    proto.ended.addCallback(results.append)
    assert results, "ended has not fired"
    return results[0]


class ProcessProtocolTests(SynchronousTestCase):
    def test_stderr_lines_split_mid_line(self) -> None:
        """stderr arrives in arbitrary pieces; the tail must hold whole lines, not fragments."""
        proto = FFmpegProcess("t")
        for piece in (b"first li", b"ne\nsecond", b" line\n\nthi", b"rd\r\n"):
            proto.errReceived(piece)
        ended(proto, ProcessTerminated(exitCode=1))
        self.assertEqual(result_of(proto).stderr_tail, "first line\nsecond line\nthird")

    def test_unterminated_last_line_kept(self) -> None:
        """ffmpeg's last word (often the reason it failed) may lack a newline; it is kept."""
        proto = FFmpegProcess("t")
        proto.errReceived(b"a\nConversion failed!")
        ended(proto, ProcessTerminated(exitCode=1))
        self.assertEqual(result_of(proto).stderr_tail, "a\nConversion failed!")

    def test_tail_bounded(self) -> None:
        """A chatty ffmpeg cannot make a session hold unbounded stderr: only the last lines."""
        proto = FFmpegProcess("t")
        proto.errReceived(b"".join(b"line %d\n" % i for i in range(STDERR_TAIL_LINES * 5)))
        ended(proto, ProcessDone(0))
        lines = result_of(proto).stderr_tail.split("\n")
        self.assertEqual(len(lines), STDERR_TAIL_LINES)
        self.assertEqual(lines[-1], f"line {STDERR_TAIL_LINES * 5 - 1}")

    def test_long_line_without_newline_bounded(self) -> None:
        """Megabytes of stderr with no newline are not all kept either."""
        proto = FFmpegProcess("t")
        for _ in range(100):
            proto.errReceived(b"x" * 100000)
        ended(proto, ProcessTerminated(exitCode=1))
        self.assertLessEqual(len(result_of(proto).stderr_tail), 10000)

    def test_invalid_utf8(self) -> None:
        """Undecodable stderr (file names in other encodings) does not break the report."""
        proto = FFmpegProcess("t")
        proto.errReceived(b"bad \xff\xfe name\n")
        ended(proto, ProcessTerminated(exitCode=1))
        self.assertIn("bad", result_of(proto).stderr_tail)

    def test_process_done(self) -> None:
        """A clean exit is ok, so the recording is published without complaint."""
        proto = FFmpegProcess("t")
        ended(proto, ProcessDone(0))
        result = result_of(proto)
        self.assertTrue(proto.exited)
        self.assertEqual((result.ok, result.exit_code, result.signal), (True, 0, None))

    def test_exit_code(self) -> None:
        """A failing exit is not ok and keeps what ffmpeg said about it."""
        proto = FFmpegProcess("t")
        proto.errReceived(b"Unknown encoder 'libx264'\n")
        ended(proto, ProcessTerminated(exitCode=1))
        result = result_of(proto)
        self.assertFalse(result.ok)
        self.assertEqual((result.exit_code, result.signal), (1, None))
        self.assertEqual(result.stderr_tail, "Unknown encoder 'libx264'")

    def test_signal(self) -> None:
        """Death by signal (the grace period ran out, or OOM) is reported as such."""
        proto = FFmpegProcess("t")
        ended(proto, ProcessTerminated(signal=9))
        result = result_of(proto)
        self.assertFalse(result.ok)
        self.assertEqual((result.exit_code, result.signal), (None, 9))

    def test_describe(self) -> None:
        """The log line says how ffmpeg ended and what it said."""
        self.assertEqual(
            FFmpegResult(1, None, "boom").describe(), "ffmpeg ended with exit status 1: boom"
        )
        self.assertEqual(
            FFmpegResult(None, 15, "").describe(), "ffmpeg ended with signal 15: (no output)"
        )

    def test_stdout_ignored(self) -> None:
        """Output on stdout is dropped, not mixed into the stderr tail."""
        proto = FFmpegProcess("t")
        proto.outReceived(b"noise\n")
        ended(proto, ProcessDone(0))
        self.assertEqual(result_of(proto).stderr_tail, "")


class SpawnTests(SynchronousTestCase):
    def test_spawn_argv(self) -> None:
        """ffmpeg gets quiet common arguments, stdin as a pipe and a minimal environment."""
        reactor = ProcessReactor()
        os.environ["LIVESTREAM_TEST_SECRET"] = "x"
        self.addCleanup(os.environ.pop, "LIVESTREAM_TEST_SECRET")
        proto = ffmpeg.spawn(reactor, "/bin/ffmpeg", ["-i", "in", "out"], "label")
        (call,) = reactor.spawned
        self.assertIs(call["proto"], proto)
        self.assertEqual(call["args"], ["/bin/ffmpeg", *COMMON_ARGS, "-i", "in", "out"])
        self.assertEqual(call["childFDs"], {0: "w", 1: "r", 2: "r"})
        self.assertNotIn("LIVESTREAM_TEST_SECRET", call["env"])
        self.assertFalse(call["transport"].stdin_closed)

    def test_spawn_extra_pipes(self) -> None:
        """A caller that reads ffmpeg's output passes its own protocol and further pipes."""
        reactor = ProcessReactor()
        mine = FFmpegProcess("reader")
        proto = ffmpeg.spawn(reactor, "/bin/ffmpeg", ["out"], "reader", proto=mine, read_fds=[3])
        (call,) = reactor.spawned
        self.assertIs(proto, mine)
        self.assertIs(call["proto"], mine)
        self.assertEqual(call["childFDs"], {0: "w", 1: "r", 2: "r", 3: "r"})

    def test_run_closes_stdin(self) -> None:
        """A one-shot run must not leave ffmpeg waiting for input that never comes."""
        reactor = ProcessReactor()
        d = ffmpeg.run(reactor, "/bin/ffmpeg", ["-i", "x"], "label")
        (call,) = reactor.spawned
        self.assertTrue(call["transport"].stdin_closed)
        self.assertNoResult(d)
        ended(call["proto"], ProcessDone(0))
        self.assertTrue(self.successResultOf(d).ok)


class EndInputTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.proto = FFmpegProcess("t")
        self.transport = FakeProcessTransport()
        self.proto.makeConnection(self.transport)

    def finish(self, error: Exception) -> None:
        self.transport.exited = True
        ended(self.proto, error)

    def test_unregister_before_close(self) -> None:
        """The producer is unregistered first: closing stdin with a producer still attached
        would let the pipe call back into a session that has stopped feeding it."""
        end_input(self.clock, self.proto, 30)
        self.assertEqual(self.transport.calls, [("unregisterProducer",), ("closeStdin",)])

    def test_ends_before_grace(self) -> None:
        """A normal finish is never signalled and leaves no timer behind (a leftover timer
        would fire later against a dead process, or keep a test reactor dirty)."""
        d = end_input(self.clock, self.proto, 30)
        self.clock.advance(29)
        self.finish(ProcessDone(0))
        self.assertTrue(self.successResultOf(d).ok)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(self.transport.signals(), [])

    def test_term_then_kill(self) -> None:
        """A hung ffmpeg gets TERM after the grace period, then KILL 5 seconds later."""
        d = end_input(self.clock, self.proto, 30)
        self.clock.advance(29.9)
        self.assertEqual(self.transport.signals(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.transport.signals(), ["TERM"])
        self.clock.advance(4.9)
        self.assertEqual(self.transport.signals(), ["TERM"])
        self.clock.advance(0.1)
        self.assertEqual(self.transport.signals(), ["TERM", "KILL"])
        self.assertNoResult(d)
        self.finish(ProcessTerminated(signal=9))
        self.assertEqual(self.successResultOf(d).signal, 9)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_term_suffices(self) -> None:
        """If TERM ends it, KILL is never sent and its timer is cancelled."""
        d = end_input(self.clock, self.proto, 2)
        self.clock.advance(2)
        self.finish(ProcessTerminated(signal=15))
        self.assertEqual(self.successResultOf(d).signal, 15)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.transport.signals(), ["TERM"])

    def test_exited_already_when_signalled(self) -> None:
        """A process that died without its end being delivered yet is not signalled again."""
        d = end_input(self.clock, self.proto, 1)
        self.transport.exited = True
        self.clock.advance(1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        ended(self.proto, ProcessDone(0))
        self.assertTrue(self.successResultOf(d).ok)

    def test_already_exited(self) -> None:
        """An encoder that already died (mid-stream failure) is not timed or signalled."""
        self.finish(ProcessTerminated(exitCode=1))
        d = end_input(self.clock, self.proto, 30)
        self.assertEqual(self.successResultOf(d).exit_code, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FindTests(SynchronousTestCase):
    def stand_in(self, body: str, name: str = "ffmpeg") -> str:
        """An executable shell script in a fresh directory, standing in for ffmpeg."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body + "\n")
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        return path

    def test_explicit_missing(self) -> None:
        """A mistyped --ffmpeg is refused at start, naming the path."""
        error = self.assertRaises(FFmpegUnusable, ffmpeg.find, "/nonexistent/ffmpeg")
        self.assertIn("/nonexistent/ffmpeg", str(error))

    def test_explicit_not_executable(self) -> None:
        """A file that cannot be executed is no ffmpeg."""
        path = self.stand_in("exit 0")
        os.chmod(path, 0o644)
        self.assertRaises(FFmpegUnusable, ffmpeg.find, path)

    def test_explicit_fails(self) -> None:
        """An ffmpeg that cannot even list its encoders (broken libraries) is refused at start,
        not discovered at the first recording."""
        path = self.stand_in("exit 1")
        error = self.assertRaises(FFmpegUnusable, ffmpeg.find, path)
        self.assertIn(path, str(error))

    def test_explicit_without_libx264(self) -> None:
        """Distribution builds without libx264 cannot make the H.264 recordings promised."""
        path = self.stand_in('echo " V....D mpeg4    MPEG-4 part 2"\necho " A....D aac   AAC"')
        error = self.assertRaises(FFmpegUnusable, ffmpeg.find, path)
        self.assertIn("libx264", str(error))

    def test_explicit_with_libx264(self) -> None:
        """An ffmpeg that lists libx264 is taken as given."""
        path = self.stand_in('echo " V....D libx264   libx264 H.264 / AVC"')
        self.assertEqual(ffmpeg.find(path), path)

    def test_unusable_on_path_falls_back(self) -> None:
        """A PATH ffmpeg without libx264 does not stop the daemon when the bundled one works."""
        bad = self.stand_in("exit 0")
        self.patch(ffmpeg, "_bundled", lambda: self.stand_in('echo " V libx264"', "bundled"))
        old = os.environ["PATH"]
        os.environ["PATH"] = os.path.dirname(bad)
        self.addCleanup(os.environ.__setitem__, "PATH", old)
        self.assertTrue(ffmpeg.find(None).endswith("/bundled"))

    def test_none_usable_says_how_to_fix(self) -> None:
        """When nothing works the one-line error names the ways out."""
        bad = self.stand_in("exit 3")
        self.patch(ffmpeg, "_bundled", lambda: None)
        old = os.environ["PATH"]
        os.environ["PATH"] = os.path.dirname(bad)
        self.addCleanup(os.environ.__setitem__, "PATH", old)
        error = str(self.assertRaises(FFmpegUnusable, ffmpeg.find, None))
        self.assertIn("exit status 3", error)
        self.assertIn("--ffmpeg", error)
        self.assertIn("pip install", error)
        self.assertNotIn("\n", error)

    def test_real(self) -> None:
        """The ffmpeg the tests and the daemon use is found and has libx264."""
        path = ffmpeg.find(None)
        self.assertTrue(os.access(path, os.X_OK))
