"""The media tree: safe names, unique reservations, listing, publishing, and what a crash left."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from livestream.library.tree import (
    AAC_STREAM,
    AUDIO_STREAM,
    MAX_STEM_LENGTH,
    POSTERS,
    TEMP,
    TEMP_SUFFIXES,
    VIDEO_PART,
    VIDEO_STREAM,
    MediaTree,
    is_recording_name,
    safe_stem,
)
from livestream.wire.kinds import AUDIO, VIDEO

SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class SafeStemTests(SynchronousTestCase):
    def assertSafe(self, stem: str) -> None:
        self.assertTrue(stem)
        self.assertLessEqual(set(stem), SAFE)
        self.assertFalse(stem.startswith("."))
        self.assertLessEqual(len(stem), MAX_STEM_LENGTH)

    def test_plain_id_unchanged(self) -> None:
        """Ordinary ids stay recognisable in the file name."""
        self.assertEqual(safe_stem("alice-01_cam.2"), "alice-01_cam.2")

    def test_unsafe_characters_replaced(self) -> None:
        """Characters outside the safe set (shell, URL and path specials) become underscores."""
        self.assertEqual(safe_stem("user@example.com"), "user_example.com")
        self.assertEqual(safe_stem('a b/c\\d:e*f?g"h<i>j|k%l'), "a_b_c_d_e_f_g_h_i_j_k_l")

    def test_leading_dot(self) -> None:
        """A leading dot would hide the file from listings (and from `ls`)."""
        self.assertEqual(safe_stem(".hidden"), "_hidden")
        self.assertSafe(safe_stem(".hidden"))

    def test_path_traversal_stays_inside(self) -> None:
        """An id is never a path: ../../etc/passwd gives a plain name inside the media tree."""
        stem = safe_stem("../../etc/passwd")
        self.assertSafe(stem)
        self.assertNotIn("/", stem)
        store = MediaTree(self.mktemp())
        path = store.final_path(VIDEO, f"{stem}_1")
        self.assertEqual(path.parent, store.dir(VIDEO))
        self.assertEqual(os.path.normpath(path), os.fspath(path))

    def test_length_bounded(self) -> None:
        """Long ids (up to 256 characters) must not make names the file system refuses."""
        self.assertEqual(len(safe_stem("x" * 1000)), MAX_STEM_LENGTH)
        self.assertSafe(safe_stem("." + "y" * 1000))

    def test_empty_and_dots(self) -> None:
        """Ids that would sanitise to nothing or to '.'/'..' still give a usable, visible stem."""
        for client_id in ("", ".", "..", "...", "/"):
            stem = safe_stem(client_id)
            self.assertSafe(stem)
            self.assertNotIn(stem, (".", ".."))

    def test_unicode(self) -> None:
        """Non-ASCII letters are replaced (one underscore per character), not passed through."""
        self.assertEqual(safe_stem("josé"), "jos_")
        self.assertEqual(safe_stem("日本"), "__")
        self.assertSafe(safe_stem("١٢٣"))  # Arabic-Indic digits are not [0-9]

    def test_every_stem_makes_a_recording_name(self) -> None:
        """Recovery only recognises names is_recording_name accepts; every stem must qualify."""
        for client_id in ("alice", "", "...", ".x", "x" * 300, "user@example.com", "-rf", "日本"):
            self.assertTrue(is_recording_name(f"{safe_stem(client_id)}_1700000000000"))

    def test_not_recording_names(self) -> None:
        """Whole-string checks: a trailing newline (which ``$`` lets through) is refused too."""
        for name in ("a_1\n", "a_1\x00", "../a_1", "a/b_1", ".a_1", "a_", "a", "", "a_1.mp4"):
            self.assertFalse(is_recording_name(name), repr(name))


class StoreTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MediaTree(self.mktemp())
        self.store.ensure()

    def touch(self, kind: str, filename: str, data: bytes = b"x") -> Path:
        path = self.store.dir(kind) / filename
        path.write_bytes(data)
        return path


class ReserveTests(StoreTestCase):
    def test_root_absolute(self) -> None:
        """Paths handed to ffmpeg must not depend on the daemon's working directory."""
        self.assertTrue(MediaTree("media").root.is_absolute())

    def test_name_shape(self) -> None:
        """Names are <stem>_<epoch-ms>, as the design and the CONNECTED reply promise."""
        self.assertEqual(
            self.store.reserve("user@example.com", 1700000000000), "user_example.com_1700000000000"
        )

    def test_same_id_same_millisecond(self) -> None:
        """Two sessions of one id in one millisecond never share a file."""
        first = self.store.reserve("alice", 1000)
        second = self.store.reserve("alice", 1000)
        self.assertNotEqual(first, second)
        self.assertEqual(first, "alice_1000")

    def test_ids_with_same_stem(self) -> None:
        """Different ids that sanitise to the same stem are still kept apart."""
        names = {self.store.reserve(i, 1000) for i in ("a@b", "a b", "a/b", "a_b")}
        self.assertEqual(len(names), 4)

    def test_skips_name_with_final_file(self) -> None:
        """A finished recording from before a restart is never overwritten."""
        self.touch(VIDEO, "alice_1000.mp4")
        self.touch(AUDIO, "alice_1001.wav")
        self.assertEqual(self.store.reserve("alice", 1000), "alice_1002")

    def test_skips_name_with_temp_file(self) -> None:
        """A temp file (of a crash not yet recovered) blocks its name too."""
        for ms, suffix in enumerate(TEMP_SUFFIXES):
            self.store.temp_path(f"bob_{ms}", suffix).write_bytes(b"x")
        self.assertEqual(self.store.reserve("bob", 0), f"bob_{len(TEMP_SUFFIXES)}")

    def test_release_allows_reuse(self) -> None:
        """A released name whose session left no file may be handed out again."""
        name = self.store.reserve("carol", 5)
        self.store.release(name)
        self.assertEqual(self.store.reserve("carol", 5), name)

    def test_release_does_not_free_a_published_name(self) -> None:
        """After release, a published file still keeps its name taken."""
        name = self.store.reserve("carol", 5)
        self.touch(AUDIO, f"{name}.wav")
        self.store.release(name)
        self.assertNotEqual(self.store.reserve("carol", 5), name)

    def test_release_unknown_name(self) -> None:
        """Releasing twice (or something never reserved) is harmless."""
        self.store.release("nobody_1")
        name = self.store.reserve("dave", 1)
        self.store.release(name)
        self.store.release(name)

    def test_ensure_makes_tree(self) -> None:
        """The four directories exist after ensure(), and it may run again."""
        self.store.ensure()
        for kind in (VIDEO, AUDIO, TEMP, POSTERS):
            self.assertTrue(self.store.dir(kind).is_dir())


class ListingTests(StoreTestCase):
    def test_empty(self) -> None:
        """The seed's shape, with empty lists, when nothing is recorded."""
        self.assertEqual(self.store.listing(), {"video": [], "audio": []})

    def test_missing_tree(self) -> None:
        """A tree not yet made lists as empty instead of failing the HTTP route."""
        self.assertEqual(MediaTree(self.mktemp()).listing(), {"video": [], "audio": []})

    def test_only_own_suffix_and_visible(self) -> None:
        """Only finished files of the right kind are listed: no hidden, foreign or temp files."""
        self.touch(VIDEO, "a_1.mp4")
        self.touch(VIDEO, ".b_2.mp4")
        self.touch(VIDEO, "c_3.wav")
        self.touch(VIDEO, "d_4.mp4.tmp")
        self.touch(VIDEO, "e_5.MP4")
        self.touch(AUDIO, "f_6.wav")
        self.touch(AUDIO, ".g_7.wav")
        self.touch(AUDIO, "h_8.mp4")
        self.touch(AUDIO, "notes.txt")
        self.store.temp_path("i_9", AUDIO_STREAM).write_bytes(b"x")
        self.store.temp_path("j_10", VIDEO_PART).write_bytes(b"x")
        self.assertEqual(self.store.listing(), {"video": ["a_1.mp4"], "audio": ["f_6.wav"]})

    def test_sorted_by_time(self) -> None:
        """Oldest first by the timestamp, not alphabetically (a shorter number is older)."""
        for name in ("zed_1700000000002", "amy_1700000000003", "bob_999", "amy_1700000000001"):
            self.touch(AUDIO, f"{name}.wav")
        self.assertEqual(
            self.store.listing()["audio"],
            [
                "bob_999.wav",
                "amy_1700000000001.wav",
                "zed_1700000000002.wav",
                "amy_1700000000003.wav",
            ],
        )

    def test_sorted_with_dotted_names(self) -> None:
        """Dots in the stem do not confuse the timestamp used for ordering."""
        self.touch(VIDEO, "user_example.com_20.mp4")
        self.touch(VIDEO, "a.b.c_10.mp4")
        self.assertEqual(self.store.listing()["video"], ["a.b.c_10.mp4", "user_example.com_20.mp4"])


class PublishTests(StoreTestCase):
    def test_publish_renames(self) -> None:
        """Publishing is one rename: the temp file is gone, the content arrives whole."""
        name = self.store.reserve("alice", 7)
        src = self.store.temp_path(name, AUDIO_STREAM)
        src.write_bytes(b"RIFF-data")
        inode = src.stat().st_ino
        filename = self.store.publish(src, AUDIO, name)
        self.assertEqual(filename, "alice_7.wav")
        self.assertFalse(src.exists())
        final = self.store.final_path(AUDIO, name)
        self.assertEqual(final.read_bytes(), b"RIFF-data")
        self.assertEqual(final.stat().st_ino, inode)  # moved, not copied
        self.assertEqual(self.store.listing()["audio"], ["alice_7.wav"])

    def test_publish_missing_source(self) -> None:
        """A missing temp file is an error the caller sees, not a silent empty listing entry."""
        self.assertRaises(
            OSError, self.store.publish, self.store.temp_path("x_1", VIDEO_PART), VIDEO, "x_1"
        )
        self.assertEqual(self.store.listing()["video"], [])


class LeftoverTests(StoreTestCase):
    def temp(self, filename: str) -> Path:
        return self.touch(TEMP, filename)

    def test_nothing_left(self) -> None:
        """A clean temp/ needs no recovery."""
        self.assertEqual(self.store.leftovers(), ([], []))

    def test_grouped_by_name(self) -> None:
        """All files of one session form one leftover, keyed by their temp suffix."""
        a1 = self.temp("alice_1.video.fmp4")
        a2 = self.temp("alice_1.video.part.mp4")
        a3 = self.temp("alice_1.audio.wav")
        b1 = self.temp("bob_2.audio.wav")
        leftovers, strangers = self.store.leftovers()
        self.assertEqual(strangers, [])
        found = {left.name: left.paths for left in leftovers}
        self.assertEqual(
            found,
            {
                "alice_1": {VIDEO_STREAM: a1, VIDEO_PART: a2, AUDIO_STREAM: a3},
                "bob_2": {AUDIO_STREAM: b1},
            },
        )

    def test_names_with_dots(self) -> None:
        """E-mail ids give stems with dots: a name is cut at its temp suffix, not the first dot."""
        v = self.temp("user_example.com_1700000000000.video.fmp4")
        a = self.temp("user_example.com_1700000000000.audio.wav")
        d = self.temp("a.video_5.video.part.mp4")
        leftovers, strangers = self.store.leftovers()
        self.assertEqual(strangers, [])
        found = {left.name: left.paths for left in leftovers}
        self.assertEqual(
            found,
            {
                "user_example.com_1700000000000": {VIDEO_STREAM: v, AUDIO_STREAM: a},
                "a.video_5": {VIDEO_PART: d},
            },
        )

    def test_pieces(self) -> None:
        """A stream whose encoder was replaced is in pieces named for where each starts: they
        belong to their session, are listed in timeline order, and only the streams that have
        encoders (the video and the AAC track) have pieces."""
        first = self.temp("cam_1.video.fmp4")
        later = self.temp("cam_1+12000.video.fmp4")
        early = self.temp("cam_1+2333.video.fmp4")
        track = self.temp("cam_1+700.audio.fmp4")
        lone = self.temp("mic_2+900.audio.fmp4")  # its first piece had nothing: removed
        strays = [self.temp("cam_1+9.audio.wav"), self.temp("cam_1+0.video.fmp4")]
        strays.append(self.temp("cam_1+x.video.fmp4"))
        leftovers, strangers = self.store.leftovers()
        self.assertEqual(sorted(strangers), sorted(strays))
        found = {left.name: left.paths for left in leftovers}
        self.assertEqual(found["mic_2"], {AAC_STREAM: lone})
        self.assertEqual(sorted(found["cam_1"]), sorted([VIDEO_STREAM, AAC_STREAM]))
        pieces = self.store.pieces("cam_1", VIDEO_STREAM)
        self.assertEqual([(p.start_ms, p.path) for p in pieces],
                         [(0, first), (2333, early), (12000, later)])  # fmt: skip
        self.assertEqual([p.path for p in self.store.pieces("cam_1", AAC_STREAM)], [track])
        self.assertEqual(self.store.piece_path("cam_1", VIDEO_STREAM, 2333), early)
        self.assertEqual(self.store.piece_path("cam_1", VIDEO_STREAM, 0), first)

    def test_strangers(self) -> None:
        """Files this store did not make are reported (left alone), never recovered as a
        recording; hidden files are ignored entirely."""
        s1 = self.temp("notes.txt")
        s2 = self.temp("alice.audio.wav")  # no timestamp
        s3 = self.temp("alice_12x.video.fmp4")  # timestamp not digits
        s4 = self.temp(".x_1.audio.wav")  # hidden: ignored
        s5 = self.store.dir(TEMP) / "dir_1.audio.wav"
        s5.mkdir()
        self.temp("ok_3.audio.wav")
        leftovers, strangers = self.store.leftovers()
        self.assertEqual([left.name for left in leftovers], ["ok_3"])
        self.assertEqual(sorted(strangers), sorted([s1, s2, s3, s5]))
        self.assertNotIn(s4, strangers)
