"""The recordings API with ``--store s3://`` against a real S3-protocol server (moto's, on
127.0.0.1): listings, details, downloads (streamed with Range, or redirected to a presigned URL),
posters, delete and retention all act on the bucket; health and metrics report on it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from livestream.bucket.objectstore import Location
from livestream.bucket.sync import INTERVAL
from livestream.ops.retention import RetentionPolicy
from livestream.web.objectfile import CHUNK, parse_range
from tests.support.http import get_json, raw
from tests.support.media import jpeg_frames, pcm, wav_bytes
from tests.support.metrics import scrape
from tests.support.s3 import PREFIX, S3Server
from tests.support.server import start_server
from tests.support.waiting import sleep, until
from tests.support.websocket import record

DAY = 86400


async def http(port: int, method: str, path: str, headers: dict[str, str] | None = None):
    """One request over a fresh connection, redirects not followed; (response, body)."""
    response = await treq.request(
        method, f"http://127.0.0.1:{port}{path}", headers=headers, timeout=10,
        allow_redirects=False, pool=HTTPConnectionPool(reactor, persistent=False),
    )  # fmt: skip
    return response, await response.content()


def header(response, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


class _Reader(Protocol):
    """Sends a request and reads the answer: not at all for ``pause`` seconds, or until
    ``leave_after`` bytes and then drops the connection."""

    def __init__(self, request: bytes, pause: float = 0, leave_after: int | None = None) -> None:
        self.request, self.pause, self.leave_after = request, pause, leave_after
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)
        if self.pause:
            self.transport.pauseProducing()
            reactor.callLater(self.pause, self.transport.resumeProducing)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.leave_after is not None and len(self.received) >= self.leave_after:
            self.leave_after = None
            self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        self.done.callback(self.received)


class ParseRangeTests(SynchronousTestCase):
    def test_ranges(self) -> None:
        cases = {
            None: None, "bytes=0-99": (0, 99), "bytes=100-": (100, 999), "bytes=-10": (990, 999),
            "bytes=990-5000": (990, 999), "bytes=-5000": (0, 999), "bytes=1000-": False,
            "bytes=-0": False, "bytes=5-1": None, "bytes=0-1,5-6": None, "items=0-1": None,
            "bytes=-": None,
        }  # fmt: skip
        for value, want in cases.items():
            self.assertEqual(parse_range(value, 1000), want, value)

    def test_empty_object_satisfies_no_range(self) -> None:
        self.assertIs(parse_range("bytes=0-", 0), False)
        self.assertIs(parse_range("bytes=-1", 0), False)


class BucketApiTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.s3 = S3Server(self)

    def location(self) -> Location:
        return Location(self.s3.bucket, PREFIX, self.s3.endpoint)

    async def serve(self, media: str | None = None, **kwargs):
        """A daemon on the bucket; (service, port)."""
        return await start_server(
            self, Path(media or self.mktemp()), store=self.location(), **kwargs
        )

    async def recorded(self, port: int, service, client_id: str = "cam-1"):
        """A session with video and audio, uploaded and gone from the local disk; its name."""
        uploader = service.getServiceNamed("uploader")
        before = uploader.uploaded
        frames, chunks = jpeg_frames(30), [pcm(4410, seed=i) for i in range(10)]
        _, connected, _ = await record(port, client_id, frames, chunks)
        await until(lambda: uploader.uploaded == before + 2, 20, "the uploads")
        return connected["recording"], frames

    def put(self, key: str, body: bytes, **metadata: str) -> None:
        self.s3.client.put_object(Bucket=self.s3.bucket, Key=f"{PREFIX}/{key}", Body=body,
                                  Metadata=metadata)  # fmt: skip

    async def test_every_node_lists_and_describes_the_bucket(self) -> None:
        await self.s3.start()
        service, port = await self.serve()
        name, frames = await self.recorded(port, service)
        media = service.getServiceNamed("uploader").markers.parent
        self.assertEqual(list((media / "video").iterdir()), [])
        # Another node's recording, stored without the metadata of counts.
        self.put("audio/other_1700000000000.wav", wav_bytes(pcm(100)), node="elsewhere")
        _, other = await self.serve()

        want = {"video": [f"{name}.mp4"], "audio": ["other_1700000000000.wav", f"{name}.wav"]}
        # The first node learns of the other's object at its next listing of the bucket.
        for p in (port, other):
            deadline = reactor.seconds() + 5
            while (listing := await get_json(p, "/recordings")) != want:
                if reactor.seconds() > deadline:
                    break
                await sleep(0.2)
            self.assertEqual(listing, want)
        details = (await get_json(other, "/api/recordings"))["recordings"]
        self.assertEqual(details, (await get_json(port, "/api/recordings"))["recordings"])
        video, audio = self.s3.get(f"{PREFIX}/video/{name}.mp4")[0], self.s3.get(
            f"{PREFIX}/audio/{name}.wav")[0]  # fmt: skip
        created = datetime.fromtimestamp(int(name.rpartition("_")[2]) / 1000, UTC)
        # Newest first; within one recording as the local listing has it, by name, descending.
        self.assertEqual([d["name"] for d in details],
                         [f"{name}.wav", f"{name}.mp4", "other_1700000000000.wav"])  # fmt: skip
        self.assertEqual(details[1], {
            "kind": "video", "name": f"{name}.mp4", "size": len(video),
            "created": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "duration": 2.0, "frames": 30,
            "url": f"/recordings/video/{name}.mp4", "poster": f"/recordings/posters/{name}.jpg",
        })  # fmt: skip
        self.assertEqual((details[0]["size"], details[0]["duration"], details[0]["samples"]),
                         (len(audio), 1.0, 44100))  # fmt: skip
        self.assertEqual((details[2]["duration"], details[2]["samples"]), (None, None))

        response, body = await http(other, "GET", f"/recordings/posters/{name}.jpg")
        self.assertEqual((response.code, header(response, "content-type"), body),
                         (200, "image/jpeg", frames[15]))  # fmt: skip
        response, _ = await http(other, "GET", "/recordings/posters/nobody_1.jpg")
        self.assertEqual(response.code, 404)

    async def test_listings_never_ask_the_bucket(self) -> None:
        """The index learns the bucket in the background: no listing or HEAD per request, and
        what another node adds or deletes shows within a round or two."""
        await self.s3.start()
        for i in range(20):
            self.put(f"audio/n{i:02d}_{1700000000000 + i}.wav", wav_bytes(pcm(100)),
                     duration="0.1", samples="100")  # fmt: skip
        service, port = await self.serve()
        objects = service.getServiceNamed("objectstore")
        asked: list[str] = []
        for method in ("head", "listing"):
            original = getattr(objects, method)

            def counted(*args, _original=original, _method=method):
                asked.append(_method)
                return _original(*args)

            self.patch(objects, method, counted)
        page = await get_json(port, "/api/recordings?limit=5")
        self.assertEqual((page["total"], [e["samples"] for e in page["recordings"]]),
                         (20, [100] * 5))  # fmt: skip
        await sleep(2 * INTERVAL)
        asked.clear()
        while page["next"]:
            page = await get_json(port, f"/api/recordings?limit=5&cursor={page['next']}")
            self.assertEqual(len((await get_json(port, "/recordings"))["audio"]), 20)
        self.assertLessEqual(asked.count("listing"), 2)  # the background rounds meanwhile
        self.assertEqual(asked.count("head"), 0)
        # Another node deletes one and stores one.
        self.s3.client.delete_object(
            Bucket=self.s3.bucket, Key=f"{PREFIX}/audio/n00_1700000000000.wav"
        )
        self.put("audio/late_1700000009999.wav", wav_bytes(pcm(200)), duration="0.2",
                 samples="200")  # fmt: skip
        await sleep(2 * INTERVAL + 0.5)
        names = (await get_json(port, "/recordings"))["audio"]
        self.assertEqual((len(names), names[0], names[-1]),
                         (20, "n01_1700000000001.wav", "late_1700000009999.wav"))  # fmt: skip
        late = await get_json(port, "/api/recordings/audio/late_1700000009999.wav")
        self.assertEqual((late["samples"], late["location"]), (200, "bucket"))

    async def test_downloads_stream_from_the_bucket_with_ranges(self) -> None:
        await self.s3.start()
        service, port = await self.serve()
        name, _ = await self.recorded(port, service)
        video = self.s3.get(f"{PREFIX}/video/{name}.mp4")[0]
        big = wav_bytes(pcm(CHUNK, seed=7))  # two chunks and a bit: several reads
        self.put("audio/big_1700000000000.wav", big)
        for path, data, kind in (
            (f"/recordings/video/{name}.mp4", video, "video/mp4"),
            ("/recordings/audio/big_1700000000000.wav", big, "audio/wav"),
        ):
            response, body = await http(port, "GET", path)
            self.assertEqual((response.code, body), (200, data))
            self.assertEqual(header(response, "content-type"), kind)
            self.assertEqual(header(response, "accept-ranges"), "bytes")
            self.assertEqual(response.length, len(data))
            size = len(data)
            a, b = (CHUNK - 10, CHUNK + 9) if size > CHUNK else (size // 3, size // 2)
            for asked, first, last in (
                ("bytes=0-99", 0, 99),
                (f"bytes={a}-{b}", a, b),
                ("bytes=-300", size - 300, size - 1),
            ):
                response, body = await http(port, "GET", path, {"Range": asked})
                self.assertEqual((response.code, body), (206, data[first : last + 1]), asked)
                self.assertEqual(header(response, "content-range"),
                                 f"bytes {first}-{last}/{size}")  # fmt: skip
            response, body = await http(port, "GET", path, {"Range": f"bytes={size}-"})
            self.assertEqual((response.code, body), (416, b""))
            self.assertEqual(header(response, "content-range"), f"bytes */{size}")
            # Not UTF-8: a Range not understood, so the whole object (not a 500).
            response, body = await http(port, "GET", path, {b"Range": [b"bytes=\xff-"]})
            self.assertEqual((response.code, body), (200, data))
            status, headers, body = await raw(port, "HEAD", path)
            self.assertEqual((status, body, int(headers["content-length"])), (200, b"", size))
            self.assertEqual((headers["content-type"], headers["accept-ranges"]), (kind, "bytes"))
            etag = headers["etag"]
            response, body = await http(port, "GET", path, {"If-None-Match": etag})
            self.assertEqual((response.code, body), (304, b""))
        response, _ = await http(port, "GET", "/recordings/video/nobody_1.mp4")
        self.assertEqual(response.code, 404)

    async def test_a_slow_client_and_a_client_that_leaves(self) -> None:
        """A client that stops reading gets every byte when it reads again (the server pauses
        instead of buffering); one that leaves mid-body does not stop the server."""
        await self.s3.start()
        _, port = await self.serve()
        big = bytes(range(256)) * (8 * CHUNK // 256)  # 2 MiB: more than the socket buffers
        self.put("audio/big_1700000000000.wav", big)
        request = (b"GET /recordings/audio/big_1700000000000.wav HTTP/1.1\r\n"
                   b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")  # fmt: skip
        slow = _Reader(request, pause=1.0)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), slow)
        received = await slow.done
        self.assertTrue(received.startswith(b"HTTP/1.1 200 "), received[:40])
        self.assertEqual(received.partition(b"\r\n\r\n")[2], big)

        leaving = _Reader(request, leave_after=CHUNK)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), leaving)
        self.assertLess(len(await leaving.done), len(big))
        response, body = await http(port, "GET", "/recordings/audio/big_1700000000000.wav",
                                    {"Range": "bytes=-10"})  # fmt: skip
        self.assertEqual((response.code, body), (206, big[-10:]))

    async def test_presign_redirects_to_the_store(self) -> None:
        await self.s3.start()
        service, port = await self.serve(presign=60)
        name, _ = await self.recorded(port, service)
        audio = self.s3.get(f"{PREFIX}/audio/{name}.wav")[0]
        path = f"/recordings/audio/{name}.wav"
        response, _ = await http(port, "GET", path)
        self.assertEqual(response.code, 307)
        url = header(response, "location")
        self.assertTrue(url.startswith(self.s3.endpoint), url)
        stored = await treq.get(url)
        self.assertEqual((stored.code, await stored.content()), (200, audio))
        stored = await treq.get(url, headers={"Range": "bytes=44-143"})
        self.assertEqual((stored.code, await stored.content()), (206, audio[44:144]))
        # HEAD is answered here: a presigned URL is good for one method only.
        status, headers, body = await raw(port, "HEAD", path)
        self.assertEqual((status, body, int(headers["content-length"])), (200, b"", len(audio)))

    async def test_delete_removes_the_objects_and_the_poster(self) -> None:
        await self.s3.start()
        service, port = await self.serve()
        name, _ = await self.recorded(port, service)
        _, other = await self.serve()
        await get_json(other, "/api/recordings")  # cached there: the delete must still show
        response, _ = await http(port, "DELETE", f"/recordings/video/{name}.mp4")
        self.assertEqual(response.code, 204)
        self.assertEqual(self.s3.keys(), [f"{PREFIX}/audio/{name}.wav"])
        # The other node's next listing of the bucket has begun after the delete by now.
        await sleep(2 * INTERVAL + 0.5)
        for p in (port, other):
            self.assertEqual(await get_json(p, "/recordings"),
                             {"video": [], "audio": [f"{name}.wav"]})  # fmt: skip
            names = [d["name"] for d in (await get_json(p, "/api/recordings"))["recordings"]]
            self.assertEqual(names, [f"{name}.wav"])
        for path in (f"/recordings/video/{name}.mp4", f"/recordings/posters/{name}.jpg"):
            response, _ = await http(port, "GET", path)
            self.assertEqual(response.code, 404, path)
        response, _ = await http(other, "DELETE", f"/recordings/video/{name}")
        self.assertEqual(response.code, 404)
        response, _ = await http(other, "DELETE", f"/recordings/audio/{name}")
        self.assertEqual((response.code, self.s3.keys()), (204, []))

    async def test_delete_calls_off_an_upload_owed(self) -> None:
        if not self.s3.stoppable:
            raise SkipTest("the store is external: it cannot be stopped and restarted here")
        await self.s3.start()
        self.s3.stop()
        service, port = await self.serve()
        uploader = service.getServiceNamed("uploader")
        _, connected, _ = await record(port, "mic", audio=[pcm(4410)])
        name = connected["recording"]
        # After the third failure the next try is 4 s away: the store comes back meanwhile.
        await until(lambda: uploader.failures >= 3, 20, "three failed uploads")
        await self.s3.start()
        response, _ = await http(port, "DELETE", f"/recordings/audio/{name}.wav")
        self.assertEqual(response.code, 204)
        media = uploader.markers.parent
        self.assertEqual((list((media / "audio").iterdir()), list(uploader.markers.iterdir())),
                         ([], []))  # fmt: skip
        await until(lambda: uploader.backlog == 0, 10, "the upload called off")
        self.assertEqual((self.s3.keys(), uploader.uploaded), ([], 0))

    async def test_retention_deletes_the_oldest_objects(self) -> None:
        await self.s3.start()
        now_ms = int(reactor.seconds() * 1000)
        self.put(f"audio/old_{now_ms - 40 * DAY * 1000}.wav", b"a" * 100)
        self.put(f"audio/b_{now_ms - 3000}.wav", b"b" * 1000)
        self.put(f"audio/c_{now_ms - 2000}.wav", b"c" * 1000)
        self.put(f"video/v_{now_ms - 1000}.mp4", b"v" * 1000)
        self.put(f"posters/v_{now_ms - 1000}.jpg", b"p" * 100)
        await self.serve(retention=RetentionPolicy(days=30, total_bytes=2500))
        want = [f"{PREFIX}/audio/c_{now_ms - 2000}.wav", f"{PREFIX}/posters/v_{now_ms - 1000}.jpg",
                f"{PREFIX}/video/v_{now_ms - 1000}.mp4"]  # fmt: skip
        await until(lambda: self.s3.keys() == want, 10, f"only {want} left")

    async def test_health_and_metrics_report_the_store(self) -> None:
        if not self.s3.stoppable:
            raise SkipTest("the store is external: it cannot be stopped and restarted here")
        await self.s3.start()
        service, port = await self.serve()
        watch = service.getServiceNamed("storewatch")
        await until(lambda: watch.reachable is True, 10, "the first check")
        health = await get_json(port, "/healthz")
        self.assertEqual(health["status"], "ok")
        self.assertEqual(
            {
                k: health["checks"][k]
                for k in ("store_reachable", "upload_backlog", "upload_failures")
            },
            {"store_reachable": True, "upload_backlog": 0, "upload_failures": 0},
        )

        self.s3.stop()
        _, connected, _ = await record(port, "mic", audio=[pcm(4410)])
        name = connected["recording"]
        uploader = service.getServiceNamed("uploader")
        await until(lambda: uploader.failures >= 1, 20, "a failed upload")
        self.assertFalse(await watch.check())  # what the next 10-second check finds
        response, body = await http(port, "GET", "/healthz")
        health = json.loads(body)
        self.assertEqual((response.code, health["status"]), (200, "degraded"))
        self.assertEqual((health["checks"]["store_reachable"], health["checks"]["upload_backlog"]),
                         (False, 1))  # fmt: skip
        self.assertGreaterEqual(health["checks"]["upload_failures"], 1)
        samples = await scrape(port)
        self.assertEqual(samples[("livestream_upload_backlog", ())], 1)
        self.assertEqual(samples[("livestream_store_reachable", ())], 0)
        self.assertEqual(samples[("livestream_uploads_total", ())], 0)
        self.assertGreaterEqual(samples[("livestream_upload_failures_total", ())], 1)
        # The listing is the index's, answered without the bucket; the file still here is in it
        # and served without it.
        response, body = await http(port, "GET", "/recordings")
        self.assertEqual((response.code, json.loads(body)["audio"]), (200, [f"{name}.wav"]))
        response, body = await http(port, "GET", f"/recordings/audio/{name}.wav")
        self.assertEqual((response.code, body[44:]), (200, pcm(4410)))
