"""Live HLS of a real daemon, played by a player nobody here wrote: ffmpeg's HLS demuxer reads
the playlist while the session records, and the frames it decodes are the numbered frames
sent (bench.numbered), in order, to the last. Then the LL-HLS rules over real HTTP: blocking
reloads and preload hints, their bounds, the end of a session, tokens, Origins and CORS.

Players reading the playlist run ffmpeg in a thread (a bounded subprocess); a feeder sends
its frames at the daemon's rate from the reactor, so the session is live while it is read.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from bench import numbered
from bench.presets import make_frames
from livestream.auth.access import Access
from livestream.auth.tokens import Verifier, mint
from tests.support.feeders import FPS, Feeder, feed_h264, feed_jpeg
from tests.support.http import get, raw
from tests.support.logs import Logged
from tests.support.media import ffmpeg_exe, video_facts
from tests.support.metrics import scrape
from tests.support.processes import children, kill
from tests.support.server import start_server
from tests.support.websocket import CLOSE_MSG, connect_msg, open_client

SECRET = b"0123456789abcdef0123456789abcdef-hls"
PLAYLIST = "application/vnd.apple.mpegurl"


def play(port: int, name: str, query: str = "", seconds: float = 60) -> Deferred[list[int]]:
    """ffmpeg's HLS demuxer plays the live session to its end: the numbers of its frames."""
    url = f"http://127.0.0.1:{port}/live/{name}/index.m3u8{query}"
    return deferToThread(numbered.decoded_numbers, ffmpeg_exe(), url, timeout=seconds)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def lines(body: bytes) -> list[str]:
    return body.decode("ascii").splitlines()


def newest(playlist: list[str]) -> tuple[int, int, int]:
    """``(msn, parts, hint)``: the segment being made, its parts so far, the hinted part."""
    first = int(next(x for x in playlist if x.startswith("#EXT-X-MEDIA-SEQUENCE:")).split(":")[1])
    ends = [i for i, x in enumerate(playlist) if x.startswith("#EXTINF:")]
    complete = len(ends)
    tail = playlist[ends[-1] + 1 :] if ends else playlist
    parts = sum(1 for x in tail if x.startswith("#EXT-X-PART:"))
    hint = re.search(r"p(\d+)\.m4s", playlist[-1])
    return first + complete, parts, int(hint.group(1)) if hint else -1


class HlsTestCase(TestCase):
    timeout = 90

    async def serve(self, **kwargs) -> int:
        self.media = Path(self.mktemp()).absolute()
        self.service, port = await start_server(self, self.media, fps=FPS, **kwargs)
        return port

    async def jpeg(self, port: int, count: int, frames=None, **kwargs) -> Feeder:
        """``count`` frames, numbered unless ``frames`` are given, then CLOSE."""
        frames = frames or numbered.jpeg_frames(ffmpeg_exe(), count)
        return await feed_jpeg(self, port, frames, count=count, **kwargs)

    async def h264(self, port: int, count: int, gop: int) -> Feeder:
        """``count`` numbered frames as H.264, a keyframe every ``gop``, and Opus."""
        units = numbered.h264_units(ffmpeg_exe(), count, gop=gop)
        return await feed_h264(self, port, units, count=count)

    async def playlist(self, port: int, name: str, which: str = "video.m3u8", query: str = ""):
        response = await get(port, f"/live/{name}/{which}{query}")
        return response, await response.content()


class PlayedByFfmpegTests(HlsTestCase):
    async def test_a_jpeg_session_with_its_sound(self) -> None:
        """Joined live a moment after the first frame: every frame from there on, in order,
        to the last one sent; the sound too (AAC, --mux-audio)."""
        port = await self.serve(mux_audio=True)
        publisher = await self.jpeg(port, 6 * FPS)
        response, body = await self.playlist(port, publisher.name, "index.m3u8")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), [PLAYLIST])
        text = body.decode("ascii")
        self.assertIn('CODECS="avc1.', text)
        self.assertIn(',mp4a.40.2"', text)
        self.assertIn('URI="audio.m3u8"', text)
        self.assertLess(len(publisher.sent_at), 2 * FPS, "the playlist came while live")
        played = await play(port, publisher.name)
        self.assertLessEqual(played[0], 2 * FPS)
        self.assertEqual(played, list(range(played[0], 6 * FPS)), "in order, each once, all")
        self.assertEqual((await get(port, f"/live/{publisher.name}/audio.m3u8")).code, 200)

    async def test_an_h264_session_as_sent(self) -> None:
        """Passthrough: the client's own frames (a keyframe each second), and its Opus."""
        port = await self.serve()
        publisher = await self.h264(port, 5 * FPS, gop=FPS)
        _, body = await self.playlist(port, publisher.name, "index.m3u8")
        self.assertIn(',opus"', body.decode("ascii"))
        played = await play(port, publisher.name)
        self.assertEqual(played, list(range(played[0], 5 * FPS)))
        self.assertLessEqual(played[0], 2 * FPS)

    async def test_an_encoder_replaced_while_watched(self) -> None:
        """The encoder is killed mid-session: its successor's piece follows in the playlist at
        its place on the timeline (moved decode times), and the player sees no break."""
        port = await self.serve()
        publisher = await self.jpeg(port, 6 * FPS)
        await self.playlist(port, publisher.name, "index.m3u8")
        playing = play(port, publisher.name)
        await deferLater(reactor, 2.0, lambda: None)
        encoders = [pid for pid in children(os.getpid()) if b"image2pipe" in cmdline(pid)]
        self.assertEqual(len(encoders), 1)
        kill(encoders[0])
        played = await playing
        self.assertEqual(played, list(range(played[0], 6 * FPS)))


class LowLatencyTests(HlsTestCase):
    async def test_blocking_reload_and_preload_hint(self) -> None:
        port = await self.serve()
        publisher = await self.jpeg(port, 8 * FPS)
        name = publisher.name
        response, body = await self.playlist(port, name)
        playlist = lines(body)
        self.assertIn("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600", playlist)
        self.assertIn("#EXT-X-PART-INF:PART-TARGET=0.200", playlist)
        msn, parts, hint = newest(playlist)
        # The next part is asked for before it exists: the answer waits for it, no longer.
        asked = time.monotonic()
        response, body = await self.playlist(port, name, query=f"?_HLS_msn={msn}&_HLS_part={parts}")
        waited = time.monotonic() - asked
        self.assertEqual(response.code, 200)
        self.assertIn(
            f"p{hint}.m4s", "".join(x for x in lines(body) if x.startswith("#EXT-X-PART:"))
        )
        self.assertLess(waited, 1.0)
        # The preload hint's part: its GET waits until it is whole, and is what it stays.
        _, after, hint = newest(lines(body))
        asked = time.monotonic()
        early = await get(port, f"/live/{name}/video/p{hint}.m4s")
        waited = time.monotonic() - asked
        self.assertEqual(early.code, 200)
        data = await early.content()
        self.assertEqual(data[4:8], b"moof")
        self.assertEqual(early.length, len(data), "sent with its length, not chunked")
        later = await get(port, f"/live/{name}/video/p{hint}.m4s")
        self.assertEqual(await later.content(), data)
        self.assertGreater(waited, 0.01)
        self.assertLess(waited, 1.0)
        # A segment is its parts.
        msn, _, _ = newest(lines((await self.playlist(port, name))[1]))
        segment = await get(port, f"/live/{name}/video/s{msn - 1}.m4s")
        self.assertEqual(segment.code, 200)
        self.assertEqual((await segment.content()).count(b"moof"), 5)
        init = await get(port, f"/live/{name}/video/init0.mp4")
        self.assertEqual((await init.content())[4:8], b"ftyp")
        samples = await scrape(port)
        answered = {k: samples[("livestream_hls_responses_total", (("kind", k),))]
                    for k in ("playlist", "part", "segment", "init")}  # fmt: skip
        self.assertEqual(answered, {"playlist": 3, "part": 2, "segment": 1, "init": 1})
        self.assertEqual(samples[("livestream_hls_streams", ())], 1)
        self.assertEqual(samples[("livestream_hls_waiting_requests", ())], 0)
        self.assertGreater(samples[("livestream_hls_bytes_served_total", ())], len(data) * 2)

    async def test_what_is_refused(self) -> None:
        port = await self.serve()
        publisher = await self.jpeg(port, 8 * FPS)
        name = publisher.name
        _, body = await self.playlist(port, name)
        msn, _, _ = newest(lines(body))
        for query, message in (
            (f"?_HLS_msn={msn + 3}", "_HLS_msn is more than two segments ahead"),
            ("?_HLS_msn=x", "_HLS_msn must be a whole number, not 'x'"),
            ("?_HLS_part=1", "_HLS_part needs _HLS_msn"),
            ("?_HLS_msn=1&_HLS_part=-1", "_HLS_part must be a whole number, not '-1'"),
        ):
            response, body = await self.playlist(port, name, query=query)
            self.assertEqual(response.code, 400, query)
            self.assertEqual(json.loads(body), {"error": "bad_query", "message": message})
        for path in (
            "/live/nobody_1/index.m3u8",
            f"/live/{name}/other.m3u8",
            f"/live/{name}/video/p1.mp4",
            f"/live/{name}/video/x1.m4s",
            f"/live/{name}/subtitles/p1.m4s",
            f"/live/{name}/video/p99999.m4s",
        ):
            response = await get(port, path)
            self.assertEqual(response.code, 404, path)
            self.assertEqual((await response.json())["error"], "not_found")

    async def test_a_wait_is_bounded_in_time(self) -> None:
        """A session that stops sending: a request for its next part gets a 503 after three
        target durations, not never."""
        port = await self.serve()
        # A second's frames and a few more: the first segment is whole (the next keyframe came).
        publisher = await self.jpeg(port, FPS + 8, close=False)
        await publisher.sent
        name = publisher.name
        await deferLater(reactor, 0.5, lambda: None)
        response, body = await self.playlist(port, name)
        self.assertEqual(response.code, 200, body)
        msn, parts, hint = newest(lines(body))
        asked = time.monotonic()
        response, body = await self.playlist(
            port, name, query=f"?_HLS_msn={msn}&_HLS_part={parts + 1}"
        )
        waited = time.monotonic() - asked
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["1"])
        self.assertEqual(json.loads(body)["error"], "not_ready")
        self.assertTrue(2.9 < waited < 4.5, waited)
        self.assertEqual((await scrape(port))[("livestream_hls_wait_timeouts_total", ())], 1)

    async def test_the_end_then_the_recording(self) -> None:
        """ENDLIST once the session ended; the multivariant URL then points to the recording,
        while the media playlists and parts still serve the players finishing them."""
        port = await self.serve()
        publisher = await self.jpeg(port, 2 * FPS)
        name = publisher.name
        _, body = await self.playlist(port, name)
        self.assertNotIn("#EXT-X-ENDLIST", lines(body))
        closed = await publisher.ended()
        self.assertEqual(closed["recordings"]["video"], f"{name}.mp4")
        status, headers, _ = await raw(port, "GET", f"/live/{name}/index.m3u8")
        self.assertEqual(status, 303)
        self.assertEqual(headers["location"], f"/recordings/video/{name}.mp4")
        response, body = await self.playlist(port, name)
        playlist = lines(body)
        self.assertEqual(response.code, 200)
        self.assertEqual(playlist[-1], "#EXT-X-ENDLIST")
        self.assertFalse(any("PRELOAD-HINT" in x for x in playlist))
        self.assertEqual(sum(1 for x in playlist if x.startswith("#EXTINF:")), 2)
        self.assertEqual(os.listdir(self.media / "temp"), [])
        part = await get(port, f"/live/{name}/video/p0.m4s")
        self.assertEqual(part.code, 200, "served from the file held open")
        # A blocking reload of an ended playlist answers at once.
        response, _ = await self.playlist(port, name, query="?_HLS_msn=2&_HLS_part=0")
        self.assertEqual(response.code, 200)

    async def test_named_where_a_client_looks(self) -> None:
        port = await self.serve()
        client = await open_client(port)
        client.send(connect_msg("cam"))
        connected = await client.event("CONNECTED")
        name = connected["recording"]
        self.assertEqual(connected["playlist"], f"/live/{name}/index.m3u8")
        sessions = (await (await get(port, "/api/sessions")).json())["sessions"]
        self.assertEqual([s["playlist"] for s in sessions], [f"/live/{name}/index.m3u8"])
        client.send(CLOSE_MSG)
        await client.event("CLOSED")

    async def test_an_encoded_client_is_asked_for_keyframes(self) -> None:
        """A client that sends one keyframe only: segments are cut before they would round
        past the target (and are not independent), and the client is asked for a keyframe."""
        port = await self.serve()
        publisher = await self.h264(port, 6 * FPS, gop=1000)
        name = publisher.name
        await self.playlist(port, name, "index.m3u8")
        request = await publisher.publisher.event("KEYFRAME_REQUEST", timeout=10)
        self.assertEqual(request["reason"], "hls")
        await publisher.sent
        await deferLater(reactor, 0.5, lambda: None)
        _, body = await self.playlist(port, name)
        playlist = lines(body)
        durations = [float(x[8:-1]) for x in playlist if x.startswith("#EXTINF:")]
        self.assertGreaterEqual(len(durations), 2)
        self.assertTrue(all(d < 2.5 for d in durations), durations)
        self.assertNotIn("#EXT-X-INDEPENDENT-SEGMENTS", playlist)


class SlowPlayerTests(HlsTestCase):
    async def test_a_player_that_stops_reading(self) -> None:
        """A player that asks for a hundred segments on one connection and reads none: it is
        answered only as its connection takes the bytes (one answer at a time, a buffer's worth
        of it), and the recording and another player go on as if it were not there."""
        port = await self.serve()
        # Camera-like frames (noise): segments of a few hundred KB, too big for a hundred of
        # them to hide in the kernel's socket buffers.
        where = Path(self.mktemp())
        where.mkdir()
        made = make_frames(ffmpeg_exe(), where, 6 * FPS, "640x480", "testsrc2")
        frames = tuple(p.read_bytes() for p in made)
        publisher = await self.jpeg(port, 6 * FPS, frames)
        name = publisher.name
        await self.playlist(port, name)
        segment = len(await (await get(port, f"/live/{name}/video/s0.m4s")).content())
        stalled = socket.socket()
        self.addCleanup(stalled.close)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        ask = f"GET /live/{name}/video/s0.m4s HTTP/1.1\r\nHost: x\r\n\r\n"
        stalled.sendall(ask.encode() * 100)
        await deferLater(reactor, 2.0, lambda: None)
        samples = await scrape(port)
        answered = samples[("livestream_hls_responses_total", (("kind", "segment"),))] - 1
        # What the kernel may hold for it (its send buffer, at most), and one buffer of ours.
        wmem = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
        self.assertLessEqual((answered - 1) * segment, wmem, (answered, segment))
        self.assertLess(answered, 100)
        played = await play(port, name)
        # Not numbered frames: counted (from its joining to the end).
        self.assertGreaterEqual(len(played), 4 * FPS, "the other player played on")
        closed = await publisher.ended()
        facts = video_facts(self.media / "video" / closed["recordings"]["video"])
        self.assertEqual(facts.frames, 6 * FPS)


class AccessTests(HlsTestCase):
    async def test_tokens(self) -> None:
        """The read scope, in a header or the query; a query's token rides on every URI of the
        playlists and is blanked in the access log."""
        logged = Logged(self)
        port = await self.serve(access=Access(Verifier(SECRET)))
        publisher = await self.jpeg(port, 6 * FPS, token=mint(SECRET, ("publish",), 300))
        name = publisher.name
        response = await get(port, f"/live/{name}/index.m3u8")
        self.assertEqual(response.code, 401)
        publish_only = mint(SECRET, ("publish",), 300)
        response = await get(port, f"/live/{name}/index.m3u8?token={publish_only}")
        self.assertEqual(response.code, 403)
        reader = mint(SECRET, ("read",), 300)
        response = await get(
            port, f"/live/{name}/video.m3u8", {"Authorization": f"Bearer {reader}"}
        )
        self.assertEqual(response.code, 200)
        _, body = await self.playlist(port, name, query=f"?token={reader}")
        uris = re.findall(r'URI="([^"]+)"', body.decode()) + [
            x for x in lines(body) if not x.startswith("#")
        ]
        self.assertTrue(uris)
        self.assertTrue(all(u.endswith(f"?token={reader}") for u in uris), uris)
        played = await play(port, name, f"?token={reader}")
        self.assertEqual(played, list(range(played[0], 6 * FPS)))
        requests = logged.matching(f"/live/{name}/")
        self.assertTrue(requests)
        self.assertEqual([x for x in logged.lines if reader in x], [])
        self.assertTrue(logged.matching("token=-", f"/live/{name}/video/"))

    async def test_origins_and_cors(self) -> None:
        port = await self.serve(access=Access(origins=("https://app.example.com:443",)))
        publisher = await self.jpeg(port, 4 * FPS)
        path = f"/live/{publisher.name}/video.m3u8"
        response = await get(port, path, {"Origin": "https://app.example.com"})
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("access-control-allow-origin"),
            ["https://app.example.com"],
        )
        self.assertEqual(response.headers.getRawHeaders("vary"), ["Origin"])
        response = await get(port, path, {"Origin": "https://elsewhere.example.com"})
        self.assertEqual(response.code, 403)
        self.assertIsNone(response.headers.getRawHeaders("access-control-allow-origin"))
        plain = await get(port, path)
        self.assertEqual(plain.code, 200, "no Origin: not a browser, not checked")
        status, headers, _ = await raw(
            port, "OPTIONS", f"/live/{publisher.name}/video/p0.m4s",
            "Origin: https://app.example.com\r\nAccess-Control-Request-Method: GET\r\n"
            "Access-Control-Request-Headers: authorization\r\n",
        )  # fmt: skip
        self.assertEqual(status, 204)
        self.assertEqual(headers["access-control-allow-origin"], "https://app.example.com")
        self.assertEqual(headers["access-control-allow-headers"], "authorization")
        self.assertIn("GET", headers["access-control-allow-methods"])
