"""The log of a recording: one structured event at its start and one at its end, with named
fields an operator (or a log shipper) can filter on; a client's refusals once each."""

from __future__ import annotations

from pathlib import Path

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.media import jpeg_frames, pcm
from tests.support.server import start_server
from tests.support.websocket import CLOSE_MSG, connect_msg, open_client, stream_msg


class SessionLogTests(TestCase):
    timeout = 60

    def capture(self) -> list[dict]:
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        return logged

    async def test_start_end_and_refusals_carry_their_fields(self) -> None:
        _, port = await start_server(self, Path(self.mktemp()))
        logged = self.capture()
        frames = jpeg_frames(6)
        audio = [pcm(1000, seed=i) for i in range(4)]
        client = await open_client(port)
        client.send(connect_msg("cam-log"))
        connected = await client.event("CONNECTED")
        for frame in frames:
            client.send(stream_msg("VIDEO", frame))
        for chunk in audio:
            client.send(stream_msg("AUDIO", chunk))
        for _ in range(3):
            client.send("{broken")
        for _ in range(3):
            await client.event("ERROR")
        client.send(CLOSE_MSG)
        closed = await client.event("CLOSED")
        await client.closed

        (started,) = [e for e in logged if e.get("session_event") == "started"]
        self.assertEqual((started["id"], started["name"]), ("cam-log", connected["recording"]))
        self.assertTrue(started["peer"].startswith("tcp4:127.0.0.1:"), started["peer"])
        (ended,) = [e for e in logged if e.get("session_event") == "ended"]
        self.assertEqual(ended["peer"], started["peer"])
        self.assertEqual(
            {k: ended[k] for k in ("id", "name", "reason", "result", "frames", "samples", "bytes")},
            {"id": "cam-log", "name": connected["recording"], "reason": "close", "result": "ok",
             "frames": 6, "samples": 4000,
             "bytes": sum(map(len, frames)) + sum(map(len, audio))},
        )  # fmt: skip
        self.assertGreater(ended["seconds"], 0)
        self.assertEqual({"video": ended["video"], "audio": ended["audio"]}, closed["recordings"])

        refusals = [e for e in logged if e.get("log_format", "").startswith("refused a message")]
        self.assertEqual([(e["peer"], e["code"]) for e in refusals],
                         [(started["peer"], "invalid_json")])  # fmt: skip
        (tally,) = [e for e in logged if "further refusals" in e.get("log_format", "")]
        self.assertEqual(tally["repeated"], {"invalid_json": 2})
