"""The WAV writer and its crash recovery: exact samples, exact RIFF sizes, nothing left in temp/."""

from __future__ import annotations

import struct
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from livestream.library.tree import AUDIO_STREAM, MediaTree
from livestream.recording.audio import HEADER_SIZE, AudioRecorder, mend, wav_header
from livestream.wire.kinds import AUDIO
from tests.support.media import pcm


def parse_wav(raw: bytes) -> dict[str, object]:
    """The canonical 44-byte PCM header, field by field, and the samples after it."""
    (
        riff,
        riff_size,
        wave,
        fmt,
        fmt_size,
        audio_format,
        channels,
        rate,
        byte_rate,
        block,
        bits,
        data_id,
        data_size,
    ) = struct.unpack("<4sI4s4sIHHIIHH4sI", raw[:44])
    return {
        "ids": (riff, wave, fmt, data_id),
        "riff_size": riff_size,
        "fmt_size": fmt_size,
        "format": audio_format,
        "channels": channels,
        "rate": rate,
        "byte_rate": byte_rate,
        "block": block,
        "bits": bits,
        "data_size": data_size,
        "data": raw[44:],
    }


class WavTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MediaTree(self.mktemp())
        self.store.ensure()
        self.name = self.store.reserve("mic", 1700000000000)

    def assertWav(self, path: Path, samples: bytes) -> None:
        raw = path.read_bytes()
        wav = parse_wav(raw)
        self.assertEqual(wav["ids"], (b"RIFF", b"WAVE", b"fmt ", b"data"))
        self.assertEqual(wav["riff_size"], len(raw) - 8)
        self.assertEqual(wav["data_size"], len(samples))
        self.assertEqual(
            (wav["fmt_size"], wav["format"], wav["channels"], wav["rate"]), (16, 1, 1, 44100)
        )
        self.assertEqual((wav["byte_rate"], wav["block"], wav["bits"]), (88200, 2, 16))
        self.assertEqual(wav["data"], samples)

    def temp_files(self) -> list[str]:
        return sorted(p.name for p in self.store.dir("temp").iterdir())


class RecorderTests(WavTestCase):
    def test_wav_header_fields(self) -> None:
        """Players trust the header: sizes and format must describe s16le 44.1 kHz mono."""
        recorder = AudioRecorder(self.store, self.name)
        samples = pcm(1000)
        recorder.write(samples)
        filename = recorder.finish()
        self.assertEqual(filename, f"{self.name}.wav")
        self.assertWav(self.store.final_path(AUDIO, self.name), samples)
        self.assertEqual(recorder.samples, 1000)

    def test_many_chunks_byte_identical(self) -> None:
        """Samples are kept exactly, in order, across chunks."""
        recorder = AudioRecorder(self.store, self.name)
        chunks = [pcm(n, seed=i) for i, n in enumerate((1, 441, 4410, 7, 2))]
        for chunk in chunks:
            recorder.write(chunk)
        recorder.finish()
        self.assertWav(self.store.final_path(AUDIO, self.name), b"".join(chunks))

    def test_odd_chunks_carried(self) -> None:
        """A chunk may split a sample; its odd byte waits for the next chunk instead of being
        lost or shifting every later sample by a byte."""
        recorder = AudioRecorder(self.store, self.name)
        data = bytes(range(1, 11))
        for part in (data[:3], data[3:8], data[8:]):
            recorder.write(part)
        self.assertEqual(recorder.bytes, 10)
        recorder.finish()
        self.assertWav(self.store.final_path(AUDIO, self.name), data)

    def test_single_bytes(self) -> None:
        """Even one byte at a time ends in whole samples."""
        recorder = AudioRecorder(self.store, self.name)
        data = pcm(5)
        for b in data:
            recorder.write(bytes([b]))
        recorder.finish()
        self.assertWav(self.store.final_path(AUDIO, self.name), data)

    def test_trailing_half_sample_dropped(self) -> None:
        """A stream ending on half a sample drops that byte: the data size stays even."""
        recorder = AudioRecorder(self.store, self.name)
        recorder.write(b"\x01\x02\x03")
        recorder.finish()
        self.assertWav(self.store.final_path(AUDIO, self.name), b"\x01\x02")

    def test_nothing_written(self) -> None:
        """A session without audio leaves no WAV at all (the CLOSED reply says null)."""
        recorder = AudioRecorder(self.store, self.name)
        self.assertIsNone(recorder.finish())
        self.assertEqual(self.store.listing()["audio"], [])
        self.assertEqual(self.temp_files(), [])

    def test_samples_on_disk_while_recording(self) -> None:
        """Each chunk reaches the file at once, so a killed daemon loses nothing received."""
        recorder = AudioRecorder(self.store, self.name)
        recorder.write(pcm(10))
        temp = self.store.temp_path(self.name, AUDIO_STREAM)
        self.assertEqual(temp.read_bytes()[HEADER_SIZE:], pcm(10))
        recorder.finish()

    def test_temp_file_gone_after_finish(self) -> None:
        """Finishing moves the temp file; nothing is left for recovery to find."""
        recorder = AudioRecorder(self.store, self.name)
        recorder.write(pcm(10))
        self.assertEqual(self.temp_files(), [f"{self.name}{AUDIO_STREAM}"])
        recorder.finish()
        self.assertEqual(self.temp_files(), [])
        self.assertEqual(self.store.listing()["audio"], [f"{self.name}.wav"])


class MendTests(WavTestCase):
    def leave(self, data: bytes) -> Path:
        """A temp WAV as a killed daemon leaves it."""
        path = self.store.temp_path(self.name, AUDIO_STREAM)
        path.write_bytes(data)
        return path

    def test_zero_sizes_fixed(self) -> None:
        """After a crash the header still says 0 bytes; mend sets the sizes from the length."""
        samples = pcm(300)
        path = self.leave(wav_header(0) + samples)
        self.assertEqual(mend(self.store, self.name), f"{self.name}.wav")
        self.assertFalse(path.exists())
        self.assertWav(self.store.final_path(AUDIO, self.name), samples)

    def test_odd_trailing_byte_truncated(self) -> None:
        """A crash mid-write can leave half a sample; it is cut so the data size stays even."""
        samples = pcm(50)
        self.leave(wav_header(0) + samples + b"\x7f")
        mend(self.store, self.name)
        self.assertWav(self.store.final_path(AUDIO, self.name), samples)

    def test_header_only(self) -> None:
        """A WAV with a header and no sample is not worth a listing entry: it is removed."""
        path = self.leave(wav_header(0))
        self.assertIsNone(mend(self.store, self.name))
        self.assertFalse(path.exists())
        self.assertEqual(self.store.listing()["audio"], [])

    def test_shorter_than_header(self) -> None:
        """A file cut inside its header holds no audio: removed, None."""
        path = self.leave(wav_header(0)[:20])
        self.assertIsNone(mend(self.store, self.name))
        self.assertFalse(path.exists())
        self.assertEqual(self.store.listing()["audio"], [])

    def test_header_and_one_byte(self) -> None:
        """Header plus half a sample is still no sample."""
        path = self.leave(wav_header(0) + b"\x01")
        self.assertIsNone(mend(self.store, self.name))
        self.assertFalse(path.exists())

    def test_recorder_file_mended(self) -> None:
        """What a recorder left unfinished (the daemon died before finish) mends to exactly
        the samples written."""
        recorder = AudioRecorder(self.store, self.name)
        recorder.write(pcm(20))
        recorder.write(pcm(3, seed=1) + b"\x09")  # the odd byte is never on disk
        self.addCleanup(recorder._file.close)  # the dead daemon's handle
        mend(self.store, self.name)
        self.assertWav(self.store.final_path(AUDIO, self.name), pcm(20) + pcm(3, seed=1))
