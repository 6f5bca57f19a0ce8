"""What the JPEG path's keyframe interval costs in bits and encoder CPU (issue 15).

Low-Latency HLS needs every segment to start with a keyframe, so the GOP (``-g``, 2 s in the
daemon's ``encoder_args``) bounds how short segments can be and how soon a player can start: a
shorter GOP starts players sooner but spends more bits and CPU on keyframes. For each candidate
GOP (0.5 s, 1 s, 2 s as now, 4 s, and x264's default of 250 frames, the ``-g`` pair removed) this
pipes the same camera-like JPEGs as :mod:`bench.presets` through the daemon's own encoder
arguments with only the ``-g`` value replaced, with the daemon's default preset, and measures
the encoder's CPU seconds (user + system, from the resource usage of children) per recorded
minute, the bitrate, the SSIM against the frames sent, and each figure as a ratio to the 2 s
GOP of the same run. Rounds of all candidates are interleaved (``--repeat``, each round
starting at the next candidate); CPU and bitrate are the medians over the rounds
(``cpu_s_runs`` lists each round's CPU seconds), the rest is read from the last round's output.

It also reads what the HLS work builds on, from the encoder's fragmented MP4 itself (the file
the recorder writes into ``temp/``): the keyframes found (sync samples of the ``trun`` boxes,
checked against the decoder's ``iskey:1`` from ffmpeg's ``showinfo``, as there is no
ffprobe), the frames between keyframes, and the fragments ``-frag_duration 200000`` with
``+frag_keyframe`` makes: how many samples and seconds each holds, and whether every keyframe
starts one. One JSON line per candidate.

    .venv/bin/python -m bench.keyframes [--frames 300] [--fps 15] [--size 640x480] [--repeat 5]

At 15 fps a GOP of 0.5 s is not a whole number of frames: it is rounded (8 frames, 0.533 s) and
``gop_seconds`` says what was encoded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import struct
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from bench.presets import encoder_cpu, frames_size, make_frames, ssim
from livestream.daemon.options import Options
from livestream.library import bmff
from livestream.recording import ffmpeg, fragments
from livestream.recording.video import EncoderSettings, encoder_args

# (name, GOP in seconds; None: no -g, x264's own default keyint)
CANDIDATES: list[tuple[str, float | None]] = [
    ("0.5s", 0.5),
    ("1s", 1.0),
    ("2s", 2.0),
    ("4s", 4.0),
    ("x264-default", None),
]
BASELINE = "2s"  # what encoder_args gives: -g fps*2
X264_DEFAULT_KEYINT = 250

# ISO 14496-12 §8.8: tfhd and trun flags, and sample_is_non_sync_sample in the sample flags.
TFHD_BASE_DATA_OFFSET = 0x01
TFHD_SAMPLE_DESCRIPTION = 0x02
TFHD_DURATION = 0x08
TFHD_SIZE = 0x10
TFHD_FLAGS = 0x20
TRUN_DATA_OFFSET = 0x01
TRUN_FIRST_FLAGS = 0x04
TRUN_DURATION = 0x100
TRUN_SIZE = 0x200
TRUN_FLAGS = 0x400
TRUN_CTO = 0x800
NON_SYNC = 0x10000
_U32 = struct.Struct(">I")


def default_preset() -> str:
    """The daemon's ``--preset`` when none is given."""
    return Options()["preset"]


def gop_frames(fps: int, seconds: float | None) -> int | None:
    return None if seconds is None else max(1, round(fps * seconds))


def with_gop(args: list[str], frames: int | None) -> list[str]:
    """``args`` with the value after ``-g`` replaced, or (None) the ``-g`` pair removed."""
    args = list(args)
    at = args.index("-g")
    if frames is None:
        del args[at : at + 2]
    else:
        args[at + 1] = str(frames)
    return args


@dataclass(frozen=True)
class Fragment:
    """One ``moof``: its samples, their total duration in seconds, and which of them (indices
    within the fragment) are sync samples (keyframes)."""

    samples: int
    seconds: float
    sync: tuple[int, ...]


def _track_defaults(data: bytes) -> tuple[int, int, int]:
    """``(timescale, default duration, default flags)`` of the file's one track, from
    ``moov/trak/mdia/mdhd`` and ``moov/mvex/trex``."""
    moov = bmff.child(data, 0, len(data), b"moov")
    if moov is None:
        raise ValueError("no moov")
    mdhd = bmff.descend(data, moov.payload, moov.end, b"trak", b"mdia", b"mdhd")
    if mdhd is None:
        raise ValueError("no mdhd")
    # version 1: 64-bit creation and modification times before the timescale
    at = mdhd.payload + (20 if data[mdhd.payload] == 1 else 12)
    (timescale,) = _U32.unpack_from(data, at)
    trex = bmff.descend(data, moov.payload, moov.end, b"mvex", b"trex")
    duration = flags = 0
    if trex is not None:  # full box header, track_ID, description index, duration, size, flags
        duration, _, flags = struct.unpack_from(">III", data, trex.payload + 12)
    return timescale, duration, flags


def read_fragments(path: Path) -> list[Fragment]:
    """Every fragment of a fragmented MP4 of one track, in order."""
    data = path.read_bytes()
    timescale, trex_duration, trex_flags = _track_defaults(data)
    found = []
    for moof in bmff.boxes(data):
        if moof.type != b"moof":
            continue
        samples, ticks, sync = 0, 0, []
        for traf in bmff.boxes(data, moof.payload, moof.end):
            if traf.type != b"traf":
                continue
            duration, flags = trex_duration, trex_flags
            for box in bmff.boxes(data, traf.payload, traf.end):
                (head,) = _U32.unpack_from(data, box.payload)
                box_flags, at = head & 0xFFFFFF, box.payload + 4
                if box.type == b"tfhd":
                    at += 4  # track_ID
                    at += 8 if box_flags & TFHD_BASE_DATA_OFFSET else 0
                    at += 4 if box_flags & TFHD_SAMPLE_DESCRIPTION else 0
                    if box_flags & TFHD_DURATION:
                        (duration,) = _U32.unpack_from(data, at)
                        at += 4
                    at += 4 if box_flags & TFHD_SIZE else 0
                    if box_flags & TFHD_FLAGS:
                        (flags,) = _U32.unpack_from(data, at)
                elif box.type == b"trun":
                    (count,) = _U32.unpack_from(data, at)
                    at += 4
                    at += 4 if box_flags & TRUN_DATA_OFFSET else 0
                    first_flags = None
                    if box_flags & TRUN_FIRST_FLAGS:
                        (first_flags,) = _U32.unpack_from(data, at)
                        at += 4
                    for i in range(count):
                        sample_duration, sample_flags = duration, flags
                        if box_flags & TRUN_DURATION:
                            (sample_duration,) = _U32.unpack_from(data, at)
                            at += 4
                        at += 4 if box_flags & TRUN_SIZE else 0
                        if box_flags & TRUN_FLAGS:
                            (sample_flags,) = _U32.unpack_from(data, at)
                            at += 4
                        at += 4 if box_flags & TRUN_CTO else 0
                        if i == 0 and first_flags is not None:
                            sample_flags = first_flags
                        if not sample_flags & NON_SYNC:
                            sync.append(samples)
                        samples += 1
                        ticks += sample_duration
        found.append(Fragment(samples, ticks / timescale, tuple(sync)))
    return found


def decoded_keyframes(exe: str, out: Path) -> int:
    """Frames the decoder marks as keyframes (``showinfo``'s ``iskey:1``)."""
    done = subprocess.run(
        [exe, "-hide_banner", "-nostats", "-i", os.fspath(out), "-vf", "showinfo",
         "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return len(re.findall(r"\biskey:1\b", done.stderr))


def structure(exe: str, out: Path) -> dict[str, object]:
    """The keyframes and fragments of the encoder's output (see the module's docstring)."""
    found = read_fragments(out)
    whole = fragments.measure(out)  # the daemon's own walk, as a check of this one
    keyframes: list[int] = []
    start = 0
    for fragment in found:
        keyframes.extend(start + i for i in fragment.sync)
        start += fragment.samples
    if (whole.fragments, whole.samples) != (len(found), start):
        raise RuntimeError(f"fragments.measure {whole} disagrees: {len(found)}, {start} samples")
    decoded = decoded_keyframes(exe, out)
    if decoded != len(keyframes):
        raise RuntimeError(f"{len(keyframes)} sync samples but {decoded} decoded keyframes")

    def counted(values: list) -> dict[str, int]:
        return {str(value): n for value, n in sorted(Counter(values).items())}

    starting = sum(1 for fragment in found if 0 in fragment.sync)
    return {
        "keyframes": len(keyframes),
        "keyframe_intervals": counted([b - a for a, b in pairwise(keyframes)]),
        "fragments": len(found),
        "samples_per_fragment": counted([fragment.samples for fragment in found]),
        "fragment_s": counted([round(fragment.seconds, 4) for fragment in found]),
        "keyframes_starting_fragment": starting,
        "keyframes_mid_fragment": len(keyframes) - starting,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--source", default="testsrc2")
    parser.add_argument("--preset", default=default_preset())
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds (medians)")
    options = parser.parse_args()
    exe = ffmpeg.find(None)
    fps = options.fps
    with tempfile.TemporaryDirectory() as tmp:
        frames_dir = Path(tmp)
        frames = make_frames(exe, frames_dir, options.frames, options.size, options.source, fps=fps)
        width, height = (int(v) for v in frames_size(exe, frames[0]).split("x"))
        seconds = len(frames) / fps
        cpu: dict[str, list[float]] = {name: [] for name, _ in CANDIDATES}
        size: dict[str, list[int]] = {name: [] for name, _ in CANDIDATES}
        outs = {name: frames_dir / f"out-{name}.mp4" for name, _ in CANDIDATES}
        for round_ in range(options.repeat):
            # each round starts at another candidate, so none is always first or last
            shift = round_ % len(CANDIDATES)
            for name, gop in CANDIDATES[shift:] + CANDIDATES[:shift]:
                settings = EncoderSettings(exe, fps, options.preset)
                args = encoder_args(settings, width, height, os.fspath(outs[name]))
                cpu[name].append(encoder_cpu(exe, with_gop(args, gop_frames(fps, gop)), frames))
                size[name].append(outs[name].stat().st_size)
        kbps = {name: statistics.median(size[name]) * 8 / seconds / 1000 for name in size}
        cpu_min = {name: statistics.median(cpu[name]) / (seconds / 60) for name in cpu}
        for name, gop in CANDIDATES:
            frames_in_gop = gop_frames(fps, gop) or X264_DEFAULT_KEYINT
            print(json.dumps({
                "gop": name,
                "gop_frames": frames_in_gop,
                "gop_seconds": round(frames_in_gop / fps, 3),
                "preset": options.preset,
                "kbps": round(kbps[name], 1),
                "cpu_s_per_min": round(cpu_min[name], 2),
                "kbps_ratio": round(kbps[name] / kbps[BASELINE], 3),
                "cpu_ratio": round(cpu_min[name] / cpu_min[BASELINE], 3),
                "cpu_s_runs": [round(c, 3) for c in cpu[name]],
                "ssim": round(ssim(exe, outs[name], frames_dir, fps=fps), 4),
                **structure(exe, outs[name]),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
