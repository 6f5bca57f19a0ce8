"""One client's session against a memory reactor: ffmpeg is a fake process, the store is real.

The encoder is never run here; each test plays its part (writing the fragmented MP4, ending with
some status) through the fake transport, so the state machine is checked step by step.
"""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from livestream.library.tree import (
    AAC_STREAM,
    AUDIO_STREAM,
    VIDEO_PART,
    VIDEO_STREAM,
    MediaTree,
)
from livestream.recording import mp4
from livestream.recording.aac import SILENCE_BLOCK
from livestream.recording.encoder import RING_MIN_BYTES, RING_SECONDS, STALL_TIMEOUT
from livestream.recording.video import EncoderSettings
from livestream.sessions.errors import SessionError as ProtocolError
from livestream.sessions.outcome import CLOSE, DISCONNECT, SHUTDOWN, STORAGE
from livestream.sessions.session import Session, SessionLimits
from livestream.wire.kinds import AUDIO, VIDEO, MediaKind
from tests.support.disks import FailingWrites
from tests.support.fakes import ProcessReactor
from tests.support.media import jpeg_frames, pcm

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452")


class Producer:
    """The socket side of back-pressure, as the encoder's stdin sees it."""

    paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


class SessionTestCase(SynchronousTestCase):
    grace = 30.0

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.store = MediaTree(self.mktemp())
        self.store.ensure()
        self.settings = EncoderSettings("/fake/ffmpeg", 15, "veryfast", grace=self.grace)
        self.errors: list[tuple[str, str]] = []
        self.producer = Producer()
        self.session = self.open("alice", 1700000000000)

    limits = SessionLimits(max_seconds=3600.0, max_bytes=1 << 30)

    def open(self, client_id: str, ms: int) -> Session:
        name = self.store.reserve(client_id, ms)
        return Session(
            self.reactor,
            self.settings,
            self.store,
            client_id,
            name,
            "peer",
            self.producer,
            lambda code, msg: self.errors.append((code, msg)),
            self.limits,
        )

    def encoder(self) -> dict:
        """The one encoder spawned so far."""
        self.assertEqual(len(self.reactor.spawned), 1)
        return self.reactor.spawned[0]

    def encoder_writes_fragments(self, suffix: str = VIDEO_STREAM) -> None:
        """What a working encoder leaves: a fragmented MP4 with a movie fragment in it."""
        boxes = b"".join(
            (8 + len(body)).to_bytes(4, "big") + kind + body
            for kind, body in [(b"ftyp", b"isom"), (b"moof", b"...."), (b"mdat", b"frame")]
        )
        self.store.temp_path(self.session.name, suffix).write_bytes(boxes)

    def fragmented(self, name: str, samples: int, partial: bool = False) -> None:
        """What an encoder leaves: ``name`` (a temp suffix of the session, or a piece's file
        name) as a fragmented MP4 with ``samples`` samples in one fragment, and with
        ``partial`` a fragment cut short after it."""
        path = self.store.dir("temp") / (
            f"{self.session.name}{name}" if name.startswith(".") else name
        )
        whole = mp4.fragment(1, 0, [mp4.Sample(b"x", 1, True)] * samples)
        path.write_bytes(b"\0\0\0\x0cftypisom" + whole + (whole[:-3] if partial else b""))

    def end(self, call: dict, error: Exception) -> None:
        call["transport"].exited = True
        call["proto"].processEnded(Failure(error))

    def temp_files(self) -> list[str]:
        return sorted(p.name for p in self.store.dir("temp").iterdir())


class AudioSessionTests(SessionTestCase):
    def test_audio_only(self) -> None:
        """A client that sends only audio gets its WAV and no video, and no ffmpeg is run."""
        chunks = [pcm(441, seed=i) for i in range(5)]
        for chunk in chunks:
            self.session.stream(MediaKind.AUDIO, chunk)
        outcome = self.successResultOf(self.session.finish(CLOSE))
        name = self.session.name
        self.assertEqual(
            (outcome.reason, outcome.video, outcome.audio, outcome.failed),
            (CLOSE, None, f"{name}.wav", False),
        )
        self.assertEqual((outcome.frames, outcome.audio_bytes), (0, 441 * 2 * 5))
        self.assertEqual(self.reactor.spawned, [])
        wav = self.store.final_path(AUDIO, name).read_bytes()
        self.assertEqual(wav[44:], b"".join(chunks))
        self.assertEqual(self.temp_files(), [])
        self.assertEqual(self.store.listing(), {"video": [], "audio": [f"{name}.wav"]})

    def test_nothing_received(self) -> None:
        """A session that received nothing publishes nothing and frees its name."""
        outcome = self.successResultOf(self.session.finish(DISCONNECT))
        self.assertEqual((outcome.video, outcome.audio, outcome.failed), (None, None, False))
        self.assertEqual(self.store.listing(), {"video": [], "audio": []})
        self.assertEqual(self.store.reserve("alice", 1700000000000), self.session.name)

    def test_finishes_once(self) -> None:
        """CLOSE, then the socket dropping, then daemon shutdown: the first reason wins and all
        callers see the same single outcome."""
        self.session.stream(MediaKind.AUDIO, pcm(10))
        waiting = self.session.finished()
        first = self.session.finish(CLOSE)
        second = self.session.finish(DISCONNECT)
        third = self.session.finish(SHUTDOWN)
        outcomes = [self.successResultOf(d) for d in (waiting, first, second, third)]
        self.assertEqual(outcomes[0].reason, CLOSE)
        for outcome in outcomes[1:]:
            self.assertIs(outcome, outcomes[0])
        self.assertEqual(outcomes[0].audio, f"{self.session.name}.wav")
        self.assertIs(self.successResultOf(self.session.finished()), outcomes[0])

    def test_stream_after_finish(self) -> None:
        """Chunks after the end are refused with a code, not appended to a published file."""
        self.session.stream(MediaKind.AUDIO, pcm(10))
        outcome = self.successResultOf(self.session.finish(CLOSE))
        for kind, chunk in ((MediaKind.AUDIO, pcm(10)), (MediaKind.VIDEO, jpeg_frames(1)[0])):
            error = self.assertRaises(ProtocolError, self.session.stream, kind, chunk)
            self.assertEqual(error.code, "session_closed")
        self.assertEqual(self.reactor.spawned, [])
        wav = self.store.final_path(AUDIO, self.session.name).read_bytes()
        self.assertEqual(len(wav) - 44, outcome.audio_bytes)

    def test_connection_lost(self) -> None:
        """A dropped socket finalizes with reason disconnect and lets shutdown stop waiting."""
        gone = self.session.gone()
        self.assertNoResult(gone)
        self.assertFalse(self.session.ending)
        self.session.connection_lost()
        self.assertTrue(self.session.ending)
        self.successResultOf(gone)
        self.successResultOf(self.session.gone())
        self.assertEqual(self.successResultOf(self.session.finished()).reason, DISCONNECT)

    def test_storage_error(self) -> None:
        """A disk problem while writing ends the session with what it had, and says so; it is
        not an exception out of the protocol."""
        self.session.stream(MediaKind.AUDIO, pcm(10))
        # Writes to /dev/full fail as a full disk does: ENOSPC.
        self.session._audio._file.close()
        self.session._audio._file = open("/dev/full", "wb", buffering=0)
        self.session.stream(MediaKind.AUDIO, pcm(10))
        self.assertEqual([code for code, _ in self.errors][:1], ["storage_full"])
        self.assertTrue(self.session.ending)

    def test_storage_failure_is_not_a_full_disk(self) -> None:
        """Any other error of a write (EIO here, injected where the WAV is written: no device
        fails on demand) ends the session with ``storage_failed`` naming the error but not the
        path, and what was written before is published."""
        chunks = [pcm(10, seed=i) for i in range(3)]
        for chunk in chunks[:2]:
            self.session.stream(MediaKind.AUDIO, chunk)
        self.session._audio._file = FailingWrites(self.session._audio._file, errno.EIO)
        self.session.stream(MediaKind.AUDIO, chunks[2])
        [(code, message)] = self.errors
        self.assertEqual(code, "storage_failed")
        self.assertIn("EIO", message)
        self.assertNotIn(self.store.root.name, message)
        outcome = self.successResultOf(self.session.finished())
        self.assertEqual((outcome.reason, outcome.failed), (STORAGE, False))
        wav = self.store.final_path(AUDIO, self.session.name).read_bytes()
        self.assertEqual(wav[44:], b"".join(chunks[:2]))

    def test_size_limit_finishes_with_what_fit(self) -> None:
        """A session that reaches its byte limit is finished, keeping what came before."""
        self.session = self.open("bob", 1700000000001)
        self.limits = SessionLimits(max_seconds=3600.0, max_bytes=25)
        session = self.open("carol", 1700000000002)
        session.stream(MediaKind.AUDIO, pcm(10))
        session.stream(MediaKind.AUDIO, pcm(10))
        outcome = self.successResultOf(session.finished())
        self.assertEqual((outcome.reason, outcome.audio_bytes), ("limit", 20))
        self.assertEqual([code for code, _ in self.errors], ["limit_reached"])

    def test_duration_limit(self) -> None:
        self.limits = SessionLimits(max_seconds=5.0, max_bytes=1 << 30)
        session = self.open("dave", 1700000000003)
        session.stream(MediaKind.AUDIO, pcm(10))
        self.reactor.advance(4.9)
        self.assertFalse(session.ending)
        self.reactor.advance(0.2)
        outcome = self.successResultOf(session.finished())
        self.assertEqual(outcome.reason, "limit")
        self.assertEqual([code for code, _ in self.errors], ["limit_reached"])

    def test_finalize_failure_keeps_temp(self) -> None:
        """If the WAV cannot be published now, the session still ends (callers are not left
        hanging), reports it, and leaves the temp file for recovery."""
        self.session.stream(MediaKind.AUDIO, pcm(10))
        self.store.dir(AUDIO).rmdir()
        outcome = self.successResultOf(self.session.finish(CLOSE))
        self.assertTrue(outcome.failed)
        self.assertIsNone(outcome.audio)
        self.assertEqual([code for code, _ in self.errors], ["finalize_failed"])
        self.assertEqual(self.temp_files(), [f"{self.session.name}{AUDIO_STREAM}"])


class VideoSessionTests(SessionTestCase):
    grace = 2.0

    def test_not_a_jpeg(self) -> None:
        """A first chunk that is not a JPEG is refused and starts no encoder; a real frame
        afterwards still does."""
        for chunk in (PNG, b"\xff\xd8\xff\xd9", jpeg_frames(1)[0][:-2]):
            error = self.assertRaises(ProtocolError, self.session.stream, MediaKind.VIDEO, chunk)
            self.assertEqual(error.code, "invalid_jpeg")
        self.assertEqual(self.reactor.spawned, [])
        self.session.stream(MediaKind.VIDEO, jpeg_frames(1)[0])
        self.assertEqual(len(self.reactor.spawned), 1)

    def test_encoder_started_at_first_frame(self) -> None:
        """The first frame starts one encoder at its size (odd sizes rounded down to even),
        writing into temp/, with back-pressure to the socket registered."""
        frames = jpeg_frames(3, "641x481")
        for frame in frames:
            self.session.stream(MediaKind.VIDEO, frame)
        call = self.encoder()
        args = call["args"]
        self.assertEqual(call["executable"], "/fake/ffmpeg")
        self.assertEqual(args[args.index("-framerate") + 1], "15")
        self.assertEqual(args[args.index("-preset") + 1], "veryfast")
        self.assertIn("scale=640:480:", args[args.index("-vf") + 1])
        self.assertEqual(args[-1], str(self.store.temp_path(self.session.name, VIDEO_STREAM)))
        self.assertEqual(call["transport"].written, list(frames))
        call["transport"].producer.pauseProducing()
        self.assertTrue(self.producer.paused)
        call["transport"].producer.resumeProducing()
        self.assertFalse(self.producer.paused)
        self.assertEqual(self.session.frames, 3)

    def test_bad_later_frame_not_piped(self) -> None:
        """A broken frame mid-stream is refused and never reaches ffmpeg's pipe, where it
        would corrupt its neighbours."""
        good = jpeg_frames(2)
        self.session.stream(MediaKind.VIDEO, good[0])
        error = self.assertRaises(ProtocolError, self.session.stream, MediaKind.VIDEO, good[1][:-5])
        self.assertEqual(error.code, "invalid_jpeg")
        self.session.stream(MediaKind.VIDEO, good[1])
        self.assertEqual(self.encoder()["transport"].written, list(good))

    def test_close_waits_for_encoder_then_publishes(self) -> None:
        """CLOSE ends ffmpeg's input, waits for it, makes the faststart copy, publishes the MP4
        and leaves temp/ empty."""
        self.session.stream(MediaKind.VIDEO, jpeg_frames(1)[0])
        self.session.stream(MediaKind.AUDIO, pcm(100))
        d = self.session.finish(CLOSE)
        call = self.encoder()
        self.assertEqual(call["transport"].calls[-2:], [("unregisterProducer",), ("closeStdin",)])
        self.assertNoResult(d)
        self.encoder_writes_fragments()
        self.end(call, ProcessDone(0))
        self.assertNoResult(d)
        copy = self.reactor.spawned[1]
        self.assertTrue(copy["transport"].stdin_closed)
        self.assertIn("+faststart", copy["args"])
        part = self.store.temp_path(self.session.name, VIDEO_PART)
        self.assertEqual(copy["args"][-1], str(part))
        part.write_bytes(b"faststart mp4")
        self.end(copy, ProcessDone(0))
        outcome = self.successResultOf(d)
        name = self.session.name
        self.assertEqual(
            (outcome.video, outcome.audio, outcome.frames, outcome.failed),
            (f"{name}.mp4", f"{name}.wav", 1, False),
        )
        self.assertEqual(self.store.final_path(VIDEO, name).read_bytes(), b"faststart mp4")
        self.assertEqual(self.temp_files(), [])
        self.assertEqual(self.errors, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_finish_three_times_while_encoding(self) -> None:
        """Endings that arrive while the encoder is still finishing do not end its input again
        or start a second finalization; they all get the first one's outcome."""
        self.session.stream(MediaKind.VIDEO, jpeg_frames(1)[0])
        first = self.session.finish(CLOSE)
        self.session.connection_lost()
        third = self.session.finish(SHUTDOWN)
        call = self.encoder()
        self.assertEqual(call["transport"].calls.count(("closeStdin",)), 1)
        self.assertNoResult(first)
        self.assertNoResult(third)
        self.end(call, ProcessDone(0))  # no fragments written: nothing to publish
        outcome = self.successResultOf(first)
        self.assertIs(self.successResultOf(third), outcome)
        self.assertEqual((outcome.reason, outcome.video), (CLOSE, None))
        self.assertEqual(len(self.reactor.spawned), 1)
        error = self.assertRaises(
            ProtocolError, self.session.stream, MediaKind.VIDEO, jpeg_frames(1)[0]
        )
        self.assertEqual(error.code, "session_closed")

    def test_stream_while_finishing(self) -> None:
        """Between CLOSE and the outcome, chunks are refused: stdin is already closed."""
        self.session.stream(MediaKind.VIDEO, jpeg_frames(1)[0])
        self.session.finish(CLOSE)
        error = self.assertRaises(
            ProtocolError, self.session.stream, MediaKind.VIDEO, jpeg_frames(1)[0]
        )
        self.assertEqual(error.code, "session_closed")
        self.assertEqual(len(self.encoder()["transport"].written), 1)

    def test_encoder_dies_mid_stream_and_is_replaced(self) -> None:
        """A dead encoder's file is cut back to what it holds (one frame here), a new one takes
        over in a piece of its own that starts where that ends, the frames the dead one lost
        are handed again, the client is told it may go on, and the publish joins the pieces."""
        frames = jpeg_frames(5)
        for frame in frames[:3]:
            self.session.stream(MediaKind.VIDEO, frame)
        first = self.encoder()
        self.fragmented(VIDEO_STREAM, samples=1, partial=True)
        self.end(first, ProcessTerminated(signal=9))
        self.assertEqual([code for code, _ in self.errors], ["encoder_replaced"])
        self.assertEqual(len(self.reactor.spawned), 2)
        second = self.reactor.spawned[1]
        piece = self.store.piece_path(self.session.name, VIDEO_STREAM, 66)  # 1 frame at 15 fps
        self.assertEqual(second["args"][-1], str(piece))
        self.assertEqual(second["transport"].written, list(frames[1:3]))
        self.assertFalse(self.producer.paused)
        for frame in frames[3:]:
            self.session.stream(MediaKind.VIDEO, frame)
        self.assertEqual(second["transport"].written, list(frames[1:]))
        d = self.session.finish(CLOSE)
        self.assertTrue(second["transport"].stdin_closed)
        self.fragmented(piece.name, samples=4)
        self.end(second, ProcessDone(0))
        copy = self.reactor.spawned[2]["args"]
        listing = Path(copy[copy.index("concat") + 4])
        self.assertEqual(
            listing.read_text().splitlines(),
            [
                "ffconcat version 1.0",
                f"file '{self.store.temp_path(self.session.name, VIDEO_STREAM)}'",
                "duration 0.066",
                f"file '{piece}'",
            ],
        )
        self.store.temp_path(self.session.name, VIDEO_PART).write_bytes(b"joined")
        self.end(self.reactor.spawned[2], ProcessDone(0))
        outcome = self.successResultOf(d)
        self.assertEqual((outcome.frames, outcome.video), (5, f"{self.session.name}.mp4"))
        self.assertEqual(outcome.result, "ok")
        self.assertEqual(self.temp_files(), [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_what_the_ring_no_longer_holds_is_a_gap(self) -> None:
        """The ring keeps the last RING_SECONDS of frames (and RING_MIN_BYTES): of 40 frames
        handed to an encoder that wrote none, the last ones go to its successor, whose piece
        starts after the others, so those lost leave a gap instead of moving every later frame
        (and the sound) earlier."""
        frames = jpeg_frames(40)
        for frame in frames:
            self.session.stream(MediaKind.VIDEO, frame)
        self.end(self.encoder(), ProcessTerminated(exitCode=1))
        successor = self.reactor.spawned[1]
        kept = len(successor["transport"].written)
        self.assertTrue(RING_SECONDS * 15 <= kept < 40, kept)
        self.assertGreaterEqual(sum(map(len, frames[-kept:])), RING_MIN_BYTES)
        self.assertEqual(successor["transport"].written, list(frames[-kept:]))
        piece = self.store.piece_path(self.session.name, VIDEO_STREAM, (40 - kept) * 1000 // 15)
        self.assertEqual(successor["args"][-1], str(piece))

    def test_encoder_dying_again_and_again_is_given_up(self) -> None:
        """Dying three times within a minute, the encoder is not replaced again: the client is
        told, later frames are dropped, and what the pieces hold is published. Deaths further
        apart are each replaced."""
        frame = jpeg_frames(1)[0]
        for spacing, replaced in ((61.0, 3), (10.0, 2)):
            self.reactor.spawned.clear()
            self.errors.clear()
            self.session = self.open("flaky", 1700000000100 + int(spacing))
            self.session.stream(MediaKind.VIDEO, frame)
            for _ in range(3):
                self.end(self.reactor.spawned[-1], ProcessTerminated(exitCode=1))
                self.reactor.advance(spacing)
                self.session.stream(MediaKind.VIDEO, frame)
            self.assertEqual(len(self.reactor.spawned), 1 + replaced)
            codes = [code for code, _ in self.errors]
            if replaced == 3:
                self.assertEqual(codes, ["encoder_replaced"] * 3)
                self.end(self.reactor.spawned[-1], ProcessDone(0))
                continue
            self.assertEqual(codes, ["encoder_replaced"] * 2 + ["encoder_failed"])
            self.assertEqual(self.reactor.spawned[-1]["transport"].written, [frame] * 3)
            outcome = self.successResultOf(self.session.finish(CLOSE))
            self.assertEqual((outcome.frames, outcome.result), (3, "encoder_failed"))

    def test_stuck_encoder_is_killed_and_replaced(self) -> None:
        """An encoder whose stdin stays full, read not at all, is killed after STALL_TIMEOUT;
        one that reads now and then is left alone however long the pipe is full in all."""
        frames = jpeg_frames(2)
        self.session.stream(MediaKind.VIDEO, frames[0])
        first = self.encoder()
        stdin = first["transport"].producer
        for _ in range(3):
            stdin.pauseProducing()
            self.reactor.advance(STALL_TIMEOUT - 1)
            stdin.resumeProducing()
        stdin.pauseProducing()
        self.session.stream(MediaKind.VIDEO, frames[1])
        self.assertTrue(self.producer.paused)
        self.reactor.advance(STALL_TIMEOUT - 0.1)
        self.assertEqual(first["transport"].signals(), [])
        self.reactor.advance(0.2)
        self.assertEqual(first["transport"].signals(), ["KILL"])
        self.end(first, ProcessTerminated(signal=9))
        self.assertEqual([code for code, _ in self.errors], ["encoder_replaced"])
        # Nothing of the dead one's reached its file: the new piece starts at 0, with both.
        second = self.reactor.spawned[1]
        self.assertEqual(second["args"][-1], first["args"][-1])
        self.assertEqual(second["transport"].written, list(frames))
        self.assertFalse(self.producer.paused)
        d = self.session.finish(CLOSE)
        self.end(second, ProcessDone(0))
        self.assertEqual(self.successResultOf(d).video, None)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_hung_encoder_signalled(self) -> None:
        """An encoder that does not finish after CLOSE is signalled after the grace period, and
        the session ends once it does."""
        self.session.stream(MediaKind.VIDEO, jpeg_frames(1)[0])
        d = self.session.finish(SHUTDOWN)
        call = self.encoder()
        self.reactor.advance(self.grace)
        self.assertEqual(call["transport"].signals(), ["TERM"])
        self.assertNoResult(d)
        self.end(call, ProcessTerminated(signal=15))
        outcome = self.successResultOf(d)
        self.assertEqual(outcome.reason, SHUTDOWN)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_faststart_failure_publishes_fragmented(self) -> None:
        """If the faststart copy fails, the fragmented MP4 (playable) is published instead of
        losing the recording."""
        self.session.stream(MediaKind.VIDEO, jpeg_frames(1)[0])
        d = self.session.finish(CLOSE)
        self.encoder_writes_fragments()
        self.end(self.encoder(), ProcessDone(0))
        self.end(self.reactor.spawned[1], ProcessTerminated(exitCode=1))
        outcome = self.successResultOf(d)
        self.assertEqual(outcome.video, f"{self.session.name}.mp4")
        self.assertIn(b"moof", self.store.final_path(VIDEO, self.session.name).read_bytes())
        self.assertEqual(self.temp_files(), [])


class MuxSessionTests(SessionTestCase):
    """--mux-audio: the audio track has an encoder of its own, muxed in at publish."""

    def setUp(self) -> None:
        super().setUp()
        self.settings = replace(self.settings, mux_audio=True)
        self.session = self.open("mux", 1700000000010)

    def encoders(self) -> tuple[dict, dict]:
        """(the video's encoder, the audio track's), told apart by their output."""
        by_output = {call["args"][-1]: call for call in self.reactor.spawned}
        return (
            by_output[str(self.store.temp_path(self.session.name, VIDEO_STREAM))],
            by_output[str(self.store.temp_path(self.session.name, AAC_STREAM))],
        )

    def test_each_pipe_pauses_the_socket_until_both_take_more(self) -> None:
        frame, sound = jpeg_frames(1)[0], pcm(441)
        self.session.stream(MediaKind.VIDEO, frame)
        self.session.stream(MediaKind.AUDIO, sound)
        video, track = self.encoders()
        self.assertEqual(video["transport"].written, [frame])
        self.assertEqual(track["transport"].written, [sound])
        self.assertNotIn("pipe:3", video["args"])
        self.assertEqual(track["args"][track["args"].index("-c:a") + 1], "aac")
        video["transport"].producer.pauseProducing()
        track["transport"].producer.pauseProducing()
        video["transport"].producer.resumeProducing()
        self.assertTrue(self.producer.paused)
        track["transport"].producer.resumeProducing()
        self.assertFalse(self.producer.paused)
        # A dead encoder's pipe lets go of its claim: the socket never stays paused for it.
        track["transport"].producer.pauseProducing()
        track["transport"].producer.stopProducing()
        self.assertFalse(self.producer.paused)

    def test_late_sound_placed_by_silence_written_as_the_pipe_drains(self) -> None:
        """--timing capture, sound from 3 s: 3 s of silence go first, a second per write, and
        samples that come while the pipe is full wait with the socket paused."""
        self.settings = replace(self.settings, timing="capture")
        self.session = self.open("late", 1700000000011)
        sounds = [pcm(441, seed=i) for i in range(2)]
        self.session.stream(MediaKind.VIDEO, jpeg_frames(1)[0], capture_time=0.0)
        self.session.stream(MediaKind.AUDIO, sounds[0], capture_time=3000.0)
        _, track = self.encoders()
        self.assertEqual(track["transport"].written, [SILENCE_BLOCK] * 3 + sounds[:1])
        track["transport"].producer.pauseProducing()
        self.session.stream(MediaKind.AUDIO, sounds[1], capture_time=3010.0)
        self.assertEqual(len(track["transport"].written), 4)
        self.assertTrue(self.producer.paused)
        track["transport"].producer.resumeProducing()
        self.assertEqual(track["transport"].written[4:], sounds[1:])
        self.assertFalse(self.producer.paused)

    def test_publish_takes_both_files(self) -> None:
        self.session.stream(MediaKind.VIDEO, jpeg_frames(1)[0])
        self.session.stream(MediaKind.AUDIO, pcm(441))
        d = self.session.finish(CLOSE)
        video, track = self.encoders()
        self.assertTrue(track["transport"].stdin_closed)
        self.encoder_writes_fragments()
        self.encoder_writes_fragments(AAC_STREAM)
        self.end(video, ProcessDone(0))
        self.assertEqual(len(self.reactor.spawned), 2)  # the copy waits for the track too
        self.end(track, ProcessDone(0))
        copy = self.reactor.spawned[2]["args"]
        inputs = [copy[i + 1] for i, arg in enumerate(copy) if arg == "-i"]
        self.assertEqual(
            inputs,
            [str(self.store.temp_path(self.session.name, s)) for s in (VIDEO_STREAM, AAC_STREAM)],
        )
        self.assertIn("1:a", copy)
        self.store.temp_path(self.session.name, VIDEO_PART).write_bytes(b"muxed")
        self.end(self.reactor.spawned[2], ProcessDone(0))
        outcome = self.successResultOf(d)
        self.assertEqual(outcome.video, f"{self.session.name}.mp4")
        self.assertEqual(self.temp_files(), [])
        self.assertEqual(self.errors, [])

    def test_track_encoder_dies_and_is_replaced(self) -> None:
        """The audio track's encoder dies holding two AAC packets (one of them priming: 1024
        samples of sound); the new one starts there, given the samples after them again, and
        the publish joins the track's pieces under the video."""
        frame, sounds = jpeg_frames(1)[0], [pcm(441, seed=i) for i in range(4)]
        self.session.stream(MediaKind.VIDEO, frame)
        for sound in sounds[:3]:
            self.session.stream(MediaKind.AUDIO, sound)
        video, track = self.encoders()
        self.fragmented(AAC_STREAM, samples=2)
        self.end(track, ProcessTerminated(exitCode=1))
        self.assertEqual([code for code, _ in self.errors], ["encoder_replaced"])
        piece = self.store.piece_path(self.session.name, AAC_STREAM, 1024 * 1000 // 44100)
        successor = self.reactor.spawned[2]
        self.assertEqual(successor["args"][-1], str(piece))
        self.session.stream(MediaKind.AUDIO, sounds[3])
        self.assertEqual(b"".join(successor["transport"].written), b"".join(sounds)[1024 * 2 :])
        d = self.session.finish(CLOSE)
        self.encoder_writes_fragments()
        self.fragmented(piece.name, samples=3)
        self.end(video, ProcessDone(0))
        self.end(successor, ProcessDone(0))
        copy = self.reactor.spawned[3]["args"]
        video_input = str(self.store.temp_path(self.session.name, VIDEO_STREAM))
        self.assertEqual(copy[copy.index("-i") + 1], video_input)
        self.assertIn("concat", copy)
        self.assertIn("1:a", copy)
        self.store.temp_path(self.session.name, VIDEO_PART).write_bytes(b"joined")
        self.end(self.reactor.spawned[3], ProcessDone(0))
        outcome = self.successResultOf(d)
        name = self.session.name
        self.assertEqual((outcome.video, outcome.audio), (f"{name}.mp4", f"{name}.wav"))
        self.assertEqual(self.store.final_path(AUDIO, name).read_bytes()[44:], b"".join(sounds))
        self.assertEqual(self.temp_files(), [])

    def test_audio_only_makes_no_mp4(self) -> None:
        self.session.stream(MediaKind.AUDIO, pcm(441))
        d = self.session.finish(CLOSE)
        (track,) = self.reactor.spawned
        self.encoder_writes_fragments(AAC_STREAM)
        self.end(track, ProcessDone(0))
        outcome = self.successResultOf(d)
        self.assertEqual((outcome.video, outcome.audio), (None, f"{self.session.name}.wav"))
        self.assertEqual(self.temp_files(), [])


class GrantLimitTests(SynchronousTestCase):
    """A token's max_seconds/max_bytes tighten the daemon's limits, never loosen them."""

    def test_tighter_of_both(self) -> None:
        from livestream.auth.tokens import Grant

        daemon = SessionLimits(max_seconds=100.0, max_bytes=1000)
        self.assertEqual(daemon.within(None), daemon)
        tight = Grant("s", frozenset({"publish"}), max_seconds=10.0, max_bytes=5000)
        self.assertEqual(daemon.within(tight), SessionLimits(10.0, 1000))
        loose = Grant("s", frozenset({"publish"}))
        self.assertEqual(daemon.within(loose), daemon)
