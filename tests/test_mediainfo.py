"""Durations and counts read from headers, checked against what PyAV decodes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from twisted.trial import unittest

from livestream.library.mediainfo import UNKNOWN, Info, mp4_info, wav_info
from livestream.recording.audio import wav_header
from livestream.recording.fragments import trim
from livestream.recording.video import EncoderSettings, encoder_args
from livestream.wire.kinds import SAMPLE_RATE
from tests.support.media import ffmpeg_exe, jpeg_frames, video_facts

FPS = 15


def encode(out: Path, frames: int) -> None:
    """What a session's encoder writes: a fragmented MP4 of ``frames`` frames."""
    settings = EncoderSettings(ffmpeg_exe(), FPS, "ultrafast")
    args = encoder_args(settings, 320, 240, os.fspath(out))
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
        input=b"".join(jpeg_frames(frames)), check=True,
    )  # fmt: skip


def faststart(src: Path, out: Path) -> None:
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", os.fspath(src),
         "-map", "0:v", "-c", "copy", "-movflags", "+faststart", "-f", "mp4", os.fspath(out)],
        check=True,
    )  # fmt: skip


class MP4Tests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def assertMatchesDecoder(self, path: Path, info: Info) -> None:
        facts = video_facts(path)
        self.assertEqual(info.count, facts.frames)
        self.assertLessEqual(abs(info.duration - facts.duration), 1 / FPS)

    def test_faststart_and_fragmented(self) -> None:
        for frames in (1, 16, 61):
            fragmented = self.dir / f"f{frames}.fmp4"
            whole = self.dir / f"f{frames}.mp4"
            encode(fragmented, frames)
            faststart(fragmented, whole)
            for path in (fragmented, whole):
                info = mp4_info(path)
                self.assertEqual(info.count, frames, path)
                self.assertMatchesDecoder(path, info)

    def test_cut_off_fragmented_file(self) -> None:
        """A killed encoder's file, trimmed to its last whole fragment as publish does."""
        path = self.dir / "cut.fmp4"
        encode(path, 60)
        os.truncate(path, path.stat().st_size * 2 // 3)
        trim(path)
        info = mp4_info(path)
        self.assertLess(info.count, 60)
        self.assertMatchesDecoder(path, info)

    def test_any_truncation_is_unknown_or_counted_never_an_error(self) -> None:
        path = self.dir / "whole.mp4"
        encode(self.dir / "src.fmp4", 20)
        faststart(self.dir / "src.fmp4", path)
        data = path.read_bytes()
        cut = self.dir / "cut.mp4"
        for length in range(0, len(data), max(1, len(data) // 97)):
            cut.write_bytes(data[:length])
            info = mp4_info(cut)
            self.assertIn(info.count, (None, 20), length)

    def test_not_mp4(self) -> None:
        junk = self.dir / "junk.mp4"
        for content in (b"", b"\x00" * 7, b"\x00\x00\x00\x01moov", b"not an mp4 at all" * 10):
            junk.write_bytes(content)
            self.assertEqual(mp4_info(junk), UNKNOWN)
        self.assertEqual(mp4_info(self.dir / "missing.mp4"), UNKNOWN)


class WavTests(unittest.TestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp())

    def test_samples_and_duration(self) -> None:
        self.path.write_bytes(wav_header(SAMPLE_RATE * 2 * 3) + b"\x01\x02" * SAMPLE_RATE * 3)
        self.assertEqual(wav_info(self.path), Info(3.0, SAMPLE_RATE * 3))

    def test_data_size_beyond_the_file_counts_what_is_there(self) -> None:
        self.path.write_bytes(wav_header(1 << 30) + b"\x00" * 1001)
        self.assertEqual(wav_info(self.path).count, 500)

    def test_not_wav(self) -> None:
        for content in (b"", b"RIFF", b"RIFF\x00\x00\x00\x00WAVEdata\x04\x00\x00\x00abcd"):
            self.path.write_bytes(content)
            self.assertEqual(wav_info(self.path), UNKNOWN)
