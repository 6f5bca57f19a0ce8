"""A bounded load: dozens of concurrent clients, every frame and sample accounted for."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import DeferredList
from twisted.trial.unittest import TestCase

from tests.support.http import get_json
from tests.support.media import jpeg_frames, pcm, video_facts, wav_facts
from tests.support.server import start_server
from tests.support.waiting import sleep
from tests.support.websocket import CLOSE_MSG, connect_msg, open_client, stream_msg

CLIENTS = 32
FRAMES = 30


class LoadTests(TestCase):
    timeout = 180

    async def test_dozens_of_concurrent_sessions_lose_nothing(self) -> None:
        """Each client sends its own frames and samples, interleaved with all the others; some
        close, some vanish, and the rest are still live when the daemon stops."""
        media = Path(self.mktemp()).absolute()
        service, port = await start_server(self, media)
        frames = jpeg_frames(FRAMES, "160x120")
        clients = [await open_client(port) for _ in range(CLIENTS)]
        for i, client in enumerate(clients):
            client.send(connect_msg(f"load-{i}"))
        names = [(await c.event("CONNECTED"))["recording"] for c in clients]
        for n in range(FRAMES):
            for i, client in enumerate(clients):
                client.send(stream_msg("VIDEO", frames[(n + i) % FRAMES]))
                client.send(stream_msg("AUDIO", pcm(1470, seed=i * 1000 + n)))
            await sleep(0.005)
        ending = {"close": clients[0::3], "vanish": clients[1::3], "shutdown": clients[2::3]}
        for client in ending["close"]:
            client.send(CLOSE_MSG)
        for client in ending["vanish"]:
            client.vanish()
        await DeferredList([c.event("CLOSED", timeout=120) for c in ending["close"]])
        await service.stopService()
        listing = await get_json_after_stop(self, media)
        self.assertEqual(len(listing["video"]), CLIENTS)
        self.assertEqual(len(listing["audio"]), CLIENTS)
        for i, name in enumerate(names):
            video = video_facts(media / "video" / f"{name}.mp4")
            self.assertEqual((video.frames, video.pix_fmt), (FRAMES, "yuv420p"), name)
            wav = wav_facts(media / "audio" / f"{name}.wav")
            expected = b"".join(pcm(1470, seed=i * 1000 + n) for n in range(FRAMES))
            self.assertEqual(wav.data, expected, name)
        self.assertEqual(list((media / "temp").iterdir()), [])


async def get_json_after_stop(testcase: TestCase, media: Path) -> dict:
    """The listing the next daemon on this media tree would serve."""
    _, port = await start_server(testcase, media)
    return await get_json(port, "/recordings")
