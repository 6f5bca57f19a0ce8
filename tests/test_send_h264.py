"""``livestream-send --codec h264`` and ``--audio-codec opus``: the H.264 splitter and the Ogg
reader on real ffmpeg output and on hand-made pages, cut anywhere; the source's reader; and the
command against the daemon, its recordings decoded with PyAV."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import struct
import subprocess
import sys
import time
from fractions import Fraction
from functools import cache
from pathlib import Path

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor
from twisted.internet.error import ProcessDone
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from livestream.cli.send.client import SendFactory, SendProtocol, target
from livestream.cli.send.outbox import Outbox
from livestream.cli.send.source import MediaReader, Source
from livestream.cli.send.split import H264Splitter, InvalidOgg, OggReader, OpusStream
from livestream.wire.h264 import AUD, InvalidH264, check_access_unit, nal_units
from livestream.wire.kinds import AUDIO, VIDEO, Codec
from livestream.wire.messages import ENCODED_HEADER, check_codec, parse_binary, parse_text
from livestream.wire.opus import InvalidOpus, parse_opus_head
from tests.support.daemon import ROOT
from tests.support.http import get_json
from tests.support.media import ffmpeg_exe, video_facts, wav_facts
from tests.support.processes import Collect
from tests.support.server import start_server
from tests.support.waiting import cut_connection

FPS = 10
SECONDS = 2


def _encode(source: Source, output: str, *extra: str) -> bytes:
    """What the sender's ffmpeg writes on ``output`` (pipe:1 or pipe:3) for ``source``, alone,
    on stdout."""
    args = source.args()
    assert args[-1] == output
    return subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *args[:-1], *extra, "pipe:1"],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
    ).stdout  # fmt: skip


@cache
def h264(aud: bool = True) -> bytes:
    """The test pattern for 2 s at 10 fps as the sender encodes it; without access unit
    delimiters when ``aud`` is false (what x264 writes on its own)."""
    source = Source(None, FPS, (320, 240), SECONDS, audio=False, video_codec=Codec.H264)
    if aud:
        return _encode(source, "pipe:1")
    args = source.args()
    bsf = args.index("-bsf:v")
    del args[bsf : bsf + 2]
    return subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *args],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
    ).stdout  # fmt: skip


@cache
def ogg_opus() -> bytes:
    """The tone for 2 s as the sender encodes it: Ogg Opus, a page a packet."""
    source = Source(None, FPS, (320, 240), SECONDS, video=False, audio_codec=Codec.OPUS)
    return _encode(source, "pipe:3")


def feed_in_pieces(cutter, stream: bytes, sizes: list[int]) -> list:
    out, pos, i = [], 0, 0
    while pos < len(stream):
        step = sizes[i % len(sizes)]
        out += cutter.feed(stream[pos : pos + step])
        pos, i = pos + step, i + 1
    return out


def start_codes(stream: bytes) -> list[int]:
    found, pos = [], stream.find(b"\x00\x00\x01")
    while pos >= 0:
        found.append(pos)
        pos = stream.find(b"\x00\x00\x01", pos + 1)
    return found


class H264SplitterTests(SynchronousTestCase):
    def split(self, stream: bytes, sizes: list[int]) -> list[bytes]:
        splitter = H264Splitter()
        units = feed_in_pieces(splitter, stream, sizes)
        last = splitter.flush()
        return units + ([last] if last else [])

    def test_one_access_unit_a_frame(self) -> None:
        """ffmpeg's stream comes out as one access unit a frame, each starting with its AUD and
        passing the server's check; a keyframe every second (every FPS frames), the first
        frame one; nothing lost or added between them."""
        stream = h264()
        units = self.split(stream, [len(stream)])
        self.assertEqual(len(units), FPS * SECONDS)
        self.assertEqual(b"".join(units), stream)
        keys = [i for i, unit in enumerate(units) if check_access_unit(unit).key]
        self.assertEqual(keys, list(range(0, FPS * SECONDS, FPS)))
        self.assertTrue(all(nal_units(unit)[0][0] & 0x1F == AUD for unit in units))
        # Constrained baseline: profile 66 with constraint_set1, as the README promises.
        sps = check_access_unit(units[0]).sps[0]
        self.assertEqual((sps[1], sps[2] & 0x40), (66, 0x40))

    def test_pieces_of_any_size(self) -> None:
        """Read a byte at a time, a few bytes, or in large reads, the units are the same."""
        stream = h264()
        whole = self.split(stream, [len(stream)])
        for seed in range(4):
            rng = random.Random(seed)
            sizes = [rng.choice((1, 2, 3, 4, 5, 7, 100, 4096)) for _ in range(500)]
            self.assertEqual(self.split(stream, sizes), whole)

    def test_cut_inside_every_start_code(self) -> None:
        """A read that ends on any byte of a start code, of the NAL header after it or of
        the first slice byte, leaves the units as they are."""
        stream = h264()
        whole = self.split(stream, [len(stream)])
        points = {p + d for p in start_codes(stream) for d in range(-1, 6)}
        for cut in sorted(points):
            if 0 < cut < len(stream):
                splitter = H264Splitter()
                units = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:])
                self.assertEqual(units + [splitter.flush()], whole, cut)

    def test_without_delimiters(self) -> None:
        """A stream without AUDs is cut where H.264 says a new picture starts (an SPS or SEI
        after a slice, a slice for the first macroblock): the same frames."""
        stream = h264(aud=False)
        self.assertNotIn(AUD, {nal[0] & 0x1F for nal in nal_units(stream)})
        units = self.split(stream, [3, 1, 2, 1000])
        self.assertEqual(len(units), FPS * SECONDS)
        self.assertEqual(b"".join(units), stream)
        for unit in units:
            check_access_unit(unit)

    def test_garbage(self) -> None:
        """Bytes before the first start code are refused at once, not glued to a unit; so is
        a stream that never starts, and a unit that does not end within the bound."""
        with self.assertRaises(InvalidH264):
            H264Splitter().feed(b"garbage" + h264())
        with self.assertRaises(InvalidH264):
            H264Splitter().feed(b"\x00\x00\x00garbage")
        splitter = H264Splitter()
        splitter.feed(b"\x00\x00")
        splitter.feed(b"x")  # not a start code after all
        with self.assertRaises(InvalidH264):
            splitter.feed(b"yz")
        splitter = H264Splitter()
        self.assertEqual(splitter.feed(b"\x00\x00\x00"), [])
        with self.assertRaises(InvalidH264):
            H264Splitter().feed(b"\x01\x02\x03\x04")
        splitter = H264Splitter()
        splitter.feed(b"\x00\x00\x02")  # too short to tell, until it ends
        with self.assertRaises(InvalidH264):
            splitter.flush()
        with self.assertRaises(InvalidH264):
            H264Splitter(max_unit=1000).feed(h264()[:5000])
        # Zero padding alone is nothing, not a unit.
        splitter = H264Splitter()
        splitter.feed(b"\x00\x00")
        self.assertEqual(splitter.flush(), b"")

    def test_an_empty_unit_is_refused_by_the_check(self) -> None:
        """Two AUDs in a row make a unit without a picture: cut as such, and refused by the
        check the sender runs on every unit (as the server would)."""
        first = self.split(h264(), [len(h264())])[0]
        units = self.split(b"\x00\x00\x00\x01\x09\xf0" + first, [7])
        self.assertEqual(len(units), 2)
        with self.assertRaises(InvalidH264):
            check_access_unit(units[0])
        check_access_unit(units[1])


def page(packets_laced: bytes, body: bytes, sequence: int, flags: int = 0,
         serial: int = 7, granule: int = 0) -> bytes:  # fmt: skip
    """An Ogg page (CRC left 0: the reader does not check it)."""
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, sequence, 0,
                         len(packets_laced))  # fmt: skip
    return header + packets_laced + body


def lacing(size: int, ends: bool = True) -> bytes:
    """The lacing values of a packet of ``size`` bytes (``ends``: it ends on this page)."""
    values = [255] * (size // 255)
    if ends:
        values.append(size % 255)
    return bytes(values)


class OggReaderTests(SynchronousTestCase):
    def test_ffmpeg_opus_in_pieces(self) -> None:
        """ffmpeg's Ogg Opus, read in pieces of any size (cutting page headers and segment
        tables anywhere): the OpusHead first, OpusTags skipped, then 20 ms packets that cover
        the 2 s (plus the encoder's pre-skip, rounded up to a packet)."""
        stream = ogg_opus()
        whole = OpusStream()
        packets = whole.feed(stream)
        whole.flush()
        head = parse_opus_head(whole.head)
        self.assertEqual((head.channels, head.input_rate), (1, 48000))
        self.assertEqual({samples for _, samples in packets}, {960})
        total = sum(samples for _, samples in packets)
        self.assertGreaterEqual(total - head.pre_skip, SECONDS * 48000)
        self.assertLess(total - head.pre_skip, SECONDS * 48000 + 960)
        for seed in range(3):
            rng = random.Random(seed)
            sizes = [rng.choice((1, 2, 3, 26, 27, 28, 100, 3000)) for _ in range(300)]
            reader = OpusStream()
            self.assertEqual(feed_in_pieces(reader, stream, sizes), packets)
            reader.flush()
            self.assertEqual(reader.head, whole.head)

    def test_every_cut_of_a_page_header(self) -> None:
        """Two reads cut at every byte of the first pages give the same packets as one."""
        stream = ogg_opus()[:400]
        expected = OggReader().feed(stream)
        for cut in range(1, len(stream)):
            reader = OggReader()
            self.assertEqual(reader.feed(stream[:cut]) + reader.feed(stream[cut:]), expected)

    def test_packets_spanning_pages(self) -> None:
        """A packet whose last lacing value on a page is 255 goes on on the next page (marked
        continued); one of exactly 510 bytes ends with a 0 lacing value; several packets
        share a page."""
        big, even, small = bytes(range(256)) * 3, b"e" * 510, b"s"
        pages = (
            page(lacing(700, ends=False), big[:510], 0, flags=0x02)
            + page(
                lacing(258) + lacing(510) + lacing(1), big[510:] + even + small, 1, flags=0x01
            )  # fmt: skip
            + page(lacing(0), b"", 2, flags=0x04)
        )
        reader = OggReader()
        self.assertEqual(feed_in_pieces(reader, pages, [5]), [big, even, small, b""])
        reader.flush()

    def test_truncated_page(self) -> None:
        """A stream that ends inside a page, or inside a packet that was to continue, is
        refused at the end rather than losing its last packet silently."""
        stream = ogg_opus()
        reader = OggReader()
        reader.feed(stream[:-5])
        with self.assertRaises(InvalidOgg):
            reader.flush()
        reader = OggReader()
        reader.feed(page(lacing(300, ends=False), b"x" * 255, 0, flags=0x02))
        with self.assertRaises(InvalidOgg):
            reader.flush()

    def test_garbage_and_broken_streams(self) -> None:
        """No capture pattern, another version, a first page that does not begin a stream, a
        page missing, a second stream, a page after the last, a continuation that was not
        announced (or one that is missing), a packet over the bound: each is refused."""
        first = page(lacing(3), b"abc", 0, flags=0x02)
        cases = {
            "no capture pattern": b"garbage" + b"\x00" * 40,
            "version": first[:4] + b"\x01" + first[5:],
            "no BOS": page(lacing(3), b"abc", 0),
            "page lost": first + page(lacing(1), b"a", 2),
            "second stream": first + page(lacing(1), b"a", 1, flags=0x02, serial=8),
            "other serial": first + page(lacing(1), b"a", 1, serial=8),
            "after EOS": page(lacing(1), b"a", 0, flags=0x06) + page(lacing(1), b"a", 1),
            "continued from nothing": first + page(lacing(1), b"a", 1, flags=0x01),
            "continuation missing": page(lacing(300, ends=False), b"x" * 255, 0, flags=0x02)
            + page(lacing(1), b"a", 1),
        }
        for name, stream in cases.items():
            with self.assertRaises(InvalidOgg, msg=name):
                OggReader().feed(stream)
        with self.assertRaises(InvalidOgg):
            OggReader(max_packet=1000).feed(
                page(lacing(1020, ends=False), b"x" * 1020, 0, flags=0x02)
            )

    def test_opus_layout(self) -> None:
        """The first packet must be an OpusHead and the second OpusTags; an audio packet that
        RFC 6716 calls malformed is refused."""
        head = ogg_opus()
        reader = OpusStream()
        with self.assertRaises(InvalidOpus):
            reader.feed(page(lacing(3), b"abc", 0, flags=0x02))
        first_two = OggReader().feed(head)[:2]
        pages = page(lacing(19), first_two[0], 0, flags=0x02) + page(lacing(5), b"Other", 1)
        with self.assertRaises(InvalidOpus):
            OpusStream().feed(pages)
        pages = (
            page(lacing(19), first_two[0], 0, flags=0x02)
            + page(lacing(len(first_two[1])), first_two[1], 1)
            + page(lacing(2), b"\x01\x00", 2)  # code 1 (two equal frames) with an odd length
        )
        with self.assertRaises(InvalidOpus):
            OpusStream().feed(pages)


class FakeTransport:
    def __init__(self) -> None:
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class MediaReaderTests(SynchronousTestCase):
    def reader(self) -> tuple[MediaReader, list, list]:
        frames: list[tuple[bytes, bool]] = []
        audio: list[tuple[bytes, Fraction]] = []
        reader = MediaReader(lambda data, key: frames.append((data, key)),
                             lambda data, d: audio.append((data, d)), 4410,
                             Codec.H264, Codec.OPUS)  # fmt: skip
        reader.transport = FakeTransport()
        return reader, frames, audio

    def test_units_and_packets(self) -> None:
        """Each access unit is handed on with its key flag, the last one when ffmpeg ends;
        each Opus packet with its duration; the OpusHead as soon as it is read."""
        reader, frames, audio = self.reader()
        heads: list[bytes] = []
        reader.opus_head.addCallback(heads.append)
        opus = ogg_opus()
        reader.childDataReceived(3, opus[:200])
        self.assertEqual(len(heads), 1)
        reader.childDataReceived(3, opus[200:])
        stream = h264()
        for pos in range(0, len(stream), 1000):
            reader.outReceived(stream[pos : pos + 1000])
        self.assertEqual(len(frames), FPS * SECONDS - 1)
        reader.processEnded(Failure(ProcessDone(0)))
        self.assertEqual(len(frames), FPS * SECONDS)
        self.assertEqual([i for i, (_, key) in enumerate(frames) if key], [0, 10])
        self.assertEqual({d for _, d in audio}, {Fraction(1, 50)})
        self.assertIsNone(reader.broken)

    def test_broken_output_stops_ffmpeg(self) -> None:
        """A unit the server would refuse, or audio that is not Ogg Opus, is not sent: the
        reader says why and stops ffmpeg; the OpusHead waited for fails."""
        reader, frames, audio = self.reader()
        failures: list[Failure] = []
        reader.opus_head.addErrback(failures.append)
        reader.childDataReceived(3, b"not an ogg stream at all, nothing like it")
        self.assertEqual(reader.transport.signals, ["TERM"])
        self.assertIn("ffmpeg's audio output", reader.broken)
        self.assertEqual(len(failures), 1)
        reader, frames, audio = self.reader()
        reader.opus_head.addErrback(lambda _: None)
        reader.outReceived(b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x09\xf0")
        self.assertIn("ffmpeg's video output", reader.broken)
        self.assertEqual(frames, [])


class Paused:
    paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False


class OutboxTimesTests(SynchronousTestCase):
    def test_exact_times_and_keys(self) -> None:
        """Frame n is at exactly n/fps from the start, whatever the rate (15 fps is not a whole
        number of µs a frame), and keeps its key flag; an Opus packet is at the sum of the
        durations before it."""
        clock = Clock()
        clock.advance(1000.25)
        sent: list[tuple] = []
        outbox = Outbox(clock, lambda *item: not sent.append(item), 15, realtime=False)
        for n in range(31):
            outbox.frame(b"f", key=n % 15 == 0)
        for _ in range(3):
            outbox.audio(b"p", Fraction(960, 48000))
        outbox.audio(b"q", Fraction(2880, 48000))
        video = [(seq, at, key) for kind, seq, at, key, _ in sent if kind == VIDEO]
        self.assertEqual([at - Fraction(4001, 4) for _, at, _ in video],
                         [Fraction(n, 15) for n in range(31)])  # fmt: skip
        self.assertEqual([seq for seq, _, key in video if key], [0, 15, 30])
        self.assertEqual(int(video[1][1] * 1_000_000), 1000_250_000 + 66666)
        audio = [at - Fraction(4001, 4) for kind, _, at, _, _ in sent if kind == AUDIO]
        self.assertEqual(audio, [0, Fraction(1, 50), Fraction(2, 50), Fraction(3, 50)])
        self.assertEqual(outbox.audio_seconds, Fraction(12, 100))

    def test_held_until_begin(self) -> None:
        """Held (before CONNECTED), nothing is sent and the source is paused over the high
        mark as ever; begin starts real time at that moment."""
        clock = Clock()
        sent: list[tuple] = []
        outbox = Outbox(clock, lambda *item: not sent.append((clock.seconds(), *item)), 10,
                        realtime=True, held=True, high=250, low=100)  # fmt: skip
        source = Paused()
        outbox.attach(source)
        for _ in range(3):
            outbox.frame(b"x" * 100)
        clock.advance(5)
        self.assertEqual(sent, [])
        self.assertTrue(source.paused)
        outbox.begin(keep=False)
        self.assertEqual([at for at, *_ in sent], [5])
        clock.pump([0.1, 0.1, 0.001])
        self.assertEqual([round(at, 2) for at, *_ in sent], [5, 5.1, 5.2])
        self.assertEqual([at for _, _, _, at, _, _ in sent],
                         [Fraction(5), Fraction(51, 10), Fraction(52, 10)])  # fmt: skip
        self.assertFalse(source.paused)


class WireFormTests(SynchronousTestCase):
    def protocol(self, binary: bool, encoded) -> tuple[SendProtocol, list]:
        factory = SendFactory(target("ws://127.0.0.1:1/"), {}, binary, print, print, print,
                              encoded=encoded)  # fmt: skip
        proto = SendProtocol()
        proto.factory = factory
        proto.state = proto.STATE_OPEN
        messages: list = []
        proto.sendMessage = lambda payload, isBinary: messages.append((payload, isBinary))
        return proto, messages

    def test_encoded_binary(self) -> None:
        """0x21/0x22 with the key flag, seq and the timestamp in whole µs: what the server's
        own parser reads back."""
        proto, messages = self.protocol(True, {VIDEO, AUDIO})
        at = Fraction(1_733_000_000_066_666, 1_000_000) + Fraction(2, 3_000_000)
        proto.send_media(VIDEO, 7, at, True, b"\x00\x00\x01\x09\xf0")
        proto.send_media(AUDIO, 8, Fraction(3, 50), True, b"\xf8")
        (video, binary), (audio, _) = messages
        self.assertTrue(binary)
        self.assertEqual(ENCODED_HEADER.unpack_from(video), (0x21, 1, 7, 1_733_000_000_066_666))
        parsed = parse_binary(video)
        self.assertEqual((parsed.kind, parsed.seq, parsed.key, parsed.chunk),
                         (VIDEO, 7, True, b"\x00\x00\x01\x09\xf0"))  # fmt: skip
        # Audio has no key: flags stay 0 whatever the caller says.
        self.assertEqual(ENCODED_HEADER.unpack_from(audio), (0x22, 0, 8, 60000))

    def test_encoded_json(self) -> None:
        proto, messages = self.protocol(False, {VIDEO, AUDIO})
        proto.send_media(VIDEO, 1, Fraction(1, 15), False, b"au")
        proto.send_media(AUDIO, 2, Fraction(1, 50), False, b"op")
        video, audio = (json.loads(payload) for payload, _ in messages)
        self.assertEqual({k: video[k] for k in ("timestamp", "key", "seq")},
                         {"timestamp": 66666, "key": False, "seq": 1})  # fmt: skip
        self.assertNotIn("captureTime", video)
        self.assertEqual((audio["timestamp"], "key" in audio), (20000, False))
        # As the server reads it in an H.264 session.
        parsed = check_codec(parse_text(messages[0][0].decode()), Codec.H264)
        self.assertEqual((parsed.timestamp, parsed.key), (66666, False))

    def test_seed_kinds_unchanged(self) -> None:
        """A kind not encoded keeps captureTime in ms (JSON and the 0x11/0x12 form)."""
        proto, messages = self.protocol(False, {AUDIO})
        proto.send_media(VIDEO, 3, Fraction(1, 10), False, b"jpeg")
        doc = json.loads(messages[0][0])
        self.assertEqual((doc["captureTime"], "timestamp" in doc), (100.0, False))
        proto, messages = self.protocol(True, ())
        proto.send_media(AUDIO, 4, Fraction(1, 4), False, b"pcm!")
        self.assertEqual(parse_binary(messages[0][0]).capture_time, 250.0)


def tone(seconds: float) -> bytes:
    """The PCM the test pattern's ffmpeg makes for ``seconds`` (its audio output alone)."""
    return _encode(Source(None, FPS, (320, 240), seconds, video=False), "pipe:3")


# Opus is not sample-exact at the ends: the encoder pads its last 20 ms packet, the server gets
# no end trimming over the protocol (Ogg's last granule position does not travel), so up to one
# packet more than the input comes out (2 s: 101 packets, 96960 samples, 648 of them padding);
# the pre-skip (312 samples) is dropped at the start; and 48 kHz -> 44.1 kHz resampling has a
# filter's worth of edge. Measured: +596 samples at 2, 3.5 and 6 s (the 648 padding samples at
# 44.1 kHz). Allowed: the input's samples less 1 ms, to one packet (20 ms) more plus 1 ms.
OPUS_BELOW = 44
OPUS_ABOVE = 882 + 44


class EncodedSendTests(TestCase):
    """The command against the daemon's service tree: what it recorded, decoded with PyAV."""

    timeout = 90

    async def serve(self, **options) -> int:
        self.media = Path(self.mktemp()).absolute() / "media"
        self.service, self.port = await start_server(self, self.media, fps=FPS, **options)
        self.registry = self.service.getServiceNamed("sessions")
        return self.port

    async def send(self, *argv: str) -> tuple[int, str, str, float]:
        """Run the command on the test pattern; (exit status, stdout, stderr, seconds)."""
        started = time.monotonic()
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "livestream.cli.send.main", f"ws://127.0.0.1:{self.port}/", "--test-pattern",
             "--fps", str(FPS), "--size", "320x240", "--ffmpeg", ffmpeg_exe(), *argv],
            env=dict(os.environ, PYTHONPATH=os.fspath(ROOT)), reactor=reactor,
        )  # fmt: skip
        return code, out.decode(), err.decode(), time.monotonic() - started

    def check(self, out: str, err: str, seconds: float, opus: bool) -> None:
        """One recording: H.264, every frame sent (frames mode: frame n at n/fps, so the
        duration is frames/fps), and the WAV: the tone exactly (PCM), or within the Opus
        tolerance above."""
        frames = round(seconds * FPS)
        self.assertIn(f"{frames} frames, {seconds:.1f} s audio", err.splitlines()[-1])
        names = json.loads(out)
        video = video_facts(self.media / "video" / names["video"])
        self.assertEqual((video.codec, video.frames, video.width), ("h264", frames, 320))
        self.assertAlmostEqual(video.duration, seconds, delta=0.5 / FPS)
        self.assertTrue(video.faststart)
        wav = wav_facts(self.media / "audio" / names["audio"])
        self.assertEqual((wav.rate, wav.channels), (44100, 1))
        if opus:
            expected = round(seconds * 44100)
            self.assertTrue(expected - OPUS_BELOW <= wav.samples <= expected + OPUS_ABOVE,
                            (wav.samples, expected))  # fmt: skip
        else:
            self.assertEqual(wav.data, tone(seconds))

    async def test_real_time_json_pcm(self) -> None:
        """H.264 in JSON with PCM, paced: 2 s of pattern takes about 2 s, every frame and
        sample recorded."""
        await self.serve()
        code, out, err, took = await self.send("--duration", "2", "--codec", "h264")
        self.assertEqual(code, 0, err)
        self.assertGreater(took, 1.9)
        self.check(out, err, 2, opus=False)

    async def test_real_time_binary_opus(self) -> None:
        await self.serve()
        code, out, err, took = await self.send("--duration", "2", "--codec", "h264",
                                               "--audio-codec", "opus", "--binary")  # fmt: skip
        self.assertEqual(code, 0, err)
        self.assertGreater(took, 1.9)
        self.check(out, err, 2, opus=True)

    async def test_fast_binary_pcm(self) -> None:
        """--fast: 6 s of media in well under 6 s."""
        await self.serve()
        code, out, err, took = await self.send("--duration", "6", "--codec", "h264", "--fast",
                                               "--binary")  # fmt: skip
        self.assertEqual(code, 0, err)
        self.assertLess(took, 5)
        self.check(out, err, 6, opus=False)

    async def test_fast_json_opus(self) -> None:
        await self.serve()
        code, out, err, took = await self.send("--duration", "6", "--codec", "h264", "--fast",
                                               "--audio-codec", "opus")  # fmt: skip
        self.assertEqual(code, 0, err)
        self.assertLess(took, 5)
        self.check(out, err, 6, opus=True)

    async def test_jpeg_with_opus(self) -> None:
        """Opus goes with JPEG frames too (the server encodes those as ever)."""
        await self.serve()
        code, out, err, _ = await self.send("--duration", "2", "--fast", "--audio-codec", "opus")
        self.assertEqual(code, 0, err)
        self.check(out, err, 2, opus=True)

    async def test_big_frames(self) -> None:
        """1080p keyframes are larger than any reply the server sends (64 KiB): they go out
        whole, JSON and binary."""
        await self.serve()
        for form in ("--binary", "--id=json"):
            big = ("--duration", "1", "--fps", "5", "--size", "1920x1080", "--fast")
            code, out, err, _ = await self.send(*big, "--codec", "h264", form)
            self.assertEqual(code, 0, err)
            video = video_facts(self.media / "video" / json.loads(out)["video"])
            self.assertEqual((video.frames, video.width), (5, 1920))

    async def test_full_range_file(self) -> None:
        """A file of full-range JPEG frames (MJPEG, yuvj420p) with no audio is sent as
        limited-range 4:2:0 H.264, as a browser's encoder makes it; video only is recorded."""
        tmp = Path(self.mktemp()).absolute()
        tmp.mkdir(parents=True)
        clip = tmp / "clip.avi"
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
             "-i", "testsrc=size=320x240:rate=25:duration=2", "-c:v", "mjpeg",
             "-pix_fmt", "yuvj420p", os.fspath(clip)],
            check=True, stdin=subprocess.DEVNULL, timeout=30,
        )  # fmt: skip
        await self.serve()
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "livestream.cli.send.main", f"ws://127.0.0.1:{self.port}/", os.fspath(clip),
             "--fps", str(FPS), "--fast", "--codec", "h264", "--audio-codec", "opus"],
            env=dict(os.environ, PYTHONPATH=os.fspath(ROOT)), reactor=reactor,
        )  # fmt: skip
        self.assertEqual(code, 0, err)
        names = json.loads(out)
        self.assertIsNone(names["audio"])
        video = video_facts(self.media / "video" / names["video"])
        self.assertEqual((video.codec, video.pix_fmt, video.frames), ("h264", "yuv420p", 20))

    async def cut(self, after_frames: int, previous: object = None) -> object:
        """Cut the live session's connection once it has ``after_frames`` (see
        :func:`tests.support.waiting.cut_connection`); return the connection cut."""
        return await cut_connection(self.registry, after_frames, previous)

    async def test_resumed_twice(self) -> None:
        """Cut twice while streaming H.264 and Opus, the sender resumes and sends again what
        was not acknowledged, in order, with its timestamps: one recording, every frame once."""
        await self.serve()
        done = Collect()
        argv = [sys.executable, "-m", "livestream.cli.send.main", f"ws://127.0.0.1:{self.port}/",
                "--test-pattern", "--duration", "3.5", "--fps", str(FPS), "--size", "320x240",
                "--ffmpeg", ffmpeg_exe(), "--codec", "h264", "--audio-codec", "opus",
                "--binary"]  # fmt: skip
        reactor.spawnProcess(done, sys.executable, argv,
                             env=dict(os.environ, PYTHONPATH=os.fspath(ROOT)))  # fmt: skip
        owner = await self.cut(5)
        await self.cut(17, owner)
        code = await done.ended
        out, err = done.out.decode(), done.err.decode()
        self.assertEqual(code, 0, err)
        resent = re.search(r"resumed after 2 drops \((\d+) chunks sent again\)", err)
        self.assertIsNotNone(resent, err)
        self.assertGreater(int(resent[1]), 0)
        # The server asks for a keyframe after a resume: counted, and nothing else printed.
        self.assertRegex(err.splitlines()[-1], r", \d+ keyframe requests?$")
        self.assertNotIn("KEYFRAME", err)
        names = json.loads(out)
        self.assertEqual(await get_json(self.port, "/recordings"),
                         {"video": [names["video"]], "audio": [names["audio"]]})  # fmt: skip
        self.check(out, err, 3.5, opus=True)


class OlderServer(WebSocketServerProtocol):
    """A server that knows CONNECT but not the encoded-media extension: its CONNECTED names no
    codec. It keeps what it was sent."""

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.received.append(None if isBinary else json.loads(payload))
        message = self.factory.received[-1]
        if message and message["eventType"] == "CONNECT":
            self.sendMessage(json.dumps({"eventType": "CONNECTED", "id": message["id"],
                                         "recording": "old_1"}).encode())  # fmt: skip
        elif message and message["eventType"] == "CLOSE":
            self.sendMessage(json.dumps({"eventType": "CLOSED", "recordings": {
                "video": None, "audio": None}}).encode())  # fmt: skip
            self.sendClose(1000)


class OlderServerTests(TestCase):
    timeout = 30

    async def test_refused_with_one_line(self) -> None:
        """Against a server that does not echo the codecs, the sender says so in one line and
        exits 1, having sent CONNECT (with the codecs and the OpusHead ffmpeg wrote) and CLOSE,
        and no media."""
        factory = WebSocketServerFactory()
        factory.protocol = OlderServer
        factory.received = []
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "livestream.cli.send.main", f"ws://127.0.0.1:{port.getHost().port}/",
             "--test-pattern", "--codec", "h264", "--audio-codec", "opus", "--binary",
             "--ffmpeg", ffmpeg_exe()],
            env=dict(os.environ, PYTHONPATH=os.fspath(ROOT)), reactor=reactor,
        )  # fmt: skip
        self.assertEqual((code, out), (1, b""))
        self.assertEqual(err.decode(), "livestream-send: the server does not know the "
                         'encoded-media extension: CONNECTED does not say videoCodec "h264" '
                         "(an older livestream?)\n")  # fmt: skip
        connect, close = factory.received
        self.assertEqual((connect["videoCodec"], connect["audioCodec"]), ("h264", "opus"))
        head = parse_opus_head(base64.b64decode(connect["opusHead"]))
        self.assertEqual((head.channels, head.pre_skip), (1, 312))
        self.assertEqual(close, {"eventType": "CLOSE"})
