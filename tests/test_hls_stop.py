"""A live session's HLS at the daemon's stop: the streams kept for players after their session
ended are closed with the daemon, not left waiting on the reactor for their linger time."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import TestCase

from livestream.hls import streams
from tests.support.http import get
from tests.support.media import jpeg_frames, pcm
from tests.support.server import start_server
from tests.support.waiting import until
from tests.support.websocket import CLOSE_MSG, connect_msg, open_client


class StopTests(TestCase):
    timeout = 60

    async def test_a_published_stream_is_closed_at_stop(self) -> None:
        service, port = await start_server(self, Path(self.mktemp()).absolute())
        client = await open_client(port)
        client.send(connect_msg("camera"))
        name = (await client.event("CONNECTED"))["recording"]
        for i, frame in enumerate(jpeg_frames(30)):
            client.send_binary(b"\x01" + frame)
            client.send_binary(b"\x02" + pcm(2940, seed=i))
        response = await get(port, f"/live/{name}/index.m3u8")
        self.assertEqual(response.code, 200)
        await response.content()
        client.send(CLOSE_MSG)
        await client.event("CLOSED", timeout=30)
        live = service.getServiceNamed("live")
        stream = live.find(name)
        await until(lambda: stream.published is not None, 10, "the recording published")
        # Kept for players a while yet...
        self.assertEqual(len(live), 1)
        self.assertGreater(streams.LINGER, 5)
        await service.stopService()
        # ...but not past the daemon's stop (trial fails a test that leaves a timer behind).
        self.assertEqual(len(live), 0)
