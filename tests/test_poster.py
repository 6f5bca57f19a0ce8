"""Which frame becomes a video's poster, and how it is written and removed."""

from __future__ import annotations

from pathlib import Path

from twisted.trial import unittest

from livestream.library.tree import POSTERS, MediaTree
from livestream.recording.poster import PosterPicker
from livestream.wire.kinds import VIDEO


class PickerTests(unittest.TestCase):
    def test_one_second_in_or_the_first_frame(self) -> None:
        for count, expected in ((1, 0), (15, 0), (16, 15), (100, 15)):
            picker = PosterPicker(15)
            frames = [bytes([i]) for i in range(count)]
            for frame in frames:
                picker.offer(frame)
            self.assertIs(picker.jpeg, frames[expected], count)

    def test_no_frames_no_poster(self) -> None:
        store = MediaTree(self.mktemp())
        store.ensure()
        PosterPicker(15).save(store, "a_1")
        self.assertEqual(list(store.dir(POSTERS).iterdir()), [])


class StoreTests(unittest.TestCase):
    def setUp(self) -> None:
        self.store = MediaTree(Path(self.mktemp()))
        self.store.ensure()

    def test_saved_whole_and_deleted_with_its_video(self) -> None:
        self.store.final_path(VIDEO, "a_1").write_bytes(b"mp4")
        picker = PosterPicker(15)
        picker.offer(b"jpeg")
        picker.save(self.store, "a_1")
        self.assertEqual(self.store.poster_path("a_1").read_bytes(), b"jpeg")
        self.assertEqual([p.name for p in self.store.dir(POSTERS).iterdir()], ["a_1.jpg"])
        self.assertTrue(self.store.delete(VIDEO, "a_1"))
        self.assertEqual(list(self.store.dir(POSTERS).iterdir()), [])
        self.assertFalse(self.store.delete(VIDEO, "a_1"))

    def test_a_failed_write_costs_the_poster_only(self) -> None:
        self.store.dir(POSTERS).rmdir()
        self.store.dir(POSTERS).write_bytes(b"")
        picker = PosterPicker(15)
        picker.offer(b"jpeg")
        picker.save(self.store, "a_1")
        self.assertEqual(len(self.flushLoggedErrors()), 0)
