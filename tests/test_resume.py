"""Resume: a session survives dropped connections, and holds every chunk exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import TestCase

from tests.support.http import get_json
from tests.support.media import brightness, ffmpeg_exe, pcm, wav_facts
from tests.support.server import start_server
from tests.support.waiting import sleep
from tests.support.websocket import CLOSE_MSG, connect_msg, open_client, stream_msg

COUNT = 60


def gray_frames(count: int) -> list[bytes]:
    """Frames of rising brightness, so the order of the decoded video can be read off it."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
             "-i", "color=c=black:size=64x48:rate=15", "-vf", "geq=lum='40+N*3':cb=128:cr=128",
             "-frames:v", str(count), "-q:v", "2", os.path.join(tmp, "f_%03d.jpg")],
            check=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return [p.read_bytes() for p in sorted(Path(tmp).iterdir())]


class ResumeTests(TestCase):
    timeout = 120

    def test_cut_several_times_then_finished(self):
        """The TCP connection is reset four times mid-stream; each time the client comes back
        with its token and re-sends what was not acknowledged. One recording, every frame and
        sample once, in order."""

        async def go():
            media = Path(self.mktemp())
            _, port = await start_server(self, media)
            frames, audio = gray_frames(COUNT), [pcm(441, seed=i) for i in range(COUNT)]
            outbox = [("VIDEO", i, frames[i]) for i in range(COUNT)]
            outbox += [("AUDIO", i, audio[i]) for i in range(COUNT)]
            outbox.sort(key=lambda m: (m[1], m[0]))
            client = await open_client(port)
            client.send(json.dumps({"eventType": "CONNECT", "id": "phone", "resume": True}))
            connected = await client.event("CONNECTED")
            token = connected["resumeToken"]
            acked = await client.event("ACK")
            self.assertEqual((acked["video"], acked["audio"]), (None, None))
            sent, cuts, recordings = 0, [20, 45, 70, 95], {connected["recording"]}
            lost = 0
            while sent < len(outbox):
                kind, seq, chunk = outbox[sent]
                client.send(stream_msg(kind, chunk, seq=seq))
                sent += 1
                if cuts and sent == cuts[0]:
                    # Half the cuts lose what was in flight, half come after an ACK.
                    if len(cuts) % 2:
                        await sleep(0.6)
                    cuts.pop(0)
                    client.drop()
                    await client.closed
                    client = await open_client(port)
                    client.send(json.dumps(
                        {"eventType": "CONNECT", "id": "phone", "resumeToken": token}
                    ))  # fmt: skip
                    again = await client.event("CONNECTED")
                    recordings.add(again["recording"])
                    acked = await client.event("ACK")
                    safe = {"VIDEO": acked["video"], "AUDIO": acked["audio"]}
                    # Re-send from the first chunk not acknowledged, and (as a careless client
                    # might) a few before it: duplicates are discarded.
                    first = next(
                        i for i, (k, s, _) in enumerate(outbox)
                        if safe[k] is None or s > safe[k]
                    )  # fmt: skip
                    lost += sent - first
                    sent = max(0, first - 3)
            client.send(CLOSE_MSG)
            closed = await client.event("CLOSED", timeout=60)
            self.assertEqual(len(recordings), 1)
            self.assertGreater(lost, 0)  # the cuts did lose chunks in flight
            wav = wav_facts(media / "audio" / closed["recordings"]["audio"])
            self.assertEqual(wav.data, b"".join(audio))
            video = media / "video" / closed["recordings"]["video"]
            levels = [level for _, level in brightness(video)]
            self.assertEqual(len(levels), COUNT)
            self.assertEqual(levels, sorted(levels))
            self.assertEqual(await get_json(port, "/recordings"), {
                "video": [closed["recordings"]["video"]], "audio": [closed["recordings"]["audio"]]
            })  # fmt: skip

        return ensureDeferred(go())

    def test_grace_over_finishes_the_recording(self):
        async def go():
            media = Path(self.mktemp())
            _, port = await start_server(self, media, resume_grace=0.5)
            client = await open_client(port)
            client.send(json.dumps({"eventType": "CONNECT", "id": "gone", "resume": True}))
            connected = await client.event("CONNECTED")
            self.assertEqual((await client.event("ACK"))["audio"], None)
            client.send(stream_msg("AUDIO", pcm(100), seq=0))
            self.assertEqual((await client.event("ACK"))["audio"], 0)
            client.drop()
            await sleep(1.5)
            listing = await get_json(port, "/recordings")
            self.assertEqual(listing["audio"], [connected["recording"] + ".wav"])
            late = await open_client(port)
            late.send(json.dumps(
                {"eventType": "CONNECT", "id": "gone", "resumeToken": connected["resumeToken"]}
            ))  # fmt: skip
            error = await late.event("ERROR")
            self.assertEqual(error["code"], "resume_failed")
            late.drop()

        return ensureDeferred(go())

    def test_clients_that_do_not_ask_get_no_token_and_no_ack(self):
        async def go():
            media = Path(self.mktemp())
            _, port = await start_server(self, media)
            client = await open_client(port)
            client.send(connect_msg("plain"))
            connected = await client.event("CONNECTED")
            # The live playlist is named to every client (issue 15); nothing of resume is.
            self.assertEqual(set(connected), {"eventType", "id", "recording", "playlist"})
            client.send(stream_msg("AUDIO", pcm(100)))
            await sleep(0.7)
            client.send(CLOSE_MSG)
            await client.event("CLOSED")
            self.assertEqual([e["eventType"] for e in client.events], [])

        return ensureDeferred(go())

    def test_wrong_id_cannot_resume(self):
        async def go():
            _, port = await start_server(self, Path(self.mktemp()))
            owner = await open_client(port)
            owner.send(json.dumps({"eventType": "CONNECT", "id": "a", "resume": True}))
            token = (await owner.event("CONNECTED"))["resumeToken"]
            other = await open_client(port)
            other.send(json.dumps({"eventType": "CONNECT", "id": "b", "resumeToken": token}))
            self.assertEqual((await other.event("ERROR"))["code"], "resume_failed")
            owner.send(CLOSE_MSG)
            await owner.event("CLOSED")
            other.drop()

        return ensureDeferred(go())
