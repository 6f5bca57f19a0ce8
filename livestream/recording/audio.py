"""A session's audio: PCM s16le 44.1 kHz mono appended to a WAV in ``temp/`` as it arrives.

Each chunk goes to the kernel at once (an unbuffered file), so a daemon killed mid-recording
leaves every sample it received on disk; only the RIFF sizes are then wrong, and :func:`mend`
rewrites them from the file's length.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

from twisted.logger import Logger

from livestream.library.tree import AUDIO_STREAM, MediaTree
from livestream.wire.kinds import (
    AUDIO,
    BLOCK_BYTES,
    BYTES_PER_SECOND,
    CHANNELS,
    SAMPLE_BYTES,
    SAMPLE_RATE,
)

_log = Logger()

HEADER_SIZE = 44


def wav_header(data_size: int) -> bytes:
    """The canonical 44-byte PCM header for ``data_size`` bytes of samples."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_size, b"WAVE",
        b"fmt ", 16, 1, CHANNELS, SAMPLE_RATE, BYTES_PER_SECOND, BLOCK_BYTES, 8 * SAMPLE_BYTES,
        b"data", data_size,
    )  # fmt: skip


class AudioRecorder:
    """Writes whole samples only: an odd trailing byte waits for the next chunk's first byte."""

    def __init__(self, tree: MediaTree, name: str) -> None:
        self._tree = tree
        self._name = name
        self._path = tree.temp_path(name, AUDIO_STREAM)
        self._file: io.FileIO | None = None
        self._carry = b""
        self.bytes = 0

    def write(self, pcm: bytes) -> bytes:
        """Append whole samples; returns the bytes written (an odd byte waits for the next)."""
        if self._file is None:
            self._file = open(self._path, "xb", buffering=0)
            self._file.write(wav_header(0))
        if self._carry:
            pcm = self._carry + pcm
        whole = len(pcm) & ~1
        self._carry = pcm[whole:]
        if not whole:
            return b""
        written = pcm[:whole]
        write_all(self._file, written)
        self.bytes += whole
        return written

    def finish(self) -> str | None:
        """Fix the header, flush to disk, publish; the file name, or None if nothing arrived."""
        if self._file is None:
            return None
        if self._carry:
            _log.warn(
                "audio of {name} ended on half a sample; its last byte is dropped", name=self._name
            )
        f, self._file = self._file, None
        try:
            if self.bytes:
                # A write cut short by a full disk may have left part of a chunk: not counted.
                f.truncate(HEADER_SIZE + self.bytes)
                f.seek(0)
                write_all(f, wav_header(self.bytes))
                os.fsync(f.fileno())
        finally:
            f.close()
        if not self.bytes:
            self._path.unlink()
            return None
        return self._tree.publish(self._path, AUDIO, self._name)

    @property
    def samples(self) -> int:
        return self.bytes // BLOCK_BYTES


def write_all(f: io.FileIO, data: bytes | memoryview) -> None:
    """An unbuffered file may take less than asked; never let the rest go missing."""
    view = memoryview(data)
    while view:
        view = view[f.write(view) :]


def mend(tree: MediaTree, name: str) -> str | None:
    """Recovery: give a WAV its sizes from its length and publish it; None if it held no sample."""
    path: Path = tree.temp_path(name, AUDIO_STREAM)
    size = path.stat().st_size
    data = max(0, size - HEADER_SIZE) & ~1
    if data == 0:
        path.unlink()
        return None
    with open(path, "r+b") as f:
        f.truncate(HEADER_SIZE + data)
        f.write(wav_header(data))
        os.fsync(f.fileno())
    return tree.publish(path, AUDIO, name)
