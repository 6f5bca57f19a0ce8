"""Hostile H.264 and Opus against the code that reads them in the daemon's process (issue 12).

Real access units and packets (libx264, libopus) are mutated many thousands of ways, with a
fixed seed so a failure repeats: bit flips, bytes inserted and deleted, truncation, start codes
injected, NAL units spliced from other streams, SPS written field by field (tests.support.
bitstream) with wild values and over-long exp-Golomb codes, emulation prevention bytes, random
Opus TOCs, frame lengths and padding. Whatever comes, a parser returns a value that holds what
it promises or raises its own refusal (``InvalidH264``, ``InvalidOpus``, ``ProtocolError``),
and does so in bounded time; a session fed the mutated streams writes a fragmented MP4 that is
whole after every chunk and that ffmpeg (a child) stream-copies.

And the parsers against real decoders: ``parse_sps`` against libavcodec (PyAV) on pictures
written bit by bit for hundreds of SPS and against libx264's output at odd, extreme and
interlaced sizes; ``packet_samples`` against libopus (its packet parser and its decoder).
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import glob
import json
import os
import random
import re
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import av
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from livestream.library import bmff
from livestream.library.tree import OPUS_STREAM, VIDEO_STREAM, MediaTree
from livestream.recording import fragments
from livestream.recording.passthrough import PassthroughVideo
from livestream.recording.video import EncoderSettings
from livestream.sessions.errors import SessionError
from livestream.sessions.outcome import CLOSE
from livestream.sessions.session import Media, Session, SessionLimits
from livestream.wire import h264, opus
from livestream.wire.h264 import InvalidH264
from livestream.wire.kinds import Codec, MediaKind
from livestream.wire.messages import (
    Connect,
    ProtocolError,
    Stream,
    check_codec,
    parse_binary,
    parse_text,
)
from livestream.wire.opus import InvalidOpus, OpusHead
from tests.support.bitstream import HIGH_PROFILES, BitWriter, Sps, escape, pcm_idr
from tests.support.fakes import ProcessReactor
from tests.support.media import ffmpeg_exe, h264_access_units, opus_packets

SEED = 12
# A parse of anything here must take less than this (CPU time): the units of the corpus are a
# few kilobytes, the adversarial ones a megabyte; a linear pass over a megabyte is milliseconds.
BOUND = 0.1
MB = 1 << 20


def cpu_time(call: Callable[[], object]) -> float:
    """The least CPU time of three runs (a busy machine adds to wall time, not to this)."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        try:
            call()
        except (InvalidH264, InvalidOpus):
            pass
        best = min(best, time.process_time() - start)
    return best


# -- The corpus: what real encoders make -------------------------------------------------------


@cache
def streams() -> tuple[tuple[bytes, ...], ...]:
    """Three real H.264 streams: baseline and high at one size, baseline at another."""
    return (
        h264_access_units(24, "96x64", 8, "baseline"),
        h264_access_units(24, "96x64", 8, "high"),
        h264_access_units(12, "64x48", 4, "baseline"),
    )


def split_nals(unit: bytes) -> list[bytes]:
    return [nal for nal in re.split(b"\x00\x00\x00\x01|\x00\x00\x01", unit) if nal]


def join_nals(nals: Sequence[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)


@cache
def real_sps() -> tuple[bytes, ...]:
    return tuple(sorted(
        {nal for stream in streams() for unit in stream for nal in split_nals(unit)
         if nal[0] & 0x1F == h264.SPS}
    ))  # fmt: skip


# -- Mutations ---------------------------------------------------------------------------------


def random_sps(rng: random.Random) -> tuple[Sps, bool]:
    """An SPS of random fields, and whether every field is within the bounds of 7.4.2.1.1
    (then its size is exactly :meth:`Sps.expected`); otherwise some field is wild."""
    wild = rng.random() < 0.3

    def field(bound: int) -> int:
        if wild and rng.random() < 0.15:
            return rng.choice([bound + 1, rng.randrange(bound + 1, 2**32 - 1), 2**32 - 2])
        return rng.randrange(bound + 1)

    profile = rng.choice([66, 77, 88, 100, 100, 110, 122, 244, 44, 144, rng.randrange(256)])
    high = profile in HIGH_PROFILES
    scaling = None
    if high and rng.random() < 0.5:
        scaling = tuple(
            None if rng.random() < 0.3 else
            tuple(rng.randint(-128, 127) if rng.random() < 0.5 else rng.randint(-3, 3)
                  for _ in range(rng.choice([0, 1, 16, 64])))
            for _ in range(8)
        )  # fmt: skip
    poc_type = field(2)
    ref_offsets = ()
    if poc_type == 1:
        ref_offsets = tuple(
            rng.randint(-(2**31) + 1, 2**31 - 1) for _ in range(rng.choice([0, 1, 2, 255]))
        )
    frame_mbs_only = rng.random() < 0.7
    width_mbs = rng.choice([1, 2, 6, 20, 40, 80, 120, 511, 512, 513]) if rng.random() < 0.5 else 0
    width_mbs = width_mbs or rng.randint(1, 512)
    height_units = rng.choice([1, 3, 15, 45, 68, 255, 256, 257, 512, 513])
    crop = None
    if rng.random() < 0.5:
        crop = tuple(rng.choice([0, 0, 1, 3, 7, 8, rng.randrange(4096)]) for _ in range(4))
    sps = Sps(
        profile=profile,
        constraints=rng.randrange(256),
        level=rng.randrange(256),
        sps_id=field(31),
        chroma=field(3) if wild else rng.choice([1, 1, 1, 0, 2, 3]),
        separate_planes=rng.random() < 0.5,
        luma_depth_minus8=rng.choice([0, 0, 0, 2, 6]) if not wild else field(6),
        chroma_depth_minus8=rng.choice([0, 0, 0, 2]) if not wild else field(6),
        bypass=rng.random() < 0.2,
        scaling=scaling,
        frame_num_minus4=field(12),
        poc_type=poc_type,
        poc_lsb_minus4=field(12),
        poc_always_zero=rng.random() < 0.5,
        offset_non_ref=rng.randint(-(2**31) + 1, 2**31 - 1),
        offset_top_bottom=rng.randint(-5, 5),
        ref_offsets=ref_offsets,
        ref_frames=field(16),
        gaps=rng.random() < 0.1,
        width_mbs=width_mbs if not wild else field(520) + 1,
        height_units=height_units,
        frame_mbs_only=frame_mbs_only,
        mbaff=rng.random() < 0.5,
        direct_8x8=rng.random() < 0.9,
        crop=crop,  # type: ignore[arg-type]
    )
    return sps, not wild


def insert_zero_bits(nal: bytes, rng: random.Random) -> bytes:
    """The NAL unit with 28 to 40 zero bits put somewhere in its RBSP after the profile, level
    and constraint bytes: the exp-Golomb code there gets that many more leading zeros."""
    rbsp = h264.unescape(nal[1:])
    if len(rbsp) < 4:
        return nal
    bits = len(rbsp) * 8
    at = rng.randrange(24, bits)
    zeros = rng.randint(28, 40)
    value = int.from_bytes(rbsp, "big")
    head, tail = value >> (bits - at), value & ((1 << (bits - at)) - 1)
    value = (head << (zeros + bits - at)) | tail
    total = bits + zeros + (-(bits + zeros) % 8)
    value <<= total - bits - zeros
    return nal[:1] + escape(value.to_bytes(total // 8, "big"))


class Mutator:
    """Mutations of access units, seeded: the same seed makes the same cases."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.ops = [
            self.flip, self.flip, self.insert, self.delete, self.truncate, self.start_code,
            self.splice, self.splice, self.emulation, self.new_sps, self.new_sps,
            self.zero_bits, self.zeros, self.header, self.duplicate, self.drop,
        ]  # fmt: skip

    def unit(self, data: bytes) -> bytes:
        for _ in range(self.rng.choice([1, 1, 1, 2, 3, 5])):
            data = self.rng.choice(self.ops)(bytearray(data))
        return bytes(data)

    def _pos(self, data: bytearray) -> int:
        """Anywhere, but more often among the first bytes of a NAL unit (its header, the
        parameter sets' and slice headers' fields), where the parser looks."""
        if not data:
            return 0
        if self.rng.random() < 0.6:
            starts = [m.end() for m in re.finditer(b"\x00\x00\x01", data)] or [0]
            return min(len(data) - 1, self.rng.choice(starts) + self.rng.randrange(12))
        return self.rng.randrange(len(data))

    def flip(self, data: bytearray) -> bytearray:
        if data:
            data[self._pos(data)] ^= 1 << self.rng.randrange(8)
        return data

    def insert(self, data: bytearray) -> bytearray:
        at = self._pos(data)
        data[at:at] = self.rng.randbytes(self.rng.choice([1, 1, 2, 4, 16]))
        return data

    def delete(self, data: bytearray) -> bytearray:
        at = self._pos(data)
        del data[at : at + self.rng.choice([1, 1, 2, 3, 8, 64])]
        return data

    def truncate(self, data: bytearray) -> bytearray:
        return data[: self.rng.randrange(len(data) + 1)]

    def start_code(self, data: bytearray) -> bytearray:
        at = self.rng.randrange(len(data) + 1)
        code = self.rng.choice([b"\x00\x00\x01", b"\x00\x00\x00\x01", b"\x00\x00\x01\x00"])
        if self.rng.random() < 0.5:
            code += bytes((self.rng.randrange(256),))
        data[at:at] = code
        return data

    def splice(self, data: bytearray) -> bytearray:
        """NAL units of another unit, of this stream or another (another size or profile), in
        place of one of these or among them."""
        other = self.rng.choice(self.rng.choice(streams()))
        theirs = split_nals(other)
        nals = split_nals(bytes(data)) or [b""]
        picked = self.rng.sample(theirs, self.rng.randint(1, len(theirs)))
        at = self.rng.randrange(len(nals) + 1)
        drop = self.rng.choice([0, 1])
        nals[at : at + drop] = picked
        return bytearray(join_nals([n for n in nals if n]))

    def emulation(self, data: bytearray) -> bytearray:
        """Emulation prevention bytes where none belong, or one taken out."""
        escapes = [m.start() + 2 for m in re.finditer(b"\x00\x00\x03", data)]
        if escapes and self.rng.random() < 0.5:
            del data[self.rng.choice(escapes)]
            return data
        at = self._pos(data)
        data[at:at] = self.rng.choice([b"\x00\x00\x03", b"\x00\x00", b"\x03", b"\x00\x00\x03\x00"])
        return data

    def new_sps(self, data: bytearray) -> bytearray:
        """An SPS of random fields in place of the unit's or added to it."""
        sps, _ = random_sps(self.rng)
        nal = sps.nal()
        if self.rng.random() < 0.3:
            nal = nal[: self.rng.randrange(1, len(nal) + 1)]
        nals = split_nals(bytes(data))
        where = [i for i, n in enumerate(nals) if n[0] & 0x1F == h264.SPS]
        if where and self.rng.random() < 0.7:
            nals[self.rng.choice(where)] = nal
        else:
            nals.insert(self.rng.randrange(len(nals) + 1), nal)
        return bytearray(join_nals(nals))

    def zero_bits(self, data: bytearray) -> bytearray:
        """A huge exp-Golomb code in an SPS (or a slice)."""
        nals = split_nals(bytes(data))
        if not nals:
            return data
        where = [i for i, n in enumerate(nals) if n[0] & 0x1F == h264.SPS]
        i = self.rng.choice(where) if where else self.rng.randrange(len(nals))
        nals[i] = insert_zero_bits(nals[i], self.rng)
        return bytearray(join_nals(nals))

    def zeros(self, data: bytearray) -> bytearray:
        at = self._pos(data)
        data[at:at] = bytes(self.rng.choice([1, 2, 3, 4, 8, 40]))
        return data

    def header(self, data: bytearray) -> bytearray:
        starts = [m.end() for m in re.finditer(b"\x00\x00\x01", data) if m.end() < len(data)]
        if starts:
            data[self.rng.choice(starts)] = self.rng.randrange(256)
        return data

    def duplicate(self, data: bytearray) -> bytearray:
        nals = split_nals(bytes(data))
        if nals:
            i = self.rng.randrange(len(nals))
            nals[i:i] = [nals[i]] * self.rng.choice([1, 2, 40])
        return bytearray(join_nals(nals))

    def drop(self, data: bytearray) -> bytearray:
        nals = split_nals(bytes(data))
        if nals:
            del nals[self.rng.randrange(len(nals))]
        return bytearray(join_nals(nals))


def mutated_units(seed: int, count: int) -> list[bytes]:
    mutator = Mutator(seed)
    units = [unit for stream in streams() for unit in stream]
    return [mutator.unit(mutator.rng.choice(units)) for _ in range(count)]


# -- H.264: access units and SPS ---------------------------------------------------------------


class H264Checks(SynchronousTestCase):
    """``check_access_unit`` and ``parse_sps`` on mutated real streams and on random bytes."""

    def check(self, data: bytes) -> h264.AccessUnit | None:
        """The unit checked, or None if refused; fails on anything else, or a slow check."""
        start = time.process_time()
        try:
            au = h264.check_access_unit(data)
        except InvalidH264:
            au = None
        except Exception as e:
            self.fail(f"{type(e).__name__}: {e} on {len(data)} bytes {data[:48].hex()}")
        elapsed = time.process_time() - start
        self.assertLess(elapsed, BOUND, f"{elapsed:.3f} s on {len(data)} bytes")
        if au is not None:
            self.assert_whole(au, data)
        return au

    def assert_whole(self, au: h264.AccessUnit, data: bytes) -> None:
        """An accepted unit holds what ``check_access_unit`` promises of it."""
        self.assertTrue(au.nals)
        kinds = set()
        for nal in au.nals:
            self.assertTrue(nal)
            self.assertIn(nal, data)
            self.assertNotIn(b"\x00\x00\x01", nal)
            self.assertFalse(nal[0] & 0x80)
            self.assertIn(nal[0] & 0x1F, h264.ALLOWED_TYPES)
            kinds.add(nal[0] & 0x1F)
        self.assertEqual(len(kinds & h264.SLICES), 1)
        self.assertEqual(au.key, h264.IDR in kinds)
        self.assertEqual(len(au.sps), sum(1 for n in au.nals if n[0] & 0x1F == h264.SPS))
        for sps in au.sps:
            self.assert_sides(h264.parse_sps(sps))

    def assert_sides(self, params: h264.SequenceParameters) -> None:
        self.assertTrue(1 <= params.width <= 8192 and 1 <= params.height <= 8192, params)
        self.assertTrue(0 <= params.profile <= 255 and 0 <= params.level <= 255)
        self.assertRegex(params.codec, r"^avc1\.[0-9a-f]{6}$")

    def parse_sps(self, nal: bytes) -> h264.SequenceParameters | None:
        start = time.process_time()
        try:
            params = h264.parse_sps(nal)
        except InvalidH264:
            return None
        except Exception as e:
            self.fail(f"{type(e).__name__}: {e} on SPS {nal[:48].hex()}")
        self.assertLess(time.process_time() - start, BOUND)
        self.assert_sides(params)
        return params

    def test_real_units_pass(self) -> None:
        """The corpus itself: every unit of libx264 (baseline, high) is taken as it is."""
        for stream in streams():
            for i, unit in enumerate(stream):
                au = self.check(unit)
                assert au is not None
                self.assertEqual(au.key, i % (8 if len(stream) == 24 else 4) == 0)

    def test_mutated_units(self) -> None:
        """8000 mutations of real units: each is checked or refused, quickly."""
        taken = 0
        for data in mutated_units(SEED, 8000):
            taken += self.check(data) is not None
        # Most mutations hit slice data, which the check does not read; plenty get refused.
        self.assertTrue(2000 < taken < 7000, taken)

    def test_random_sps_fields(self) -> None:
        """4000 SPS of random fields: one within the bounds of 7.4.2.1.1 gives exactly the
        size those fields say (or is refused for its size, chroma format or depth); one with a
        field past them is refused or gives a size of 1 to 8192 a side."""
        rng = random.Random(SEED)
        exact = 0
        for _ in range(4000):
            sps, bounded = random_sps(rng)
            params = self.parse_sps(sps.nal())
            if bounded:
                size = None if params is None else (params.width, params.height)
                self.assertEqual(size, sps.expected(), sps)
                exact += size is not None
                if params is not None:
                    self.assertEqual((params.profile, params.level), (sps.profile, sps.level))
        self.assertGreater(exact, 600)

    def test_mutated_sps(self) -> None:
        """4000 mutations of real and random SPS NAL units, huge exp-Golomb codes among them."""
        rng = random.Random(SEED + 1)
        mutator = Mutator(SEED + 1)
        for i in range(4000):
            nal = rng.choice(real_sps()) if i % 2 else random_sps(rng)[0].nal()
            choice = rng.randrange(4)
            if choice == 0:
                nal = insert_zero_bits(nal, rng)
            elif choice == 1:
                nal = nal[: rng.randrange(len(nal) + 1)]
            else:
                nal = bytes(mutator.flip(bytearray(nal)))
            self.parse_sps(nal)

    def test_exp_golomb_codes(self) -> None:
        """The longest code a 32-bit field has (31 zeros) is read; one zero more is refused,
        as is a code the SPS ends inside of."""
        self.assertEqual(self.parse_sps(Sps(poc_type=1, ref_offsets=(2**31 - 1,) * 3).nal()),
                         h264.SequenceParameters(66, 0, 30, 320, 240))  # fmt: skip
        for zeros, message in [(32, "over 32 bits"), (20, "ends before its fields")]:
            bits = BitWriter()
            bits.u(24, 0x42001E)
            bits.u(zeros, 0)
            with self.assertRaisesRegex(InvalidH264, message):
                h264.parse_sps(b"\x67" + escape(bits.rbsp()))

    @settings(max_examples=400, deadline=None)
    @given(st.binary(max_size=300))
    def test_any_bytes(self, data: bytes) -> None:
        """Bytes of any kind, as a unit, as one NAL unit after a start code, and as an SPS."""
        self.check(data)
        self.check(b"\x00\x00\x01" + data)
        self.check(b"\x00\x00\x01\x65\x88" + data)
        self.parse_sps(b"\x67" + data)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.sampled_from([b"\x00", b"\x00\x00\x01", b"\x00\x00\x03", b"\x65", b"\x67",
                             b"\x68", b"\x41", b"\x09\xf0", b"\xff", b"\x80", b"\x67\x42"]),
            max_size=40,
        )
    )  # fmt: skip
    def test_start_code_soup(self, pieces: list[bytes]) -> None:
        """Start codes, zeros, escapes and NAL headers in any order."""
        self.check(b"".join(pieces))


class MegabyteUnits(SynchronousTestCase):
    """What a client can pack into one message (up to 16 MiB by default) costs a pass over it,
    never a pathological loop: each of these 1 MB units is checked in well under 100 ms."""

    def units(self) -> dict[str, bytes]:
        baseline = streams()[0]
        sps, pps = (n for n in split_nals(baseline[0]) if n[0] & 0x1F in (7, 8))
        heavy = Sps(
            profile=100,
            scaling=tuple((127, -127) * 32 for _ in range(8)),
            poc_type=1,
            ref_offsets=(2**31 - 1,) * 255,
            offset_non_ref=-(2**31) + 1,
        ).nal()
        slice_nal = b"\x65\x88\x84"
        return {
            "one slice": join_nals([sps, pps, b"\x65" + random.Random(1).randbytes(MB)]),
            "start codes": b"\x00\x00\x01" * (MB // 3),
            "zeros after a start code": b"\x00\x00\x01" + bytes(MB),
            "escapes in an SPS": b"\x00\x00\x01" + sps + b"\x00\x00\x03" * (MB // 3),
            "tiny slices": join_nals([sps, pps, *[slice_nal] * (MB // 7)]),
            "the real SPS again and again": join_nals([*[sps] * (MB // (len(sps) + 4)), pps,
                                                        slice_nal]),
            "the heaviest SPS again and again": join_nals([*[heavy] * (MB // len(heavy)), pps,
                                                           slice_nal]),
            "one SPS of a megabyte": join_nals([heavy + b"\xff" * MB, pps, slice_nal]),
            "PPS again and again": join_nals([sps, *[pps] * (MB // (len(pps) + 4)), slice_nal]),
            "8192 slices": join_nals([sps, pps, *[b"\x65\x88" + b"\xaa" * 122] * 8190]),
            "SPS cut off in an over-long code": join_nals(
                [*[b"\x67\x64\x00\x28" + bytes(8) + b"\x01"] * (MB // 17), pps, slice_nal]
            ),
        }  # fmt: skip

    def test_each_in_well_under_100_ms(self) -> None:
        slow = {}
        for name, unit in self.units().items():
            self.assertGreater(len(unit), MB - 4096, name)
            elapsed = cpu_time(lambda unit=unit: h264.check_access_unit(unit))
            if elapsed >= BOUND / 2:
                slow[name] = round(elapsed, 3)
        self.assertEqual(slow, {})

    def test_an_sps_of_a_megabyte(self) -> None:
        """What ``parse_sps`` itself costs on an SPS of a megabyte: its fields are read, the
        rest only unescaped."""
        heavy = self.units()["one SPS of a megabyte"].split(b"\x00\x00\x00\x01")[1]
        self.assertLess(cpu_time(lambda: h264.parse_sps(heavy)), BOUND / 2)

    def test_each_through_a_recording(self) -> None:
        """The same units sent to a session (checked, admitted and written): as quick."""
        slow = {}
        for name, unit in self.units().items():
            session = FuzzedSession(self, name, timing="frames")
            elapsed = cpu_time(lambda s=session, unit=unit: s.video(unit, key=True))
            if elapsed >= BOUND:
                slow[name] = round(elapsed, 3)
        self.assertEqual(slow, {})

    def test_the_most_nal_units(self) -> None:
        """An access unit of 8192 NAL units is recorded; one more is refused."""
        session = FuzzedSession(self, "the most NAL units", timing="frames")
        nals = split_nals(streams()[0][0])
        for extra, taken in [(8192 - len(nals), True), (8193 - len(nals), False)]:
            unit = join_nals([*nals, *[b"\x06\x05\x01\x00\x80"] * extra])
            self.assertEqual(session.video(unit, key=True), taken)
        self.assertEqual(session.refused, {"invalid_h264": 1})

    def test_the_most_parameter_sets(self) -> None:
        """31 SPS (each as long to read as an SPS can be) and 255 PPS, all an access unit may
        carry: checked and recorded in well under 100 ms too."""
        heavy = [
            Sps(
                profile=100,
                sps_id=i,
                scaling=tuple((127, -127) * 32 for _ in range(8)),
                poc_type=1,
                ref_offsets=(2**31 - 1,) * 255,
            ).nal()
            for i in range(31)
        ]
        nals = split_nals(streams()[0][0])
        pps = next(n for n in nals if n[0] & 0x1F == h264.PPS)
        unit = join_nals([*heavy, *[pps] * 255, b"\x65\x88\x84"])
        self.assertEqual(len(h264.check_access_unit(unit).params), 31)
        self.assertLess(cpu_time(lambda: h264.check_access_unit(unit)), BOUND / 2)
        session = FuzzedSession(self, "the most parameter sets", timing="frames")
        self.assertLess(cpu_time(lambda: session.video(unit, key=True)), BOUND)
        self.assertEqual(session.refused, {})


# -- Opus --------------------------------------------------------------------------------------


@cache
def libopus() -> ctypes.CDLL | None:
    """libopus itself (the system's, or the one PyAV's wheel carries), to compare with."""
    candidates = [ctypes.util.find_library("opus")]
    candidates += glob.glob(os.path.join(os.path.dirname(av.__file__), "..", "av.libs", "libopus*"))
    for candidate in candidates:
        if not candidate:
            continue
        try:
            lib = ctypes.CDLL(candidate)
        except OSError:
            continue
        lib.opus_packet_parse.argtypes = [
            ctypes.c_char_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_ubyte),
            ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int16),
            ctypes.POINTER(ctypes.c_int),
        ]  # fmt: skip
        lib.opus_packet_get_samples_per_frame.argtypes = [ctypes.c_char_p, ctypes.c_int32]
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [
            ctypes.c_int32,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int),
        ]
        lib.opus_decode.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_int16),
            ctypes.c_int, ctypes.c_int,
        ]  # fmt: skip
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        return lib
    return None


def libopus_samples(packet: bytes) -> int | None:
    """What libopus's packet parser makes of a packet: its 48 kHz samples, or None (refused)."""
    lib = libopus()
    assert lib is not None
    toc = ctypes.c_ubyte()
    frames = (ctypes.c_void_p * 48)()
    sizes = (ctypes.c_int16 * 48)()
    offset = ctypes.c_int()
    count = lib.opus_packet_parse(packet, len(packet), toc, frames, sizes, offset)
    if count < 0:
        return None
    return count * lib.opus_packet_get_samples_per_frame(packet, opus.RATE)


def libopus_decoded(packets: Sequence[bytes], channels: int = 1) -> list[int]:
    """The samples (per channel) libopus's decoder gives for each packet."""
    lib = libopus()
    assert lib is not None
    error = ctypes.c_int()
    decoder = lib.opus_decoder_create(opus.RATE, channels, error)
    assert decoder and error.value == 0
    pcm = (ctypes.c_int16 * (opus.MAX_PACKET_SAMPLES * channels))()
    try:
        return [
            lib.opus_decode(decoder, p, len(p), pcm, opus.MAX_PACKET_SAMPLES, 0) for p in packets
        ]
    finally:
        lib.opus_decoder_destroy(decoder)


class OpusMutator:
    """Mutations of Opus packets: the TOC, the frame count byte, lengths, padding, the end."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.ops = [
            self.toc, self.toc, self.code, self.flip, self.truncate, self.append,
            self.count_byte, self.count_byte, self.length_bytes, self.padding, self.grow,
        ]  # fmt: skip

    def packet(self, data: bytes) -> bytes:
        for _ in range(self.rng.choice([1, 1, 2, 3])):
            data = self.rng.choice(self.ops)(bytearray(data))
        return bytes(data)

    def toc(self, data: bytearray) -> bytearray:
        if data:
            data[0] = self.rng.randrange(256)
        return data

    def code(self, data: bytearray) -> bytearray:
        if data:
            data[0] = (data[0] & ~3) | self.rng.randrange(4)
        return data

    def flip(self, data: bytearray) -> bytearray:
        if data:
            at = self.rng.randrange(min(len(data), 6)) if self.rng.random() < 0.7 else 0
            data[at] ^= 1 << self.rng.randrange(8)
        return data

    def truncate(self, data: bytearray) -> bytearray:
        return data[: self.rng.randrange(len(data) + 1)]

    def append(self, data: bytearray) -> bytearray:
        return data + self.rng.randbytes(self.rng.choice([1, 2, 5, 100, 1300]))

    def count_byte(self, data: bytearray) -> bytearray:
        """Code 3, a random frame count, VBR and padding flags."""
        if not data:
            return data
        data[0] |= 3
        byte = self.rng.randrange(256) if self.rng.random() < 0.5 else self.rng.randint(1, 6)
        if len(data) < 2:
            data.append(byte)
        else:
            data[1] = byte
        return data

    def length_bytes(self, data: bytearray) -> bytearray:
        at = self.rng.randrange(1, 4)
        data[at:at] = bytes((self.rng.choice([0, 1, 200, 251, 252, 253, 254, 255]),))
        return data

    def padding(self, data: bytearray) -> bytearray:
        """A padding flag and padding lengths of 255s (each 254 more bytes, then another)."""
        if len(data) < 2:
            return data
        data[0] |= 3
        data[1] |= 0x40
        data[2:2] = b"\xff" * self.rng.choice([0, 1, 2, 8]) + bytes((self.rng.randrange(256),))
        return data

    def grow(self, data: bytearray) -> bytearray:
        return data * self.rng.choice([2, 3, 30])


@st.composite
def opus_packet(draw: st.DrawFn) -> bytes:
    """A packet put together from its parts (RFC 6716 §3.2), mostly well-framed."""
    config, stereo, code = draw(st.integers(0, 31)), draw(st.booleans()), draw(st.integers(0, 3))
    frame = st.binary(max_size=40)
    out = bytearray([config << 3 | int(stereo) << 2 | code])

    def length(n: int) -> bytes:
        return bytes((n,)) if n < 252 else bytes((252 + (n - 252) % 4, (n - 252) // 4))

    if code == 0:
        out += draw(frame)
    elif code == 1:
        out += draw(frame) * 2 if draw(st.booleans()) else draw(frame)
    elif code == 2:
        first, second = draw(frame), draw(frame)
        out += length(draw(st.sampled_from([len(first), len(first) + 1, 300]))) + first + second
    else:
        count = draw(st.integers(0, 63))
        vbr, padding = draw(st.booleans()), draw(st.integers(0, 600))
        out.append(int(vbr) << 7 | int(padding > 0) << 6 | count)
        if padding:
            # Each 255 stands for 254 bytes of padding and another length byte after it.
            out += b"\xff" * (padding // 254) + bytes((padding % 254,))
        frames = [draw(frame) for _ in range(min(count, 8))]
        if vbr:
            out += b"".join(length(len(f)) for f in frames[:-1])
        out += b"".join(frames) + bytes(padding)
    if draw(st.integers(0, 9)) == 0:
        out = out[: draw(st.integers(0, len(out)))]
    return bytes(out)


class OpusChecks(SynchronousTestCase):
    """``packet_samples`` and ``parse_opus_head`` on mutated real packets and built ones, and
    against libopus."""

    def setUp(self) -> None:
        self.head, self.packets = opus_packets(2.0)

    def samples(self, packet: bytes) -> int | None:
        start = time.process_time()
        try:
            samples = opus.packet_samples(packet)
        except InvalidOpus:
            samples = None
        except Exception as e:
            self.fail(f"{type(e).__name__}: {e} on {packet[:48].hex()}")
        self.assertLess(time.process_time() - start, BOUND)
        if samples is not None:
            self.assertTrue(120 <= samples <= 5760 and samples % 120 == 0, samples)
        if libopus() is not None:
            self.assertEqual(samples, libopus_samples(packet), packet[:48].hex())
        return samples

    def test_real_packets_agree_with_libopus(self) -> None:
        """Every packet of libopus's encoder lasts what its decoder makes of it (20 ms)."""
        if libopus() is None:
            raise SkipTest("no libopus to compare with")
        ours = [opus.packet_samples(p) for p in self.packets]
        self.assertEqual(ours, [960] * len(self.packets))
        self.assertEqual(libopus_decoded(self.packets), ours)

    def test_mutated_packets(self) -> None:
        """10000 mutations of real packets: a duration of 2.5 to 120 ms or a refusal, the same
        as libopus's packet parser says."""
        mutator = OpusMutator(SEED)
        durations = set()
        for _ in range(10000):
            durations.add(self.samples(mutator.packet(mutator.rng.choice(self.packets))))
        # Every frame duration of every mode, and refusals, came up.
        self.assertTrue({120, 240, 480, 960, 1920, 2880, 5760, None} <= durations, durations)

    @settings(max_examples=1000, deadline=None)
    @given(opus_packet())
    def test_built_packets(self, packet: bytes) -> None:
        self.samples(packet)

    def test_accepted_mutations_decode_in_libopus(self) -> None:
        """What ``packet_samples`` takes, libopus's decoder decodes to as many samples (the WAV
        and the MP4's timeline agree); decoded here in this process, which libopus's own
        fuzzing makes safe enough for a test."""
        if libopus() is None:
            raise SkipTest("no libopus to compare with")
        mutator = OpusMutator(SEED + 1)
        taken = []
        while len(taken) < 500:
            packet = mutator.packet(mutator.rng.choice(self.packets))
            if self.samples(packet) is not None:
                taken.append(packet)
        self.assertEqual(libopus_decoded(taken), [opus.packet_samples(p) for p in taken])

    def test_megabyte_packets(self) -> None:
        """Long packets cost a pass over them: padding lengths, frames, lengths."""
        packets = {
            "padding lengths": b"\x03\x41" + b"\xff" * MB,
            "VBR padding lengths": b"\x03\xc1" + b"\xff" * MB,
            "padding": b"\x03\x41" + b"\xff" * 4 + b"\x10" + bytes(MB),
            "one frame": b"\x00" + bytes(MB),
            "two frames": b"\x02" + b"\xff\xff" + bytes(MB),
        }
        slow = {}
        for name, packet in packets.items():
            elapsed = cpu_time(lambda packet=packet: opus.packet_samples(packet))
            if elapsed >= BOUND / 2:
                slow[name] = round(elapsed, 3)
        self.assertEqual(slow, {})

    def test_mutated_heads(self) -> None:
        """2000 mutations of a real OpusHead: mono or stereo with its fields, or refused."""
        rng = random.Random(SEED)
        mutator = OpusMutator(SEED)
        for _ in range(2000):
            head = bytearray(self.head)
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(head))
                head[at] = rng.randrange(256) if rng.random() < 0.5 else head[at] ^ 1
            data = mutator.truncate(head) if rng.random() < 0.2 else bytes(head)
            try:
                parsed = opus.parse_opus_head(bytes(data))
            except InvalidOpus:
                continue
            self.assertIn(parsed.channels, (1, 2))
            self.assertTrue(0 <= parsed.pre_skip < 65536 and -32768 <= parsed.gain < 32768)
            self.assertEqual(opus.parse_opus_head(parsed.encode()), parsed)


# -- Messages ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
timestamps = st.integers(-(2**64), 2**64) | st.sampled_from([2**53, 2**53 + 1, -(2**53)])


class MessageChecks(SynchronousTestCase):
    """The encoded kinds of message: what parses is well-formed for the session's codec."""

    def assert_stream(self, msg: Stream) -> None:
        """Checked against each codec of its kind: the chunk as the session takes it, or a
        ``ProtocolError``."""
        for codec in (Codec.JPEG, Codec.H264) if msg.kind is MediaKind.VIDEO else (
            Codec.PCM, Codec.OPUS
        ):  # fmt: skip
            try:
                checked = check_codec(msg, codec)
            except ProtocolError:
                continue
            self.assertEqual(checked.chunk, msg.chunk)
            if codec.encoded:
                assert checked.timestamp is not None
                self.assertIsInstance(checked.timestamp, int)
                self.assertLessEqual(abs(checked.timestamp), 2**53)
                if msg.kind is MediaKind.VIDEO:
                    self.assertIsInstance(checked.key, bool)

    def test_mutated_binary(self) -> None:
        """5000 binary messages: encoded kinds with their header mutated or cut short."""
        rng = random.Random(SEED)
        chunks = mutated_units(SEED + 3, 200) + list(opus_packets(2.0)[1]) + [b"", b"\x00"]
        for _ in range(5000):
            kind = rng.choice([0x21, 0x22, 0x21, 0x22, 0x01, 0x02, 0x11, 0x12, rng.randrange(256)])
            stamp = rng.randrange(-(2**63), 2**63)
            header = struct.pack(">BBIq", kind, rng.randrange(256), rng.randrange(2**32), stamp)
            data = header + rng.choice(chunks)
            if rng.random() < 0.2:
                data = data[: rng.randrange(len(data) + 1)]
            try:
                msg = parse_binary(data)
            except ProtocolError:
                continue
            except Exception as e:
                self.fail(f"{type(e).__name__}: {e} on {data[:32].hex()}")
            self.assertIsInstance(msg, Stream)
            self.assert_stream(msg)

    @settings(max_examples=400, deadline=None)
    @given(
        st.fixed_dictionaries(
            {"eventType": st.just("STREAM")},
            optional={
                "mediaSourceType": st.sampled_from(["AUDIO", "VIDEO", "video", 1]),
                "encodedMediaChunk": st.binary(max_size=40).map(
                    lambda b: base64.b64encode(b).decode()
                )
                | json_values,
                "timestamp": timestamps | json_values,
                "key": st.booleans() | json_values,
                "seq": st.integers(-1, 2**54) | json_values,
            },
        )
    )
    def test_encoded_json(self, doc: dict) -> None:
        try:
            msg = parse_text(json.dumps(doc))
        except ProtocolError:
            return
        assert isinstance(msg, Stream)
        self.assert_stream(msg)

    @settings(max_examples=400, deadline=None)
    @given(
        st.binary(max_size=40).map(lambda b: b"OpusHead" + b) | st.binary(max_size=30),
        st.sampled_from(["h264", "jpeg", "opus", "pcm", "H264", ""]),
        st.sampled_from(["opus", "pcm", "h264", None]),
    )
    def test_connect_with_opus_head(self, head: bytes, video: str, audio: str | None) -> None:
        doc = {"eventType": "CONNECT", "id": "cam", "videoCodec": video, "audioCodec": audio,
               "opusHead": base64.b64encode(head).decode()}  # fmt: skip
        try:
            msg = parse_text(json.dumps(doc))
        except ProtocolError:
            return
        assert isinstance(msg, Connect) and msg.opus_head is not None
        self.assertIn(msg.opus_head.channels, (1, 2))
        self.assertEqual(msg.video_codec, video)


# -- Recordings --------------------------------------------------------------------------------

FRAME_US = 1_000_000 // 15
EPOCH_US = 1_700_000_000_000_000


class FuzzedSession:
    """A session of H.264 and Opus in a temporary media tree, against a memory reactor (no
    ffmpeg runs): each chunk goes through ``Session.stream_encoded`` as the protocol sends it,
    and after each the files it writes must be whole fragments."""

    def __init__(
        self,
        case: SynchronousTestCase,
        label: str,
        *,
        timing: str = "capture",
        head: OpusHead | None = None,
    ) -> None:
        self.case = case
        self.label = label
        self.reactor = ProcessReactor()
        self.tree = MediaTree(case.mktemp())
        self.tree.ensure()
        self.name = self.tree.reserve("fuzz", 1700000000000)
        self.refused: dict[str, int] = {}
        self.session = Session(
            self.reactor,
            EncoderSettings("/fake/ffmpeg", 15, "veryfast", timing=timing),
            self.tree,
            "fuzz",
            self.name,
            "peer",
            None,
            lambda code, message: None,
            SessionLimits(max_seconds=3600.0, max_bytes=1 << 40),
            media=Media(Codec.H264, Codec.OPUS, head),
        )
        self._seq = {MediaKind.VIDEO: 0, MediaKind.AUDIO: 0}
        self.packets = 0
        self._last_audio = -1
        self._paths = {suffix: self.path(suffix) for suffix in (VIDEO_STREAM, OPUS_STREAM)}
        self._sizes: dict[str, int] = {}

    def path(self, suffix: str) -> Path:
        return self.tree.temp_path(self.name, suffix)

    def send(self, kind: MediaKind, chunk: bytes, timestamp: int, key: bool, seq: int) -> bool:
        try:
            self.session.stream_encoded(kind, chunk, timestamp, key, seq)
        except SessionError as e:
            self.refused[e.code] = self.refused.get(e.code, 0) + 1
            return False
        except Exception as e:
            self.case.fail(f"{self.label}: {type(e).__name__}: {e} on {chunk[:48].hex()}")
        finally:
            self.assert_whole()
        return True

    def video(self, unit: bytes, key: bool, timestamp: int | None = None) -> bool:
        seq = self._seq[MediaKind.VIDEO]
        self._seq[MediaKind.VIDEO] += 1
        stamp = EPOCH_US + seq * FRAME_US if timestamp is None else timestamp
        return self.send(MediaKind.VIDEO, unit, stamp, key, seq)

    def audio(self, packet: bytes, timestamp: int, seq: int) -> None:
        if self.send(MediaKind.AUDIO, packet, timestamp, False, seq) and seq > self._last_audio:
            self.packets += 1
            self._last_audio = seq

    def assert_whole(self) -> None:
        for suffix, path in self._paths.items():
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size != self._sizes.get(suffix):
                self._sizes[suffix] = size
                length, _ = fragments.whole_length(path)
                self.case.assertEqual(length, size, f"{self.label}: {suffix}")

    def finish(self) -> None:
        """End the session: its files are closed (and cut back, were they not whole), and the
        copies the memory reactor was asked for never run, so the files stay in ``temp/``."""
        self.session.finish(CLOSE)
        self.assert_whole()


def fmp4_samples(case: SynchronousTestCase, path: Path) -> list[tuple[int, int, bytes, bool]]:
    """Read back a fragmented MP4 of ours, checking every box and offset on the way: each
    sample's (decode time, duration, bytes, sync)."""
    data = path.read_bytes()
    top = list(bmff.boxes(data))
    case.assertEqual([b.type for b in top[:2]], [b"ftyp", b"moov"])
    case.assertEqual(top[-1].end, len(data))
    case.assertEqual(len(top) % 2, 0)
    samples = []
    time_next = None
    for moof, mdat in zip(top[2::2], top[3::2], strict=True):
        case.assertEqual((moof.type, mdat.type), (b"moof", b"mdat"))
        traf = bmff.child(data, moof.payload, moof.end, b"traf")
        assert traf is not None
        tfdt = bmff.child(data, traf.payload, traf.end, b"tfdt")
        trun = bmff.child(data, traf.payload, traf.end, b"trun")
        assert tfdt is not None and trun is not None
        (base,) = struct.unpack_from(">Q", data, tfdt.payload + 4)
        if time_next is not None:
            case.assertEqual(base, time_next)
        count, offset = struct.unpack_from(">Ii", data, trun.payload + 4)
        case.assertEqual(moof.start + offset, mdat.payload)
        entries = [
            struct.unpack_from(">III", data, trun.payload + 12 + 12 * i) for i in range(count)
        ]
        case.assertEqual(trun.end, trun.payload + 12 + 12 * count)
        case.assertEqual(sum(size for _, size, _ in entries), mdat.end - mdat.payload)
        pos, t = mdat.payload, base
        for duration, size, flags in entries:
            case.assertGreater(duration, 0)
            samples.append((t, duration, data[pos : pos + size], flags == 0x02000000))
            pos, t = pos + size, t + duration
        time_next = t
    return samples


def avcc_nals(case: SynchronousTestCase, sample: bytes) -> list[bytes]:
    """The NAL units of an MP4 sample, whose 4-byte lengths must tile it exactly."""
    nals, pos = [], 0
    while pos < len(sample):
        (n,) = struct.unpack_from(">I", sample, pos)
        case.assertTrue(0 < n <= len(sample) - pos - 4)
        nals.append(sample[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return nals


def is_key(unit: bytes) -> bool:
    return any(n[0] & 0x1F == h264.IDR for n in split_nals(unit))


def session_plan(rng: random.Random, frames: int) -> list[tuple[str, bytes, int, bool, int]]:
    """A session's chunks as a hostile or broken client sends them: video mostly from one real
    stream, some mutated, some from another stream (another size or profile), some skipped or
    sent twice, key flags and timestamps now and then wrong; Opus packets between them, some
    mutated. Each: (kind, chunk, timestamp, key, seq)."""
    mutator, audio_mutator = Mutator(rng.randrange(2**32)), OpusMutator(rng.randrange(2**32))
    stream = rng.choice(streams())
    packets = opus_packets(2.0)[1]
    plan: list[tuple[str, bytes, int, bool, int]] = []
    audio_seq = 0
    for i in range(frames):
        unit = stream[i % len(stream)]
        roll = rng.random()
        if roll < 0.25:
            unit = mutator.unit(unit)
        elif roll < 0.3:
            unit = rng.choice(rng.choice(streams()))
        key = is_key(unit)
        if rng.random() < 0.05:
            key = not key
        stamp = EPOCH_US + i * FRAME_US + rng.randint(-2000, 2000)
        if rng.random() < 0.04:
            stamp = rng.choice([stamp - 5_000_000, stamp + 3_600_000_000, EPOCH_US])
        if rng.random() > 0.04:  # else skipped: a gap in seq
            plan.append(("video", unit, stamp, key, i))
        if rng.random() < 0.03:
            plan.append(("video", unit, stamp, key, i))  # sent again
        for _ in range(rng.choice([3, 3, 4, 0, 8])):
            packet = packets[audio_seq % len(packets)]
            if rng.random() < 0.2:
                packet = audio_mutator.packet(packet)
            stamp = EPOCH_US + audio_seq * 20000
            if rng.random() < 0.03:
                stamp += rng.choice([-3_000_000, 5_000_000])
            plan.append(("audio", packet, stamp, False, audio_seq))
            audio_seq += 1
    return plan


class Recordings(SynchronousTestCase):
    """Mutated streams through real sessions: the fragmented MP4s are whole after every chunk,
    hold exactly the frames and packets accepted, and ffmpeg stream-copies them."""

    def play(self, seed: int, frames: int = 30) -> FuzzedSession:
        rng = random.Random(seed)
        head = rng.choice([None, OpusHead(), OpusHead(channels=2, pre_skip=0)])
        fuzzed = FuzzedSession(
            self, f"seed {seed}", timing=rng.choice(["capture", "frames"]), head=head
        )
        for kind, chunk, stamp, key, seq in session_plan(rng, frames):
            fuzzed.reactor.advance(0.005)
            if kind == "video":
                fuzzed.send(MediaKind.VIDEO, chunk, stamp, key, seq)
            else:
                fuzzed.audio(chunk, stamp, seq)
        fuzzed.finish()
        self.assert_recorded(fuzzed)
        return fuzzed

    def assert_recorded(self, fuzzed: FuzzedSession) -> None:
        video = fuzzed.path(VIDEO_STREAM)
        if fuzzed.session.frames:
            samples = fmp4_samples(self, video)
            self.assertEqual(len(samples), fuzzed.session.frames)
            self.assertTrue(samples[0][3], "the recording starts on a keyframe")
            for _, _, sample, sync in samples:
                nals = avcc_nals(self, sample)
                self.assertEqual(sync, any(n[0] & 0x1F == h264.IDR for n in nals))
                h264.check_access_unit(join_nals(nals))
        else:
            self.assertFalse(video.exists())
        audio = fuzzed.path(OPUS_STREAM)
        if fuzzed.packets:
            samples = fmp4_samples(self, audio)
            self.assertEqual(len(samples), fuzzed.packets)
            for _, duration, packet, _ in samples:
                self.assertEqual(duration, opus.packet_samples(packet))
        else:
            self.assertFalse(audio.exists())

    def test_parameter_sets_an_mp4_cannot_hold(self) -> None:
        """A keyframe with more SPS or PPS than an avcC counts (31 and 255), or one of them
        longer than its 16-bit length says, is refused (it once broke the MP4 or the session);
        the recording starts on the next keyframe. At the limits, it is recorded and copied."""
        nals = split_nals(streams()[0][0])
        sps, pps = (n for n in nals if n[0] & 0x1F in (h264.SPS, h264.PPS))
        picture = [n for n in nals if n[0] & 0x1F not in (h264.SPS, h264.PPS)]
        for label, sets in [
            ("32 SPS", [sps] * 32 + [pps]),
            ("256 PPS", [sps] + [pps] * 256),
            ("an SPS of 64 KiB", [sps + b"\xff" * 65530, pps]),
            ("a PPS of 64 KiB", [sps, pps + b"\xff" * 65535]),
        ]:
            fuzzed = FuzzedSession(self, label)
            self.assertFalse(fuzzed.video(join_nals([*sets, *picture]), key=True), label)
            self.assertEqual(fuzzed.refused, {"invalid_h264": 1}, label)
            for unit in streams()[0]:
                fuzzed.video(unit, key=is_key(unit))
            fuzzed.finish()
            self.assertEqual(fuzzed.session.frames, len(streams()[0]), label)
            self.assert_recorded(fuzzed)
        fuzzed = FuzzedSession(self, "at the limits")
        self.assertTrue(fuzzed.video(join_nals([*[sps] * 31, *[pps] * 255, *picture]), True))
        fuzzed.finish()
        copy = run_ffmpeg(["-i", fuzzed.path(VIDEO_STREAM), "-c", "copy", "-f", "null", "-"])
        self.assertEqual(copy.returncode, 0, copy.stderr)

    def test_sound_claiming_to_start_much_later(self) -> None:
        """A first Opus packet stamped far after the first frame (another epoch, or a hostile
        timestamp up to 2^53 µs) starts where it arrived, not after minutes or centuries of
        silence: the video's last frame once lasted that long, past what the 32 bits of a
        sample's duration hold, and finishing the recording failed."""
        units, packets = streams()[0], opus_packets(2.0)[1]
        for jump in (5 * 10**6, 20 * 10**6, 10**9, 2**53 - EPOCH_US):
            fuzzed = FuzzedSession(self, f"sound {jump} µs later")
            fuzzed.video(units[0], True, EPOCH_US)
            fuzzed.reactor.advance(0.05)
            for i in range(3):
                fuzzed.audio(packets[i], EPOCH_US + jump + i * 20000, i)
            fuzzed.video(units[1], False, EPOCH_US + FRAME_US)
            fuzzed.finish()
            self.assert_recorded(fuzzed)
            video = fmp4_samples(self, fuzzed.path(VIDEO_STREAM))
            audio = fmp4_samples(self, fuzzed.path(OPUS_STREAM))
            start = audio[0][0] / opus.RATE
            # Within 10 s of the server's clock the timestamp holds; past that, the arrival.
            self.assertLess(abs(start - (5.0 if jump == 5 * 10**6 else 0.05)), 0.01, jump)
            end = (video[-1][0] + video[-1][1]) / 90000
            self.assertLess(abs(end - (start + 0.06)), 0.07, jump)

    def test_sound_longer_than_a_sample_lasts(self) -> None:
        """Sound sent faster than real time (a 2-byte Opus packet lasts 120 ms) may run past
        13.25 hours, the longest a sample lasts at 90 kHz in 32 bits: the video's last frame
        lasts that long, and the file is finished (it once failed with struct.error)."""
        tree = MediaTree(self.mktemp())
        tree.ensure()
        video = PassthroughVideo(tree, "long", 15)
        for i, unit in enumerate(streams()[0][:2]):
            au = h264.check_access_unit(unit)
            video.admit(au)
            video.write(au, i / 15)
        video.end(14 * 3600.0)
        samples = fmp4_samples(self, tree.temp_path("long", VIDEO_STREAM))
        self.assertEqual([d for _, d, _, _ in samples], [6000, 2**32 - 1])

    def test_mutated_sessions(self) -> None:
        """200 sessions of 30 frames and their sound, each fed a different mutated stream."""
        frames = 0
        for seed in range(200):
            frames += self.play(SEED * 1000 + seed).session.frames
        self.assertGreater(frames, 2000)

    def test_ffmpeg_copies_them(self) -> None:
        """24 of those sessions, copied by ffmpeg (a child) as the publish does, with the Opus
        as the MP4's sound: every frame and packet comes out; and decoded to the WAV."""
        failures = []
        for seed in range(24):
            fuzzed = self.play(SEED * 1000 + seed)
            if not fuzzed.session.frames:
                continue
            video, audio = fuzzed.path(VIDEO_STREAM), fuzzed.path(OPUS_STREAM)
            out = video.with_suffix(".copy.mp4")
            inputs, maps = ["-i", os.fspath(video)], ["-map", "0:v"]
            if fuzzed.packets:
                inputs = ["-copyts", *inputs, "-i", os.fspath(audio)]
                maps += ["-map", "1:a"]
            copy = run_ffmpeg(
                [*inputs, *maps, "-c", "copy", "-movflags", "+faststart", "-f", "mp4", out]
            )
            if copy.returncode != 0:
                failures.append((fuzzed.label, copy.returncode, copy.stderr[-300:]))
                continue
            with av.open(os.fspath(out)) as container:
                kinds = [p.stream.type for p in container.demux() if p.size]
            self.assertEqual(kinds.count("video"), fuzzed.session.frames, fuzzed.label)
            self.assertEqual(kinds.count("audio"), fuzzed.packets, fuzzed.label)
            if fuzzed.packets:
                wav = video.with_suffix(".wav")
                decode = run_ffmpeg(["-i", audio, "-map", "0:a", "-ar", "44100", "-ac", "1",
                                     "-c:a", "pcm_s16le", "-f", "wav", wav])  # fmt: skip
                if decode.returncode != 0:
                    failures.append((fuzzed.label, decode.returncode, decode.stderr[-300:]))
        self.assertEqual(failures, [])


def run_ffmpeg(args: Sequence[str | os.PathLike[str]]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(os.fspath, args)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


# -- parse_sps against real decoders and encoders ----------------------------------------------

# Macroblocks of a test picture at most: each is 385 bytes of I_PCM, decoded in this process.
PICTURE_BUDGET = 1200


def decoded_size(unit: bytes) -> tuple[tuple[int, int], int]:
    """What libavcodec's H.264 decoder says of one access unit: the picture size (cropped, as
    ffprobe reports it) and how many frames it decoded."""
    ctx = av.CodecContext.create("h264", "r")
    ctx.thread_count = 1
    frames = [*ctx.decode(av.Packet(unit)), *ctx.decode(None)]
    return (ctx.width, ctx.height), len(frames)


@st.composite
def valid_sps(draw: st.DrawFn) -> Sps:
    """An SPS of profile 66, 77 or 100 with every field within 7.4.2.1.1's bounds and a picture
    of at most :data:`PICTURE_BUDGET` macroblocks, its cropping inside it."""
    profile = draw(st.sampled_from([66, 77, 100]))
    delta = st.integers(-128, 127)
    lists = st.none() | st.lists(delta | st.integers(-2, 2), max_size=64).map(tuple)
    scaling = draw(st.none() | st.tuples(*[lists] * 8)) if profile == 100 else None
    poc_type = draw(st.integers(0, 2))
    big = st.integers(-(2**31) + 1, 2**31 - 1)
    frame_mbs_only = draw(st.booleans())
    field = 1 if frame_mbs_only else 2
    width_mbs = draw(st.integers(1, 512))
    most = min(512 // field, PICTURE_BUDGET // (width_mbs * field))
    height_units = draw(st.integers(1, max(1, most)))
    crop = None
    if draw(st.booleans()):
        # Cropped to 2 pixels a side at least: a crop unit is 2 pixels across, 2 * field down.
        left = draw(st.integers(0, 8 * width_mbs - 1))
        right = draw(st.integers(0, 8 * width_mbs - 1 - left))
        top = draw(st.integers(0, 8 * height_units - 1))
        bottom = draw(st.integers(0, 8 * height_units - 1 - top))
        crop = (left, right, top, bottom)
    return Sps(
        profile=profile,
        constraints=draw(st.integers(0, 255)) & 0xFC,
        level=draw(st.sampled_from([10, 11, 13, 20, 21, 30, 31, 32, 40, 41, 42, 50, 51, 52])),
        sps_id=draw(st.integers(0, 31)),
        bypass=draw(st.booleans()),
        scaling=scaling,
        frame_num_minus4=draw(st.integers(0, 12)),
        poc_type=poc_type,
        poc_lsb_minus4=draw(st.integers(0, 12)),
        poc_always_zero=draw(st.booleans()),
        offset_non_ref=draw(big),
        offset_top_bottom=draw(big),
        ref_offsets=tuple(
            draw(st.lists(big, max_size=4) | st.lists(big, min_size=250, max_size=255))
        )
        if poc_type == 1
        else (),
        ref_frames=draw(st.integers(0, 16)),
        gaps=draw(st.booleans()),
        width_mbs=width_mbs,
        height_units=height_units,
        frame_mbs_only=frame_mbs_only,
        mbaff=draw(st.booleans()),
        direct_8x8=True if not frame_mbs_only else draw(st.booleans()),
        crop=crop,
    )


class SpsAgainstDecoders(SynchronousTestCase):
    """``parse_sps`` says the size libavcodec decodes, for SPS written bit by bit and for what
    libx264 writes."""

    def assert_same_size(self, sps: Sps) -> None:
        params = h264.parse_sps(sps.nal())
        size = (params.width, params.height)
        self.assertEqual(size, sps.expected())
        self.assertEqual(decoded_size(pcm_idr(sps)), (size, 1), sps)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(valid_sps())
    def test_random_sps(self, sps: Sps) -> None:
        """300 SPS across profiles, cropping, frames and fields (MBAFF or not), scaling
        matrices and the three kinds of picture order count; each decoded as a picture of
        I_PCM macroblocks (the decoder reads the slice header by the SPS's fields, so a misread
        field is a picture not decoded)."""
        self.assert_same_size(sps)

    def test_sides_at_the_limits(self) -> None:
        """From the least picture 4:2:0 allows (2x2) to 8192 a side; one macroblock past the
        limit is refused, though a decoder would take it."""
        for sps in [
            Sps(width_mbs=1, height_units=1, crop=(0, 7, 0, 7)),
            Sps(width_mbs=1, height_units=1, frame_mbs_only=False, crop=(0, 7, 0, 7)),
            Sps(width_mbs=512, height_units=1),
            Sps(width_mbs=1, height_units=512),
            Sps(width_mbs=512, height_units=2, crop=(0, 0, 0, 15)),
            Sps(width_mbs=1, height_units=256, frame_mbs_only=False, mbaff=True),
            Sps(profile=100, width_mbs=40, height_units=23, crop=(0, 0, 0, 4)),
            Sps(profile=100, width_mbs=40, height_units=12, frame_mbs_only=False,
                crop=(1, 0, 1, 1)),
        ]:  # fmt: skip
            self.assert_same_size(sps)
        for sps in [Sps(width_mbs=513, height_units=1), Sps(width_mbs=1, height_units=513)]:
            self.assertRaises(InvalidH264, h264.parse_sps, sps.nal())
            self.assertEqual(decoded_size(pcm_idr(sps))[1], 1)
        # Cropped to nothing: refused here, and by libavcodec (which once ignored such a crop).
        for crop in [(8, 0, 0, 0), (4, 4, 0, 0), (0, 0, 0, 8), (0, 0, 5, 3)]:
            sps = Sps(width_mbs=1, height_units=1, crop=crop)
            self.assertRaises(InvalidH264, h264.parse_sps, sps.nal())
            self.assertRaises(av.InvalidDataError, decoded_size, pcm_idr(sps))

    def test_libx264_sizes(self) -> None:
        """What libx264 writes at sizes odd in macroblocks, tiny, 8192 a side, HD (cropped)
        and interlaced (field macroblock pairs), in each profile."""
        cases = [
            ("2x2", "baseline", []),
            ("638x362", "baseline", []),
            ("638x364", "main", ["-flags", "+ildct+ilme"]),
            ("720x576", "high", ["-flags", "+ildct+ilme"]),
            ("1920x1080", "high", []),
            ("1280x720", "main", []),
            ("8192x16", "high", []),
            ("16x8192", "baseline", []),
            ("8192x8192", "baseline", []),
            ("350x1084", "high", ["-flags", "+ildct+ilme"]),
        ]
        for size, profile, flags in cases:
            unit = x264_keyframe(size, profile, tuple(flags))
            (sps,) = (n for n in split_nals(unit) if n[0] & 0x1F == h264.SPS)
            params = h264.parse_sps(sps)
            width, height = (int(side) for side in size.split("x"))
            self.assertEqual((params.width, params.height), (width, height), size)
            # libx264 writes the least profile its output needs (ultrafast: no High tools).
            self.assertLessEqual(params.profile, {"baseline": 66, "main": 77, "high": 100}[profile])
            self.assertEqual(decoded_picture(unit), ((width, height), bool(flags)), size)
        # Past the limit: refused, though libx264 encodes it.
        unit = x264_keyframe("8194x16", "baseline", ())
        (sps,) = (n for n in split_nals(unit) if n[0] & 0x1F == h264.SPS)
        self.assertRaises(InvalidH264, h264.parse_sps, sps)


def decoded_picture(unit: bytes) -> tuple[tuple[int, int], bool]:
    """The size libavcodec decodes one access unit of libx264 to, and whether as interlaced."""
    ctx = av.CodecContext.create("h264", "r")
    frames = [*ctx.decode(av.Packet(unit)), *ctx.decode(None)]
    return (ctx.width, ctx.height), frames[0].interlaced_frame


@cache
def x264_keyframe(size: str, profile: str, flags: tuple[str, ...]) -> bytes:
    """The first access unit (SPS, PPS, IDR) libx264 makes of a flat picture of ``size``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "k.h264")
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
             "-i", f"color=gray:size={size}:rate=25", "-frames:v", "1", *flags,
             "-c:v", "libx264", "-profile:v", profile, "-pix_fmt", "yuv420p",
             "-preset", "ultrafast", "-f", "h264", out],
            check=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return Path(out).read_bytes()
