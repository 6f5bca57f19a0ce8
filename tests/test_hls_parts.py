"""The pure parts of live HLS: reading fMP4 boxes (fuzzed), grouping fragments into parts and
segments, the playlists' text, and the bounded waits (on a fake clock)."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from livestream.hls import fmp4, playlist, segments
from livestream.hls.segments import Chunk, Segmenter
from livestream.hls.tail import FileTail
from livestream.hls.waiting import TooMany, Waiters
from livestream.library import bmff
from livestream.recording import aac, mp4
from livestream.recording.video import EncoderSettings, encoder_args
from livestream.wire.h264 import SequenceParameters
from livestream.wire.opus import OpusHead
from tests.support.media import ffmpeg_exe, jpeg_frames, pcm

VIDEO = mp4.VideoTrack(
    SequenceParameters(0x42, 0xC0, 0x1E, 320, 240), (b"\x67\x42\xc0\x1e",), (b"\x68\xce",)
)


@cache
def encoder_output(kind: str) -> bytes:
    """What the daemon's encoders write: 3 s of JPEGs at 15 fps, or 3 s of PCM as AAC."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"livestream-hls-{kind}-{os.getpid()}.mp4"
    if kind == "video":
        args = encoder_args(EncoderSettings(ffmpeg_exe(), 15, "ultrafast"), 320, 240, str(out))
        data = b"".join(jpeg_frames(45))
    else:
        args, data = aac.encoder_args(str(out)), pcm(3 * 44100)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], input=data, check=True)
    try:
        return out.read_bytes()
    finally:
        out.unlink()


def split(data: bytes) -> tuple[bytes, list[bytes]]:
    """The init segment and the moofs of a whole fragmented MP4."""
    found = list(bmff.boxes(data))
    first = next(b for b in found if b.type == b"moof")
    return data[: first.start], [data[b.start : b.end] for b in found if b.type == b"moof"]


class Fmp4Tests(SynchronousTestCase):
    def test_the_video_encoders_output(self) -> None:
        """1 s between keyframes, fragments of 3 frames (0.2 s), each keyframe starting one."""
        init, moofs = split(encoder_output("video"))
        track = fmp4.read_init(init)
        self.assertEqual((track.handler, track.width, track.height), ("vide", 320, 240))
        self.assertTrue(track.codec.startswith("avc1.42"), track.codec)
        infos = [fmp4.read_moof(m, track) for m in moofs]
        self.assertEqual([i.samples for i in infos], [3] * 15)
        self.assertEqual({i.duration for i in infos}, {track.timescale // 5})
        self.assertEqual([i.key for i in infos], [n % 5 == 0 for n in range(15)])
        times = [i.decode_time for i in infos]
        self.assertEqual(times, [n * track.timescale // 5 for n in range(15)])

    def test_the_aac_encoders_output(self) -> None:
        init, moofs = split(encoder_output("audio"))
        track = fmp4.read_init(init)
        self.assertEqual(
            (track.handler, track.codec, track.timescale), ("soun", "mp4a.40.2", 44100)
        )
        infos = [fmp4.read_moof(m, track) for m in moofs]
        self.assertTrue(all(i.key for i in infos))
        self.assertEqual(infos[1].duration, 9 * 1024)

    def test_the_daemons_own_fragments(self) -> None:
        """What passthrough writes (mp4.init_segment and fragment), H.264 and Opus."""
        track = fmp4.read_init(mp4.init_segment(VIDEO))
        self.assertEqual((track.codec, track.timescale, track.width), ("avc1.42c01e", 90000, 320))
        samples = [mp4.Sample(b"x" * 10, 3000, False), mp4.Sample(b"y", 6000, False)]
        info = fmp4.read_moof(split_moof(mp4.fragment(7, 123456, samples)), track)
        self.assertEqual((info.decode_time, info.duration, info.key, info.samples),
                         (123456, 9000, False, 2))  # fmt: skip
        key = fmp4.read_moof(split_moof(mp4.fragment(1, 0, [mp4.Sample(b"k", 1, True)])), track)
        self.assertTrue(key.key)
        opus = fmp4.read_init(mp4.init_segment(mp4.OpusTrack(OpusHead())))
        self.assertEqual((opus.codec, opus.timescale, opus.video), ("opus", 48000, False))

    def test_moved_on_the_timeline(self) -> None:
        track = fmp4.read_init(mp4.init_segment(VIDEO))
        moof = split_moof(mp4.fragment(1, 100, [mp4.Sample(b"k", 5, True)]))
        info = fmp4.read_moof(moof, track)
        self.assertEqual(fmp4.read_moof(fmp4.moved(moof, info, 9000), track).decode_time, 9100)
        self.assertEqual(fmp4.moved(moof, info, 0), moof)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def test_damaged_boxes_are_refused_cleanly(self, data) -> None:
        """Any cut or flipped byte of an init segment or a moof: read, or BadFragment."""
        init, moofs = split(encoder_output("video"))
        target = data.draw(st.sampled_from([init, moofs[0], moofs[1]]))
        damaged = bytearray(target)
        if data.draw(st.booleans()):
            damaged = damaged[: data.draw(st.integers(0, len(damaged)))]
        for _ in range(data.draw(st.integers(0, 4))):
            if damaged:
                at = data.draw(st.integers(0, len(damaged) - 1))
                damaged[at] = data.draw(st.integers(0, 255))
        track = fmp4.read_init(init)
        try:
            if target is init:
                fmp4.read_init(bytes(damaged))
            else:
                fmp4.read_moof(bytes(damaged), track)
        except fmp4.BadFragment:
            pass


def split_moof(fragment: bytes) -> bytes:
    box = next(bmff.boxes(fragment))
    return fragment[: box.end]


class FileTailTests(SynchronousTestCase):
    def test_a_growing_file_is_read_as_its_fragments_become_whole(self) -> None:
        data = encoder_output("video")
        init, moofs = split(data)
        path = Path(self.mktemp())
        tail = FileTail(path)
        self.assertEqual(tail.read(), [], "no file yet")
        boxes = [b for b in bmff.boxes(data) if b.type in (b"moof", b"mdat")]
        with open(path, "wb", buffering=0) as f:
            f.write(init)
            self.assertEqual(tail.read(), [])
            seen = 0
            for box in boxes:
                whole = data[box.start : box.end]
                # Each box arrives in two writes: between them, it is not whole.
                f.write(whole[: len(whole) // 2])
                self.assertEqual(tail.read(), [])
                f.write(whole[len(whole) // 2 :])
                seen += len(tail.read())
        self.assertEqual(seen, 15)
        self.assertEqual(tail.init, init)
        path.unlink()
        self.assertEqual(tail.read(), [], "a removed file is still held open")
        first = boxes[0]
        self.assertEqual(tail.pread(first.start, 8)[4:], b"moof")
        tail.close()

    def test_a_file_that_is_not_an_fmp4(self) -> None:
        path = Path(self.mktemp())
        path.write_bytes(b"\x00\x00\x00\x10moofAAAAAAAA\x00\x00\x00\x08free\x00\x00\x00\x08mdat")
        self.assertRaises(fmp4.BadFragment, FileTail(path).read)


def chunk(start: int, duration: int, key: bool, source: int = 0) -> Chunk:
    info = fmp4.FragmentInfo(start, duration, key, 1, 0, 8)
    return Chunk(source, start, 100, start, duration, key, 0, info)


def feed(segmenter: Segmenter, pattern: str, step: int = 200) -> None:
    """``K`` a keyframe fragment, ``d`` a delta, each ``step`` ticks (1000 a second)."""
    time = sum(s.duration for s in segmenter.segments)
    for mark in pattern:
        segmenter.add(chunk(time, step, mark == "K"), 0)
        time += step


class SegmenterTests(SynchronousTestCase):
    def test_parts_and_segments_of_the_jpeg_path(self) -> None:
        """Fragments of 0.2 s, a keyframe a second: a part each, a segment a keyframe."""
        s = Segmenter(1000, 0.2, 1, video=True)
        feed(s, "KddddKddddKd")
        self.assertEqual([(x.msn, x.complete, len(x.parts)) for x in s.segments],
                         [(0, True, 5), (1, True, 5), (2, False, 2)])  # fmt: skip
        self.assertEqual(s.next_part, 12)
        self.assertTrue(s.segments[2].parts[-1].complete, "a full part is served at once")
        self.assertTrue(s.all_independent)
        self.assertTrue(s.has(2, 1))
        self.assertFalse(s.has(2, 2))
        self.assertFalse(s.has(2, None), "the segment being made is not complete")
        self.assertTrue(s.has(1, None))
        self.assertFalse(s.has(3, 0))
        s.end()
        self.assertTrue(s.segments[2].complete and s.has(9, 0))

    def test_small_fragments_grouped_into_parts(self) -> None:
        s = Segmenter(1000, 0.2, 2, video=True)
        feed(s, "K" + "d" * 11, step=40)
        parts = s.segments[0].parts
        self.assertEqual([len(p.chunks) for p in parts], [5, 5, 2])
        self.assertEqual([p.complete for p in parts], [True, True, False])
        self.assertEqual(s.next_part, 2, "the hint names the part being filled")

    def test_no_keyframe_for_long(self) -> None:
        """A segment is cut before it would round past the target, keyframe or not."""
        s = Segmenter(1000, 0.25, 2, video=True)
        feed(s, "K" + "d" * 20, step=250)
        durations = [x.duration for x in s.segments]
        self.assertEqual(durations[0], 2250)
        self.assertFalse(s.segments[1].independent)
        self.assertFalse(s.all_independent)
        self.assertTrue(all(round(d / 1000) <= 2 for d in durations))

    def test_sound_cut_near_the_target(self) -> None:
        s = Segmenter(44100, 0.209, 1, video=False)
        for n in range(12):
            s.add(chunk(n * 9216, 9216, True), 0)
        self.assertEqual(len(s.segments[0].parts), 5)
        self.assertTrue(all(round(x.duration / 44100) <= 1 for x in s.segments))

    def test_a_new_piece_or_init_starts_a_segment(self) -> None:
        s = Segmenter(1000, 0.2, 1, video=True)
        s.add(chunk(0, 200, True), 0)
        s.add(chunk(200, 200, True, source=1), 0)
        s.add(chunk(400, 200, True, source=1), 1)
        self.assertEqual([x.init for x in s.segments], [0, 0, 1])

    def test_the_window(self) -> None:
        s = Segmenter(1000, 0.2, 1, video=True)
        feed(s, "Kdddd" * 20)
        self.assertEqual(len(s.segments), segments.WINDOW)
        self.assertEqual(s.segments[0].msn, 20 - segments.WINDOW)
        self.assertIsNone(s.part(0))
        self.assertIsNotNone(s.part(99))
        self.assertIsNone(s.segment(0))
        self.assertEqual(len(s.listed_parts()), segments.PART_WINDOW)


class PlaylistTests(SynchronousTestCase):
    def test_a_live_media_playlist(self) -> None:
        s = Segmenter(1000, 0.2, 1, video=True)
        feed(s, "KddddKd")
        text = playlist.media(s, "video", "?token=a%2Fb", origin=1_800_000_000.0)
        lines = text.splitlines()
        self.assertEqual(lines[:7], [
            "#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-TARGETDURATION:1",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600",
            "#EXT-X-PART-INF:PART-TARGET=0.200", "#EXT-X-MEDIA-SEQUENCE:0",
            "#EXT-X-INDEPENDENT-SEGMENTS",
        ])  # fmt: skip
        self.assertIn('#EXT-X-MAP:URI="video/init0.mp4?token=a%2Fb"', lines)
        self.assertIn("#EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:00.000+00:00", lines)
        self.assertIn("#EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:01.000+00:00", lines)
        self.assertIn(
            '#EXT-X-PART:DURATION=0.20000,URI="video/p0.m4s?token=a%2Fb",INDEPENDENT=YES', lines
        )
        self.assertIn('#EXT-X-PART:DURATION=0.20000,URI="video/p1.m4s?token=a%2Fb"', lines)
        at = lines.index("#EXTINF:1.00000,")
        self.assertEqual(lines[at + 1], "video/s0.m4s?token=a%2Fb")
        self.assertEqual(lines[-1], '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="video/p7.m4s?token=a%2Fb"')
        self.assertNotIn("#EXT-X-ENDLIST", lines)
        s.end()
        ended = playlist.media(s, "video", ended=True).splitlines()
        self.assertEqual(ended[-1], "#EXT-X-ENDLIST")
        self.assertEqual(ended.count("#EXTINF:0.40000,"), 1)

    def test_the_multivariant_playlist(self) -> None:
        video = fmp4.read_init(mp4.init_segment(VIDEO))
        audio = fmp4.read_init(mp4.init_segment(mp4.OpusTrack(OpusHead())))
        lines = playlist.multivariant(video, audio, 1234, "?token=t").splitlines()
        self.assertIn(
            '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,'
            'URI="audio.m3u8?token=t"', lines,
        )  # fmt: skip
        self.assertEqual(lines[-2:], [
            '#EXT-X-STREAM-INF:BANDWIDTH=1234,CODECS="avc1.42c01e,opus",RESOLUTION=320x240,'
            'AUDIO="audio"', "video.m3u8?token=t",
        ])  # fmt: skip
        alone = playlist.multivariant(video, None, 1).splitlines()
        self.assertEqual(alone[-2:], [
            '#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS="avc1.42c01e",RESOLUTION=320x240', "video.m3u8"
        ])  # fmt: skip


class WaitersTests(SynchronousTestCase):
    def test_ready_now_timeout_wake_and_cancel(self) -> None:
        clock = Clock()
        waiters = Waiters(clock, limit=2)
        state = {"ready": False}
        self.assertTrue(self.successResultOf(waiters.wait(lambda: True, 1)))
        late = waiters.wait(lambda: state["ready"], 3)
        woken = waiters.wait(lambda: state["ready"], 10)
        self.assertRaises(TooMany, waiters.wait, lambda: state["ready"], 1)
        clock.advance(3)
        self.assertFalse(self.successResultOf(late), "past its deadline: False, for a 503")
        state["ready"] = True
        waiters.wake()
        self.assertTrue(self.successResultOf(woken))
        self.assertEqual(len(waiters), 0)
        state["ready"] = False
        gone = waiters.wait(lambda: state["ready"], 5)
        gone.cancel()
        self.failureResultOf(gone, CancelledError)
        self.assertEqual((len(waiters), clock.getDelayedCalls()), (0, []))
