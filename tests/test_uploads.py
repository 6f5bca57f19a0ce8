"""Recordings go to a real S3-protocol server (moto's, on 127.0.0.1) and leave the local disk;
uploads survive the store going away and the daemon restarting, and never land twice."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import treq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from livestream.bucket.objectstore import Location
from livestream.bucket.uploader import collision_names
from tests.support.media import jpeg_frames, pcm, video_facts, wav_bytes, wav_facts
from tests.support.s3 import PREFIX, S3Server
from tests.support.server import start_server
from tests.support.waiting import until
from tests.support.websocket import record


class CollisionNamesTests(SynchronousTestCase):
    def test_own_name_first_then_the_nodes(self) -> None:
        names = collision_names("cam-1_1700000000000", "edge-2")
        self.assertEqual(
            [next(names) for _ in range(3)],
            ["cam-1_1700000000000", "cam-1.edge-2_1700000000000", "cam-1.edge-2_1700000000001"],
        )

    def test_stem_stays_bounded(self) -> None:
        from livestream.library.tree import is_recording_name

        long = "x" * 64 + "_1700000000000"
        for name in list(collision_names(long, "n" * 32))[:3]:
            self.assertTrue(is_recording_name(name), name)


class UploadTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.s3 = S3Server(self)
        self.media = Path(self.mktemp())

    def location(self) -> Location:
        return Location(self.s3.bucket, PREFIX, self.s3.endpoint)

    async def serve(self, **kwargs):
        service, port = await start_server(self, self.media, store=self.location(), **kwargs)
        return service.getServiceNamed("uploader"), service.getServiceNamed("objectstore"), port

    def test_recording_goes_to_the_bucket(self):
        return ensureDeferred(self._recording_goes_to_the_bucket())

    async def _recording_goes_to_the_bucket(self) -> None:
        await self.s3.start()
        uploader, objects, port = await self.serve(node="edge-1")
        frames, chunks = jpeg_frames(30), [pcm(4410, seed=i) for i in range(10)]
        _, connected, closed = await record(port, "cam-1", frames, chunks)
        name = connected["recording"]
        self.assertEqual(closed["recordings"], {"video": f"{name}.mp4", "audio": f"{name}.wav"})
        await until(lambda: uploader.uploaded == 2, what="two uploads")

        self.assertEqual(self.s3.keys(), [f"lib/audio/{name}.wav", f"lib/posters/{name}.jpg",
                                          f"lib/video/{name}.mp4"])  # fmt: skip
        self.assertEqual(list((self.media / "video").iterdir()), [])
        self.assertEqual(list((self.media / "audio").iterdir()), [])
        self.assertEqual(list((self.media / "posters").iterdir()), [])
        poster, meta = self.s3.get(f"lib/posters/{name}.jpg")
        self.assertEqual((poster, meta["recording"]), (frames[15], name))
        self.assertEqual(list((self.media / "uploads").iterdir()), [])
        self.assertEqual((uploader.backlog, uploader.failures), (0, 0))

        audio, meta = self.s3.get(f"lib/audio/{name}.wav")
        self.assertEqual(meta["sha256"], hashlib.sha256(audio).hexdigest())
        self.assertEqual(
            (meta["node"], meta["kind"], meta["duration"], meta["samples"]),
            ("edge-1", "audio", "1.000", "44100"),
        )
        (self.media / "a.wav").write_bytes(audio)
        self.assertEqual(wav_facts(self.media / "a.wav").data, b"".join(chunks))
        video, meta = self.s3.get(f"lib/video/{name}.mp4")
        self.assertEqual(meta["sha256"], hashlib.sha256(video).hexdigest())
        self.assertEqual((meta["duration"], meta["frames"]), ("2.000", "30"))
        (self.media / "v.mp4").write_bytes(video)
        facts = video_facts(self.media / "v.mp4")
        self.assertEqual((facts.frames, facts.codec, facts.faststart), (30, "h264", True))

        # What the routes will use: the library's listing, ranged reads, a presigned URL, delete.
        listed = await objects.listing()
        self.assertEqual(
            sorted((o.kind, o.filename, o.size) for o in listed),
            [("audio", f"{name}.wav", len(audio)), ("posters", f"{name}.jpg", len(poster)),
             ("video", f"{name}.mp4", len(video))],
        )  # fmt: skip
        download = await objects.open("video", f"{name}.mp4", 100, 1099)
        self.assertEqual((download.length, download.total), (1000, len(video)))
        got = b""
        while chunk := await objects.read(download, 300):
            got += chunk
        objects.close(download)
        self.assertEqual(got, video[100:1100])
        self.assertIsNone(await objects.open("video", "nobody_1.mp4"))
        url = await objects.presigned_url("audio", f"{name}.wav", 60)
        response = await treq.get(url, headers={"Range": "bytes=0-43"})
        self.assertEqual((response.code, await response.content()), (206, audio[:44]))
        self.assertTrue(await objects.reachable())
        await objects.delete("audio", f"{name}.wav")
        self.assertIsNone(await objects.head("audio", f"{name}.wav"))
        self.assertEqual(self.s3.keys(), [f"lib/posters/{name}.jpg", f"lib/video/{name}.mp4"])

    def test_upload_waits_out_a_store_that_is_away(self):
        return ensureDeferred(self._upload_waits_out_a_store_that_is_away())

    async def _upload_waits_out_a_store_that_is_away(self) -> None:
        if not self.s3.stoppable:
            raise SkipTest("the store is external: it cannot be stopped and restarted here")
        await self.s3.start()
        uploader, _, port = await self.serve(upload_retry_max=1)
        self.s3.stop()
        chunks = [pcm(4410, seed=i) for i in range(5)]
        _, connected, _ = await record(port, "mic", audio=chunks)
        name = connected["recording"]
        await until(lambda: uploader.failures >= 2, what="failed attempts")
        self.assertTrue((self.media / "audio" / f"{name}.wav").exists())
        self.assertTrue((self.media / "uploads" / f"audio.{name}.json").exists())
        self.assertEqual(uploader.backlog, 1)

        await self.s3.start()  # moto comes back empty: start() makes the bucket again
        await until(lambda: uploader.uploaded == 1, what="the upload after the store returned")
        self.assertEqual(self.s3.keys(), [f"lib/audio/{name}.wav"])
        self.assertEqual(self.s3.versions(f"lib/audio/{name}.wav"), 1)
        stored, _ = self.s3.get(f"lib/audio/{name}.wav")
        self.assertEqual(stored[44:], b"".join(chunks))
        self.assertEqual(list((self.media / "audio").iterdir()), [])
        self.assertEqual(list((self.media / "uploads").iterdir()), [])

    def test_stopped_while_the_store_is_away_resumes_at_the_next_start(self):
        return ensureDeferred(self._resumes_at_the_next_start())

    async def _resumes_at_the_next_start(self) -> None:
        if not self.s3.stoppable:
            raise SkipTest("the store is external: it cannot be stopped and restarted here")
        await self.s3.start()
        self.s3.stop()
        service, port = await start_server(
            self, self.media, store=self.location(), upload_retry_max=1
        )
        _, connected, _ = await record(port, "mic", audio=[pcm(4410)])
        name = connected["recording"]
        await until(lambda: service.getServiceNamed("uploader").failures >= 1, what="a failure")
        started = reactor.seconds()
        await service.stopService()
        self.assertLess(reactor.seconds() - started, 15)
        self.assertTrue((self.media / "audio" / f"{name}.wav").exists())
        marker = json.loads((self.media / "uploads" / f"audio.{name}.json").read_text())
        self.assertEqual((marker["kind"], marker["name"]), ("audio", name))

        await self.s3.start()
        uploader, _, _ = await self.serve()
        await until(lambda: uploader.uploaded == 1, what="the resumed upload")
        self.assertEqual(self.s3.keys(), [f"lib/audio/{name}.wav"])
        self.assertEqual(list((self.media / "uploads").iterdir()), [])

    def test_pending_work_found_at_start_is_uploaded_once(self):
        return ensureDeferred(self._pending_work_found_at_start())

    async def _pending_work_found_at_start(self) -> None:
        """A marker with its file; a finished file without a marker (a tree that was local);
        a file whose upload had completed before the crash; a marker whose file is gone."""
        await self.s3.start()
        for kind in ("audio", "video", "uploads"):
            (self.media / kind).mkdir(parents=True)
        pending = wav_bytes(pcm(1000, seed=1))
        unmarked = wav_bytes(pcm(1000, seed=2))
        done = wav_bytes(pcm(1000, seed=3))
        (self.media / "audio" / "a_1000.wav").write_bytes(pending)
        (self.media / "uploads" / "audio.a_1000.json").write_text(
            json.dumps({"kind": "audio", "name": "a_1000", "node": "test-node"})
        )
        (self.media / "audio" / "b_2000.wav").write_bytes(unmarked)
        (self.media / "audio" / "c_3000.wav").write_bytes(done)
        (self.media / "uploads" / "audio.c_3000.json").write_text("{}")
        self.s3.client.put_object(
            Bucket=self.s3.bucket, Key="lib/audio/c_3000.wav", Body=done,
            Metadata={"node": "test-node", "sha256": hashlib.sha256(done).hexdigest()},
        )  # fmt: skip
        (self.media / "uploads" / "audio.d_4000.json").write_text("{}")

        uploader, _, _ = await self.serve()
        await until(lambda: uploader.uploaded == 3 and uploader.backlog == 0, what="uploads")
        keys = [f"lib/audio/{n}.wav" for n in ("a_1000", "b_2000", "c_3000")]
        self.assertEqual(self.s3.keys(), keys)
        for key in keys:
            self.assertEqual(self.s3.versions(key), 1, key)
        self.assertEqual(self.s3.get(keys[0])[0], pending)
        self.assertEqual(self.s3.get(keys[1])[0], unmarked)
        self.assertEqual(list((self.media / "audio").iterdir()), [])
        self.assertEqual(list((self.media / "uploads").iterdir()), [])
        self.assertEqual(uploader.failures, 0)

    def test_a_name_another_node_took_gets_this_nodes_name(self):
        return ensureDeferred(self._name_taken_by_another_node())

    async def _name_taken_by_another_node(self) -> None:
        await self.s3.start()
        (self.media / "audio").mkdir(parents=True)
        theirs, ours = wav_bytes(pcm(500, seed=1)), wav_bytes(pcm(500, seed=2))
        self.s3.client.put_object(
            Bucket=self.s3.bucket, Key="lib/audio/cam_5000.wav", Body=theirs,
            Metadata={"node": "edge-1", "sha256": hashlib.sha256(theirs).hexdigest()},
        )  # fmt: skip
        (self.media / "audio" / "cam_5000.wav").write_bytes(ours)
        uploader, _, _ = await self.serve(node="edge-2")
        await until(lambda: uploader.uploaded == 1, what="the upload")
        self.assertEqual(
            self.s3.keys(), ["lib/audio/cam.edge-2_5000.wav", "lib/audio/cam_5000.wav"]
        )
        self.assertEqual(self.s3.get("lib/audio/cam_5000.wav")[0], theirs)
        self.assertEqual(self.s3.versions("lib/audio/cam_5000.wav"), 1)
        stored, meta = self.s3.get("lib/audio/cam.edge-2_5000.wav")
        self.assertEqual((stored, meta["node"], meta["recording"]), (ours, "edge-2", "cam_5000"))
