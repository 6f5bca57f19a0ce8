"""--mux-audio: one MP4 with picture and sound, in sync; measured with a flash and a beep.

The audio track has an encoder of its own, so video never waits for sound: a session without
audio, or with audio lagging in bursts, is recorded as fast as it is sent."""

from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path

import av
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import TestCase

from tests.support.media import brightness, ffmpeg_exe, jpeg_frames, video_facts, wav_facts
from tests.support.server import start_server
from tests.support.websocket import CLOSE_MSG, connect_msg, open_client, stream_msg

RATE = 44100
FPS_IN = 10
CHUNK = RATE // FPS_IN
BEEP = 0.05


def solid_jpeg(color: str) -> bytes:
    return subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
         "-i", f"color=c={color}:size=64x48", "-frames:v", "1", "-f", "mjpeg", "-"],
        check=True, capture_output=True, stdin=subprocess.DEVNULL,
    ).stdout  # fmt: skip


def padded(frame: bytes, size: int) -> bytes:
    """The JPEG with a comment segment of ``size`` bytes after its SOI: the same picture, but as
    large as a camera's frame, so a backlog of them fills the encoder's pipe."""
    if not size:
        return frame
    return frame[:2] + b"\xff\xfe" + (size + 2).to_bytes(2, "big") + bytes(size) + frame[2:]


def beep_chunk(beep: bool) -> bytes:
    """100 ms of silence, or of a 1 kHz tone for its first 50 ms."""
    if not beep:
        return bytes(2 * CHUNK)
    return b"".join(
        int(12000 * math.sin(2 * math.pi * 1000 * n / RATE) if n < BEEP * RATE else 0).to_bytes(
            2, "little", signed=True
        )
        for n in range(CHUNK)
    )


def flashes(path: Path) -> list[float]:
    """Times of the frames where the picture turns bright."""
    found, bright = [], False
    for at, level in brightness(path):
        now = level > 128
        if now and not bright:
            found.append(at)
        bright = now
    return found


def beeps(path: Path) -> list[float]:
    """Times where the sound starts after at least a quarter second of quiet."""
    found, quiet_since = [], -1.0
    with av.open(os.fspath(path)) as container:
        for frame in container.decode(audio=0):
            samples = memoryview(bytes(frame.planes[0])).cast("f")
            for n, x in enumerate(samples):
                t = float(frame.time) + n / frame.sample_rate
                if abs(x) > 0.1:
                    if quiet_since >= 0 and t - quiet_since > 0.25:
                        found.append(t)
                    quiet_since = -1.0
                elif quiet_since < 0:
                    quiet_since = t
    return found


class MuxTests(TestCase):
    timeout = 300

    async def record(
        self,
        seconds: int,
        drift: float,
        timing: str = "capture",
        burst_lag: float = 0.0,
        pad: int = 0,
    ):
        """A client with a flash and a beep at every whole second but 0, its clock ``drift``
        fast against its sound card, sending as fast as it can (the stamps carry the time).

        With ``burst_lag`` its audio goes out a second at a time, as one chunk, once the video
        has gone ``burst_lag`` s past that second's end (a phone batching its microphone).
        ``pad`` bytes are added to each frame (see :func:`padded`)."""
        media = Path(self.mktemp())
        _, port = await start_server(self, media, timing=timing, mux_audio=True)
        dark, light = padded(solid_jpeg("black"), pad), padded(solid_jpeg("white"), pad)
        client = await open_client(port)
        client.send(connect_msg("sync"))
        await client.event("CONNECTED")
        silent, loud = beep_chunk(False), beep_chunk(True)
        sent = bytearray()
        held: list[tuple[int, bytes, float]] = []  # audio not sent yet: (seq, chunk, stamp)

        def send_audio(batch: list[tuple[int, bytes, float]]) -> None:
            seq, _, stamp = batch[0]
            joined = b"".join(chunk for _, chunk, _ in batch)
            client.send(stream_msg("AUDIO", joined, seq=seq, captureTime=stamp))

        for i in range(seconds * FPS_IN):
            stamp = 1000.0 * i / FPS_IN * (1 + drift)
            second = i % FPS_IN == 0 and i > 0
            chunk = loud if second else silent
            sent += chunk
            held.append((i, chunk, stamp))
            if not burst_lag:
                send_audio(held)
                held.clear()
            client.send(stream_msg("VIDEO", light if second else dark, seq=i, captureTime=stamp))
            # The video has gone burst_lag s past the end of the oldest second held back.
            if held and i + 1 >= held[0][0] + FPS_IN * (1 + burst_lag):
                send_audio(held[:FPS_IN])
                del held[:FPS_IN]
        for at in range(0, len(held), FPS_IN):
            send_audio(held[at : at + FPS_IN])
        client.send(CLOSE_MSG)
        closing = time.monotonic()
        closed = await client.event("CLOSED", timeout=240)
        ready = time.monotonic() - closing
        video = media / "video" / closed["recordings"]["video"]
        self.assertEqual(wav_facts(media / "audio" / closed["recordings"]["audio"]).data, sent)
        return video, ready

    def check_sync(self, video: Path, seconds: int) -> float:
        seen, heard = flashes(video), beeps(video)
        self.assertEqual(len(seen), seconds - 1, seen)
        self.assertEqual(len(heard), seconds - 1, heard)
        worst = max(abs(a - b) for a, b in zip(seen, heard, strict=True))
        self.assertLessEqual(worst, 1 / 15)
        return worst

    def test_frames_mode_muxes_too(self):
        """Without capture timing the audio is muxed as well (one frame per frame, so in sync
        only when the client's rate is --fps)."""

        async def go():
            video, _ = await self.record(3, 0.0, timing="frames")
            with av.open(os.fspath(video)) as container:
                self.assertEqual(sorted(s.type for s in container.streams), ["audio", "video"])

        return ensureDeferred(go())

    def test_both_streams_in_one_file(self):
        async def go():
            video, _ = await self.record(5, 0.0)
            with av.open(os.fspath(video)) as container:
                kinds = sorted(s.type for s in container.streams)
                audio = container.streams.audio[0]
                self.assertEqual((audio.codec_context.name, audio.sample_rate), ("aac", RATE))
            self.assertEqual(kinds, ["audio", "video"])
            self.check_sync(video, 5)

        return ensureDeferred(go())

    def test_audio_in_late_bursts_records_every_frame_in_sync(self):
        """Audio a second at a time, 1.5 s behind the video it belongs with: every frame is
        recorded and each beep still lands on its flash."""

        async def go():
            video, ready = await self.record(8, 0.0, burst_lag=1.5, pad=60_000)
            self.check_sync(video, 8)
            self.assertEqual(video_facts(video).frames, 8 * 15)
            self.assertLess(ready, 10)

        return ensureDeferred(go())

    test_audio_in_late_bursts_records_every_frame_in_sync.timeout = 60  # type: ignore[attr-defined]

    def test_video_only_unpaced_is_not_held_back(self):
        """A session that sends no audio at all, as fast as it can: every frame is recorded,
        promptly, into an MP4 with a video track only."""

        async def go():
            media = Path(self.mktemp())
            _, port = await start_server(self, media, mux_audio=True)
            frames = jpeg_frames(240)
            client = await open_client(port)
            client.send(connect_msg("mute"))
            await client.event("CONNECTED")
            for frame in frames:
                client.send(stream_msg("VIDEO", frame))
            client.send(CLOSE_MSG)
            closing = time.monotonic()
            closed = await client.event("CLOSED", timeout=25)
            self.assertLess(time.monotonic() - closing, 10)
            video = media / "video" / closed["recordings"]["video"]
            self.assertEqual(video_facts(video).frames, len(frames))
            self.assertIsNone(closed["recordings"]["audio"])
            with av.open(os.fspath(video)) as container:
                self.assertEqual([s.type for s in container.streams], ["video"])

        return ensureDeferred(go())

    test_video_only_unpaced_is_not_held_back.timeout = 30  # type: ignore[attr-defined]

    def test_ten_minutes_in_sync_with_drifting_client_clock(self):
        """0.1 % drift is 0.6 s over ten minutes; every beep stays within one frame interval of
        its flash. (Sent faster than real time: the time to CLOSED includes the backlog.)"""

        async def go():
            video, ready = await self.record(600, 0.001)
            worst = self.check_sync(video, 600)
            print(f"\n  10 min, 0.1 % drift: worst flash-beep offset {worst * 1000:.1f} ms, "
                  f"CLOSED {ready:.2f} s after CLOSE")  # fmt: skip

        return ensureDeferred(go())
