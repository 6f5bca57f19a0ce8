"""Sessions that send H.264 and Opus they encoded themselves, against the whole daemon: real
sockets, real encoders (libx264, libopus) on the client side, recordings decoded with PyAV."""

from __future__ import annotations

import array
import base64
import json
import math
import os
import struct
from fractions import Fraction
from pathlib import Path

import av
from twisted.trial.unittest import TestCase

from livestream.wire import h264
from tests.support.http import get_json
from tests.support.media import (
    h264_access_units,
    is_keyframe,
    jpeg_frames,
    opus_packets,
    pcm,
    video_facts,
    wav_facts,
)
from tests.support.server import start_server
from tests.support.waiting import sleep
from tests.support.websocket import CLOSE_MSG, Client, open_client, record, stream_msg

FRAME_US = 1_000_000 // 15


def connect(client_id: str, **fields: object) -> str:
    return json.dumps({"eventType": "CONNECT", "id": client_id, "videoCodec": "h264", **fields})


def encoded(kind: int, seq: int, timestamp: int, chunk: bytes, key: bool = False) -> bytes:
    return struct.pack(">BBIq", kind, 1 if key else 0, seq, timestamp) + chunk


def video_msg(seq: int, unit: bytes, timestamp: int | None = None) -> bytes:
    stamp = seq * FRAME_US if timestamp is None else timestamp
    return encoded(0x21, seq, stamp, unit, is_keyframe(unit))


def huge_sps(width_mbs: int, height_mbs: int) -> bytes:
    """An SPS NAL unit (baseline) claiming a picture of that many macroblocks a side."""
    bits = "01000010" + "11000000" + "00011111"  # profile 66, constraints, level 3.1

    def ue(value: int) -> str:
        code = bin(value + 1)[2:]
        return "0" * (len(code) - 1) + code

    bits += ue(0) + ue(0) + ue(2) + ue(1) + "0" + ue(width_mbs - 1) + ue(height_mbs - 1)
    bits += "1" + "1" + "0" + "0" + "1"  # frame_mbs_only, direct_8x8, no crop, no VUI, stop
    bits += "0" * (-len(bits) % 8)
    raw = int(bits, 2).to_bytes(len(bits) // 8, "big")
    escaped = bytearray()
    for byte in raw:
        if escaped[-2:] == b"\x00\x00" and byte <= 3:
            escaped.append(3)
        escaped.append(byte)
    return b"\x67" + bytes(escaped)


def frame_times(path: Path) -> list[float]:
    with av.open(os.fspath(path)) as container:
        return [float(frame.time) for frame in container.decode(video=0)]


def tone(samples: bytes) -> tuple[float, float]:
    """(frequency from zero crossings, RMS) of s16le mono at 44.1 kHz."""
    values = array.array("h", samples)
    rising = [i for i in range(1, len(values)) if values[i - 1] < 0 <= values[i]]
    rms = math.sqrt(sum(v * v for v in values) / len(values))
    return (len(rising) - 1) * 44100 / (rising[-1] - rising[0]), rms


class PassthroughTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.media = Path(self.mktemp()).absolute()

    async def serve(self, **options) -> int:
        self.service, port = await start_server(self, self.media, **options)
        return port

    async def session(self, port: int, client_id: str = "cam", **fields: object):
        client = await open_client(port)
        client.send(connect(client_id, **fields))
        connected = await client.event("CONNECTED")
        return client, connected

    async def close(self, client: Client) -> dict:
        client.send(CLOSE_MSG)
        return (await client.event("CLOSED", timeout=60))["recordings"]

    def errors(self, client: Client) -> list[str]:
        return [e["code"] for e in client.events if e.get("eventType") == "ERROR"]

    def requests(self, client: Client) -> list[str]:
        return [e["reason"] for e in client.events if e.get("eventType") == "KEYFRAME_REQUEST"]

    async def test_h264_binary_is_recorded_as_sent(self) -> None:
        """45 access units and PCM in: an MP4 of those 45 frames, not re-encoded (the packets are
        the bytes that were sent), 15 fps, faststart, with a poster; the WAV is the PCM."""
        port = await self.serve()
        units = h264_access_units(45)
        audio = [pcm(2940, seed=i) for i in range(45)]
        client, connected = await self.session(port)
        self.assertEqual(connected["videoCodec"], "h264")
        self.assertNotIn("audioCodec", connected)
        for seq, unit in enumerate(units):
            client.send_binary(video_msg(seq, unit))
            client.send_binary(bytes([0x02]) + audio[seq])
        for _ in range(100):
            (live,) = (await get_json(port, "/api/sessions"))["sessions"]
            if live["frames"] == len(units):
                break
            await sleep(0.05)
        sps = h264.check_access_unit(units[0]).sps[0]
        self.assertEqual(
            (live["video"], live["audio"], live["codec"]),
            ("h264", "pcm", h264.parse_sps(sps).codec),
        )
        recordings = await self.close(client)
        name = connected["recording"]
        self.assertEqual(recordings, {"video": f"{name}.mp4", "audio": f"{name}.wav"})
        self.assertEqual(self.errors(client), [])
        path = self.media / "video" / f"{name}.mp4"
        facts = video_facts(path)
        self.assertEqual(
            (facts.codec, facts.pix_fmt, facts.rate, facts.frames, facts.width, facts.height),
            ("h264", "yuv420p", Fraction(15), 45, 320, 240),
        )
        self.assertLessEqual(abs(facts.duration - 3.0), 0.01)
        self.assertTrue(facts.faststart)
        with av.open(os.fspath(path)) as container:
            packets = [bytes(p) for p in container.demux(video=0) if p.size]
        # The samples are the access units with lengths for start codes: same NAL units.
        sent_nals = [n for u in units for n in h264.nal_units(u)]
        got_nals = []
        for packet in packets:
            pos = 0
            while pos < len(packet):
                size = int.from_bytes(packet[pos : pos + 4], "big")
                got_nals.append(packet[pos + 4 : pos + 4 + size])
                pos += 4 + size
        self.assertEqual(got_nals, sent_nals)
        self.assertEqual(wav_facts(self.media / "audio" / f"{name}.wav").data, b"".join(audio))
        self.assertTrue(
            (self.media / "posters" / f"{name}.jpg").read_bytes().startswith(b"\xff\xd8")
        )
        self.assertEqual(os.listdir(self.media / "temp"), [])
        listed = (await get_json(port, "/api/recordings"))["recordings"]
        (entry,) = [e for e in listed if e["name"] == f"{name}.mp4"]
        self.assertEqual((entry["frames"], entry["duration"]), (45, 3.0))
        self.assertEqual(entry["poster"], f"/recordings/posters/{name}.jpg")

    async def test_json_form_with_capture_timing(self) -> None:
        """JSON STREAMs with timestamps 100 ms apart and --timing capture: each frame shows at
        its timestamp, so 30 frames last 3 s (not 2 s at --fps)."""
        port = await self.serve(timing="capture")
        units = h264_access_units(30)
        client, connected = await self.session(port)
        for seq, unit in enumerate(units):
            client.send(
                stream_msg(
                    "VIDEO", unit, seq=seq, timestamp=5_000_000 + seq * 100_000,
                    key=is_keyframe(unit),
                )
            )  # fmt: skip
        recordings = await self.close(client)
        self.assertEqual(self.errors(client), [])
        times = frame_times(self.media / "video" / recordings["video"])
        self.assertEqual(len(times), 30)
        for seq, t in enumerate(times):
            self.assertLessEqual(abs(t - seq * 0.1), 0.002 + 0.005 * t)
        facts = video_facts(self.media / "video" / recordings["video"])
        self.assertLessEqual(abs(facts.duration - 3.0), 0.02)

    async def test_opus_is_decoded_for_the_wav_and_copied_into_the_mp4(self) -> None:
        """Opus of a 440 Hz tone beside the video, with --mux-audio: the WAV is that tone at
        44.1 kHz (every sample a decoder gives, within the resampler's rounding), the MP4
        carries the Opus as sent."""
        port = await self.serve(mux_audio=True)
        head, packets = opus_packets(3.0)
        units = h264_access_units(45)
        client, connected = await self.session(
            port, audioCodec="opus", opusHead=base64.b64encode(head).decode()
        )
        self.assertEqual(connected["audioCodec"], "opus")
        for seq, packet in enumerate(packets):
            if seq < len(units):
                client.send_binary(video_msg(seq, units[seq]))
            client.send_binary(encoded(0x22, seq, seq * 20_000, packet))
        recordings = await self.close(client)
        self.assertEqual(self.errors(client), [])
        wav = wav_facts(self.media / "audio" / recordings["audio"])
        self.assertEqual((wav.rate, wav.channels, wav.sample_width), (44100, 1, 2))
        sent = len(packets) * 960 - 312  # what a decoder gives: every packet, less the pre-skip
        self.assertLessEqual(abs(wav.samples - sent * 44100 / 48000), 2)
        frequency, rms = tone(wav.data[44100:-8820])  # past the encoder's start, before its end
        # ffmpeg's sine source has an amplitude of 1/8 of full scale.
        source_rms = 32767 / 8 / math.sqrt(2)
        self.assertLessEqual(abs(frequency - 440), 1)
        self.assertLessEqual(abs(rms - source_rms) / source_rms, 0.05, rms)
        with av.open(os.fspath(self.media / "video" / recordings["video"])) as container:
            kinds = {(s.type, s.codec_context.name) for s in container.streams}
            audio = container.streams.audio[0]
            copied = [bytes(p) for p in container.demux(audio) if p.size]
        self.assertEqual(kinds, {("video", "h264"), ("audio", "opus")})
        self.assertEqual(copied, list(packets))
        self.assertEqual(os.listdir(self.media / "temp"), [])

    async def test_recording_starts_on_a_keyframe(self) -> None:
        """Delta frames before the first keyframe are dropped, each with keyframe_required, and
        the client is asked for a keyframe (once a second at most); the recording starts there."""
        port = await self.serve()
        units = h264_access_units(30)  # keyframes at 0 and 15
        client, _ = await self.session(port)
        for seq in range(1, 30):
            client.send_binary(video_msg(seq, units[seq]))
        recordings = await self.close(client)
        self.assertEqual(self.errors(client), ["keyframe_required"] * 14)
        self.assertEqual(self.requests(client), ["start"])
        self.assertEqual(video_facts(self.media / "video" / recordings["video"]).frames, 15)

    async def test_a_skipped_seq_waits_for_the_next_keyframe(self) -> None:
        """Frame 5 never arrives: 6 to 14 depend on it and are dropped, the client is asked for
        a keyframe (reason gap), and the recording goes on from frame 15."""
        port = await self.serve()
        units = h264_access_units(30)
        client, _ = await self.session(port)
        for seq in range(30):
            if seq != 5:
                client.send_binary(video_msg(seq, units[seq]))
        recordings = await self.close(client)
        self.assertEqual(self.requests(client), ["gap"])
        self.assertEqual(self.errors(client), ["keyframe_required"] * 9)
        self.assertEqual(video_facts(self.media / "video" / recordings["video"]).frames, 5 + 15)

    async def test_hostile_bitstreams_cost_only_the_frame(self) -> None:
        """Garbage, a unit without a start code, a forbidden bit, an SPS claiming 65536x65536, a
        keyframe of another size, a key flag on a delta frame, a timestamp going back and one
        jumping an hour: each gets its ERROR, and every valid frame is recorded, in order."""
        port = await self.serve(timing="capture")
        units = h264_access_units(30)
        other = h264_access_units(15, size="640x480")
        sps = b"\x00\x00\x00\x01" + huge_sps(4096, 4096)
        client, _ = await self.session(port)
        for seq in range(30):
            t = seq * FRAME_US
            unit = units[seq]
            if seq == 15:  # just before a keyframe: what they break is mended by it at once
                client.send_binary(encoded(0x21, 100, t, b"garbage without start codes"))
                client.send_binary(encoded(0x21, 100, t, b"\x00\x00\x01\xe5\x88\x84"))
                client.send_binary(encoded(0x21, 100, t, sps + b"\x00\x00\x01\x65\x88"))
                client.send_binary(encoded(0x21, 100, t, other[0], key=True))
            if seq == 7:
                client.send_binary(encoded(0x21, seq, t, unit, key=True))  # a delta, flagged key
            elif seq == 9:
                client.send_binary(encoded(0x21, seq, t - 10 * FRAME_US, unit))
            elif seq == 11:
                client.send_binary(encoded(0x21, seq, t + 3_600_000_000, unit))
            else:
                client.send_binary(video_msg(seq, unit, t))
        client.send_binary(bytes([0x01]) + jpeg_frames(1)[0])
        recordings = await self.close(client)
        errors = self.errors(client)
        self.assertEqual(
            sorted(errors),
            # The hour's jump is one discontinuity and the step back after it a second: the
            # timeline goes on from the frame before each.
            sorted(["invalid_h264"] * 4 + ["invalid_key"] + ["timestamp_discontinuity"] * 3
                   + ["codec_mismatch"]),
        )  # fmt: skip
        self.assertEqual(self.requests(client), ["gap"])
        path = self.media / "video" / recordings["video"]
        times = frame_times(path)
        self.assertEqual(len(times), 30)
        self.assertEqual(sorted(set(times)), times)
        # No hour in the recording: it lasts what was sent, and the 0.67 s the step back of
        # frame 9 left between it and frame 10.
        self.assertLess(times[-1], 2.0 + 0.7)

    async def test_beside_jpeg_sessions_without_cross_talk(self) -> None:
        """An H.264 session and two JPEG sessions at once: each recording holds only its own."""
        port = await self.serve()
        units = h264_access_units(30)
        jpegs = jpeg_frames(20)
        client, connected = await self.session(port)
        others = [record(port, f"jpeg-{i}", jpegs[: 10 + 5 * i], [pcm(100, i)]) for i in range(2)]
        for seq, unit in enumerate(units):
            client.send_binary(video_msg(seq, unit))
        client.send_binary(bytes([0x02]) + pcm(4410, 9))
        results = [await other for other in others]
        recordings = await self.close(client)
        self.assertEqual(video_facts(self.media / "video" / recordings["video"]).frames, 30)
        self.assertEqual(wav_facts(self.media / "audio" / recordings["audio"]).data, pcm(4410, 9))
        for i, (_, _, closed) in enumerate(results):
            facts = video_facts(self.media / "video" / closed["recordings"]["video"])
            self.assertEqual((facts.frames, facts.codec), (10 + 5 * i, "h264"))
            wav = wav_facts(self.media / "audio" / closed["recordings"]["audio"])
            self.assertEqual(wav.data, pcm(100, i))

    async def test_malformed_connect_and_opus(self) -> None:
        """An unknown codec or a bad opusHead refuses CONNECT; a malformed Opus packet is
        refused and the rest of the sound is kept."""
        port = await self.serve()
        client = await open_client(port)
        client.send(connect("cam", audioCodec="aac"))
        client.send(connect("cam", audioCodec="opus", opusHead="T3B1c0hlYWQ="))
        client.send(json.dumps({"eventType": "CONNECT", "id": "cam", "videoCodec": 264}))
        head, packets = opus_packets(1.0)
        client.send(connect("cam", audioCodec="opus", opusHead=base64.b64encode(head).decode()))
        await client.event("CONNECTED")
        self.assertEqual(self.errors(client), ["invalid_codec"] * 3)
        for seq, packet in enumerate(packets):
            client.send_binary(encoded(0x22, seq, seq * 20_000, packet))
        client.send_binary(encoded(0x22, 999, 0, b"\x03"))  # code 3 without its count byte
        client.send(stream_msg("AUDIO", b"\x01\x02"))  # PCM in an Opus session
        client.send(stream_msg("VIDEO", h264_access_units(1)[0]))  # no timestamp
        recordings = await self.close(client)
        self.assertEqual(
            self.errors(client)[3:], ["invalid_opus", "invalid_timestamp", "invalid_timestamp"]
        )
        self.assertIsNone(recordings["video"])
        wav = wav_facts(self.media / "audio" / recordings["audio"])
        self.assertLessEqual(abs(wav.samples - (len(packets) * 960 - 312) * 44100 / 48000), 2)

    async def test_resume_across_drops_asks_for_a_keyframe(self) -> None:
        """H.264 and Opus with resume; the connection is reset three times (twice losing what was
        in flight). Each resume gets KEYFRAME_REQUEST (resume) after its ACK; the client re-sends
        what was not acknowledged, and the recording is one, every frame and packet once, in
        order: the NAL units recorded are those sent."""
        port = await self.serve()
        units = h264_access_units(60)
        head, packets = opus_packets(4.0)
        outbox = [(0x21, i, u, is_keyframe(u)) for i, u in enumerate(units)]
        outbox += [(0x22, i, p, False) for i, p in enumerate(packets)]
        outbox.sort(key=lambda m: (m[1] * (66_667 if m[0] == 0x21 else 20_000), m[0]))
        hello = {"resume": True, "audioCodec": "opus", "opusHead": base64.b64encode(head).decode()}
        client, connected = await self.session(port, "phone", **hello)
        token = connected["resumeToken"]
        sent, cuts, recordings, requests = 0, [40, 120, 200], {connected["recording"]}, []
        while sent < len(outbox):
            kind, seq, chunk, key = outbox[sent]
            stamp = seq * (66_667 if kind == 0x21 else 20_000)
            client.send_binary(encoded(kind, seq, stamp, chunk, key))
            sent += 1
            if cuts and sent == cuts[0]:
                if len(cuts) == 2:
                    await sleep(0.6)  # an ACK covers everything sent: nothing lost in flight
                cuts.pop(0)
                client.drop()
                await client.closed
                client = await open_client(port)
                client.send(connect("phone", resumeToken=token))
                recordings.add((await client.event("CONNECTED"))["recording"])
                acked = await client.event("ACK")
                requests.append((await client.event("KEYFRAME_REQUEST"))["reason"])
                safe = {0x21: acked["video"], 0x22: acked["audio"]}
                sent = next(
                    i for i, (k, s, _, _) in enumerate(outbox) if safe[k] is None or s > safe[k]
                )
        recordings_closed = await self.close(client)
        self.assertEqual(len(recordings), 1)
        self.assertEqual(requests, ["resume"] * 3)
        self.assertEqual(self.errors(client), [])
        path = self.media / "video" / recordings_closed["video"]
        with av.open(os.fspath(path)) as container:
            got = [bytes(p) for p in container.demux(video=0) if p.size]
        want = [b"".join(len(n).to_bytes(4, "big") + n for n in h264.nal_units(u)) for u in units]
        self.assertEqual(got, want)
        self.assertEqual(video_facts(path).frames, len(units))
        wav = wav_facts(self.media / "audio" / recordings_closed["audio"])
        self.assertLessEqual(abs(wav.samples - (len(packets) * 960 - 312) * 44100 / 48000), 2)

    async def test_capture_timing_puts_late_opus_where_it_began(self) -> None:
        """--timing capture, --mux-audio: the video starts at 0 s, the Opus a second later by
        the client's clock. In the MP4 the Opus starts 1 s in (within one frame interval), as
        copied, and the WAV holds the sound alone."""
        port = await self.serve(timing="capture", mux_audio=True)
        units = h264_access_units(45)
        head, packets = opus_packets(2.0)
        client, _ = await self.session(
            port, audioCodec="opus", opusHead=base64.b64encode(head).decode()
        )
        for seq, unit in enumerate(units):
            client.send_binary(video_msg(seq, unit, 7_000_000 + seq * FRAME_US))
            if seq >= 15 and seq - 15 < len(packets):
                for n in range(3):  # 15 fps, 20 ms packets: about three per frame
                    i = (seq - 15) * 3 + n
                    if i < len(packets):
                        client.send_binary(encoded(0x22, i, 8_000_000 + i * 20_000, packets[i]))
        recordings = await self.close(client)
        self.assertEqual(self.errors(client), [])
        with av.open(os.fspath(self.media / "video" / recordings["video"])) as container:
            audio = container.streams.audio[0]
            start = float(audio.start_time * audio.time_base)
        self.assertLessEqual(abs(start - 1.0), 1 / 15)
        sent = min(len(packets), 30 * 3)
        wav = wav_facts(self.media / "audio" / recordings["audio"])
        self.assertLessEqual(abs(wav.samples - (sent * 960 - 312) * 44100 / 48000), 2)

    async def test_an_opus_timestamp_jump_does_not_bend_the_video(self) -> None:
        """--timing capture: one Opus packet claims to be an hour late. It gets
        timestamp_discontinuity and is placed after the packets before it, and the video's
        frames stay a frame interval apart."""
        port = await self.serve(timing="capture")
        units = h264_access_units(30)
        head, packets = opus_packets(2.0)
        client, _ = await self.session(
            port, audioCodec="opus", opusHead=base64.b64encode(head).decode()
        )
        for seq, unit in enumerate(units):
            client.send_binary(video_msg(seq, unit))
            for i in range(seq * 3, min(seq * 3 + 3, len(packets))):
                late = 3_600_000_000 if i == 40 else 0
                client.send_binary(encoded(0x22, i, i * 20_000 + late, packets[i]))
        recordings = await self.close(client)
        self.assertEqual(self.errors(client), ["timestamp_discontinuity"])
        times = frame_times(self.media / "video" / recordings["video"])
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        self.assertLessEqual(max(abs(g - 1 / 15) for g in gaps), 0.005)

    async def test_jpeg_with_opus_and_mux_audio(self) -> None:
        """The seed's JPEG frames with Opus sound, --mux-audio: the MP4 has the encoded video
        and the Opus as sent; the WAV is the Opus decoded."""
        port = await self.serve(mux_audio=True)
        head, packets = opus_packets(1.0)
        frames = jpeg_frames(15)
        client = await open_client(port)
        opus_head = base64.b64encode(head).decode()
        client.send(json.dumps(
            {"eventType": "CONNECT", "id": "cam", "audioCodec": "opus", "opusHead": opus_head}
        ))  # fmt: skip
        connected = await client.event("CONNECTED")
        self.assertEqual((connected.get("videoCodec"), connected["audioCodec"]), (None, "opus"))
        for seq, packet in enumerate(packets):
            if seq < len(frames):
                client.send_binary(bytes([0x01]) + frames[seq])
            client.send_binary(encoded(0x22, seq, seq * 20_000, packet))
        recordings = await self.close(client)
        self.assertEqual(self.errors(client), [])
        with av.open(os.fspath(self.media / "video" / recordings["video"])) as container:
            kinds = sorted((s.type, s.codec_context.name) for s in container.streams)
            copied = [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]
        self.assertEqual(kinds, [("audio", "opus"), ("video", "h264")])
        self.assertEqual(copied, list(packets))
        wav = wav_facts(self.media / "audio" / recordings["audio"])
        self.assertLessEqual(abs(wav.samples - (len(packets) * 960 - 312) * 44100 / 48000), 2)

    async def test_opus_counts_against_the_size_limit_as_the_wav_it_makes(self) -> None:
        """Two bytes of Opus can play 120 ms: a session's Opus is counted at its decoded size,
        so tiny packets cannot make hours of WAV past --max-session-bytes."""
        limit = 441_000  # 5 s of WAV
        port = await self.serve(max_session_bytes=limit)
        client, _ = await self.session(port, audioCodec="opus")
        silence = bytes([0xFB, 0x06])  # CELT 20 ms frames, code 3: six of them, no data
        for seq in range(100):  # 12 s of sound in 200 bytes
            client.send_binary(encoded(0x22, seq, seq * 120_000, silence))
        self.assertEqual((await client.event("ERROR"))["code"], "limit_reached")
        recordings = (await client.event("CLOSED", timeout=60))["recordings"]
        wav = wav_facts(self.media / "audio" / recordings["audio"])
        self.assertLessEqual(44 + len(wav.data), limit)
        self.assertGreater(wav.samples, 4 * 44100)
