"""A fragmented MP4 cut off anywhere (full disk, killed daemon) still publishes playable."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from livestream.library.tree import VIDEO_STREAM, MediaTree
from livestream.recording import fragments, video
from livestream.recording.video import EncoderSettings, encoder_args
from tests.support.media import ffmpeg_exe, jpeg_frames, video_facts

FRAMES = 45


@cache
def encoded() -> bytes:
    """What the live encoder writes for 45 frames at 15 fps: 200 ms fragments, so 15 of them."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"livestream-fragments-{os.getpid()}.mp4"
    settings = EncoderSettings(ffmpeg_exe(), 15, "ultrafast")
    args = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            *encoder_args(settings, 320, 240, os.fspath(tmp))]  # fmt: skip
    subprocess.run(args, input=b"".join(jpeg_frames(FRAMES)), check=True)
    try:
        return tmp.read_bytes()
    finally:
        tmp.unlink()


class WholeLengthTests(SynchronousTestCase):
    def write(self, data: bytes) -> Path:
        path = Path(self.mktemp())
        path.write_bytes(data)
        return path

    def test_complete_file_is_whole(self) -> None:
        data = encoded()
        length, count = fragments.whole_length(self.write(data))
        self.assertEqual(length, len(data))
        self.assertGreaterEqual(count, 10)

    def test_cut_anywhere_trims_to_a_file_that_decodes(self) -> None:
        data = encoded()
        _, total = fragments.whole_length(self.write(data))
        previous = 0
        # Cut points across the whole file, a few bytes into headers as well as mid-payload.
        for end in sorted({*range(0, len(data), max(1, len(data) // 37)), 3, 9, len(data) - 1}):
            path = self.write(data[:end])
            kept, cut = fragments.trim(path)
            self.assertGreaterEqual(kept, previous, f"cut at {end}")
            previous = kept
            if not kept:
                self.assertEqual(path.stat().st_size, end, "nothing to keep: left for the caller")
                continue
            self.assertEqual(path.stat().st_size + cut, end)
            self.assertLess(kept, total + 1)
            facts = video_facts(path)
            self.assertGreater(facts.frames, 0, f"cut at {end}")
            self.assertLessEqual(facts.frames, FRAMES)

    def test_bogus_sizes_end_the_walk(self) -> None:
        data = encoded()
        length, count = fragments.whole_length(self.write(data + b"\x00\x00\x00\x04free"))
        self.assertEqual((length, count), (len(data), fragments.whole_length(self.write(data))[1]))
        huge = (1).to_bytes(4, "big") + b"mdat" + (1 << 62).to_bytes(8, "big")
        self.assertEqual(fragments.whole_length(self.write(data + huge))[0], len(data))

    def test_missing_or_empty_file_has_nothing(self) -> None:
        self.assertEqual(fragments.whole_length(Path(self.mktemp())), (0, 0))
        self.assertEqual(fragments.trim(self.write(b"")), (0, 0))


class PublishTests(TestCase):
    async def test_cut_off_stream_is_published_playable(self) -> None:
        store = MediaTree(Path(self.mktemp()))
        store.ensure()
        data = encoded()
        name = "cut_1700000000000"
        store.temp_path(name, VIDEO_STREAM).write_bytes(data[: len(data) * 2 // 3 + 17])
        published = await video.publish(reactor, ffmpeg_exe(), store, name)
        self.assertEqual(published, f"{name}.mp4")
        facts = video_facts(store.root / "video" / published)
        self.assertTrue(facts.faststart)
        self.assertGreater(facts.frames, FRAMES // 3)
        self.assertLess(facts.frames, FRAMES)
        self.assertEqual(os.listdir(store.root / "temp"), [])

    async def test_stream_without_a_whole_fragment_publishes_nothing(self) -> None:
        store = MediaTree(Path(self.mktemp()))
        store.ensure()
        name = "stub_1700000000000"
        store.temp_path(name, VIDEO_STREAM).write_bytes(encoded()[:900])
        self.assertIsNone(await video.publish(reactor, ffmpeg_exe(), store, name))
        self.assertEqual(os.listdir(store.root / "temp"), [])
        self.assertEqual(os.listdir(store.root / "video"), [])
