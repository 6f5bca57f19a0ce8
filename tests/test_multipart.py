"""Recordings larger than the multipart threshold: they go up in parts, each checked by the store
against its SHA-256; an upload cut off mid-way by the store going away is retried until it
lands whole, once; a daemon stopped mid-upload waits for it, or abandons it (the store discards
its parts) and uploads it at its next start.

The files are real WAVs of noise placed in the media tree, as a recording finished by an earlier
run; the uploader takes them at its start. moto's server is on 127.0.0.1 (tests/support/s3.py).
"""

from __future__ import annotations

import base64
import hashlib
import random
import signal
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SkipTest, TestCase

from livestream.bucket.objectstore import MULTIPART_THRESHOLD, PART_SIZE, Location, MiB, ObjectStore
from livestream.bucket.uploader import Uploader
from livestream.library.tree import MediaTree
from livestream.sessions.events import Events
from tests.support.media import wav_bytes
from tests.support.s3 import PREFIX, S3Server
from tests.support.server import start_server
from tests.support.waiting import sleep, until

NAME = "mic_1700000000000"
KEY = f"{PREFIX}/audio/{NAME}.wav"


def noise_wav(size: int, seed: int) -> bytes:
    """A WAV of ``size`` bytes of samples, random so no two parts are alike."""
    return wav_bytes(random.Random(seed).randbytes(size))


def composite_sha256(content: bytes) -> str:
    """What S3 answers as the checksum of a multipart object: the SHA-256 of its parts'
    SHA-256s (base64), so it matches only if every part was sent with, and checked against,
    the digest of the bytes it holds."""
    parts = [content[i : i + PART_SIZE] for i in range(0, len(content), PART_SIZE)]
    digests = b"".join(hashlib.sha256(part).digest() for part in parts)
    return base64.b64encode(hashlib.sha256(digests).digest()).decode()


class MultipartTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.s3 = S3Server(self)
        self.media = Path(self.mktemp())
        (self.media / "audio").mkdir(parents=True)
        self.path = self.media / "audio" / f"{NAME}.wav"

    async def serve(self):
        service = await self.serve_all()
        return service.getServiceNamed("uploader")

    async def serve_all(self):
        location = Location(self.s3.bucket, PREFIX, self.s3.endpoint)
        service, _ = await start_server(self, self.media, store=location, upload_retry_max=1)
        return service

    def assert_stored_whole(self, content: bytes) -> None:
        """Stored once, multipart, with the checksum of its parts, byte for byte; gone from the
        local disk with its marker; no unfinished upload left in the bucket."""
        parts = -(-len(content) // PART_SIZE)
        answer = self.s3.client.get_object_attributes(
            Bucket=self.s3.bucket, Key=KEY, ObjectAttributes=["ETag", "Checksum", "ObjectSize"]
        )
        self.assertEqual(answer["ObjectSize"], len(content))
        self.assertTrue(answer["ETag"].strip('"').endswith(f"-{parts}"), answer["ETag"])
        checksum = answer["Checksum"]
        # AWS appends the part count ("...=-3"); moto does not.
        self.assertEqual(checksum["ChecksumSHA256"].split("-")[0], composite_sha256(content))
        self.assertEqual(checksum.get("ChecksumType", "COMPOSITE"), "COMPOSITE")
        self.assertEqual(self.s3.versions(KEY), 1)
        stored, meta = self.s3.get(KEY)
        self.assertEqual(len(stored), len(content))
        self.assertTrue(stored == content, "the stored bytes differ from the recording's")
        self.assertEqual(meta["sha256"], hashlib.sha256(content).hexdigest())
        self.assertEqual(self.s3.keys(), [KEY])
        self.assertEqual(self.s3.client.list_multipart_uploads(Bucket=self.s3.bucket)
                         .get("Uploads", []), [])  # fmt: skip
        self.assertEqual(list((self.media / "audio").iterdir()), [])
        self.assertEqual(list((self.media / "uploads").iterdir()), [])

    def test_a_large_recording_goes_up_in_checked_parts(self):
        return ensureDeferred(self._large_recording_goes_up_in_checked_parts())

    async def _large_recording_goes_up_in_checked_parts(self) -> None:
        content = noise_wav(40 * MiB, seed=1)
        self.assertGreater(len(content), MULTIPART_THRESHOLD)
        self.path.write_bytes(content)
        await self.s3.start()
        uploader = await self.serve()
        await until(lambda: uploader.uploaded == 1, timeout=40, what="the upload")
        self.assert_stored_whole(content)
        self.assertEqual((uploader.failures, uploader.backlog), (0, 0))

    def test_store_stopped_mid_upload_is_waited_out(self):
        return ensureDeferred(self._store_stopped_mid_upload())

    async def _store_stopped_mid_upload(self) -> None:
        if not self.s3.stoppable:
            raise SkipTest("the store is external: it cannot be stopped and restarted here")
        # Seven parts, four at a time: when the first parts are in, at least one round is
        # still to go, which is when the store is stopped.
        content = noise_wav(100 * MiB, seed=2)
        self.path.write_bytes(content)
        await self.s3.start()
        uploader = await self.serve()

        parts = await self.first_parts_in()
        self.s3.stop()
        self.assertGreaterEqual(parts, 1)
        await until(lambda: uploader.failures >= 1, timeout=30, what="the failed attempt")
        self.assertEqual((uploader.uploaded, uploader.backlog), (0, 1))
        self.assertTrue(self.path.exists())
        self.assertTrue((self.media / "uploads" / f"audio.{NAME}.json").exists())

        # moto comes back empty (start() makes the bucket again), so the cut-off upload's parts
        # are gone with it; a store that keeps them has them aborted by the bucket's lifecycle
        # rule (README), since the abort could not reach it. The parts of an upload abandoned
        # at stop are discarded: test_upload_abandoned_at_stop_leaves_no_parts.
        await self.s3.start()
        await until(
            lambda: uploader.uploaded == 1, timeout=40, what="the upload after the store returned"
        )
        self.assert_stored_whole(content)
        self.assertEqual(uploader.backlog, 0)

    def test_daemon_stopped_mid_upload_lets_it_finish(self):
        return ensureDeferred(self._daemon_stopped_mid_upload())

    async def _daemon_stopped_mid_upload(self) -> None:
        """The stop waits (up to 10 s) for the upload under way, which the object store's
        threads outlive: the file lands, is confirmed, and leaves the local disk."""
        content = noise_wav(100 * MiB, seed=3)
        self.path.write_bytes(content)
        await self.s3.start()
        service = await self.serve_all()
        uploader = service.getServiceNamed("uploader")
        await self.first_parts_in()
        started = reactor.seconds()
        await service.stopService()
        self.assertLess(reactor.seconds() - started, 15)
        self.assertEqual((uploader.uploaded, uploader.failures, uploader.backlog), (1, 0, 0))
        self.assert_stored_whole(content)

    def test_upload_abandoned_at_stop_leaves_no_parts(self):
        return ensureDeferred(self._upload_abandoned_at_stop())

    async def _upload_abandoned_at_stop(self) -> None:
        """An upload still under way when the stop's wait is over is abandoned: the store
        discards its parts, the file and marker stay, and the next start uploads it once."""
        content = noise_wav(100 * MiB, seed=4)
        self.path.write_bytes(content)
        await self.s3.start()
        store = MediaTree(self.media)
        store.ensure()
        objects = ObjectStore(reactor, Location(self.s3.bucket, PREFIX, self.s3.endpoint))
        uploader = Uploader(reactor, store, objects, Events(), "test-node", stop_wait=0.0)
        objects.startService()
        self.addCleanup(lambda: objects.stopService() if objects.running else None)
        uploader.startService()
        await self.first_parts_in()
        # Held still, the store cannot let the rest of the upload finish before the stop: on a
        # quick moment the last parts of 100 MiB over loopback beat it.
        self.hold_store()
        stopped = uploader.stopService()
        await sleep(0.1)  # the stop's wait (none) is over: the upload is told to give up
        self.release_store()
        await stopped
        objects.stopService()
        self.assertEqual((uploader.uploaded, uploader.failures, uploader.backlog), (0, 0, 0))
        self.assertEqual(self.s3.client.list_multipart_uploads(Bucket=self.s3.bucket)
                         .get("Uploads", []), [])  # fmt: skip
        self.assertEqual(self.s3.keys(), [])
        self.assertTrue(self.path.exists())
        self.assertTrue((self.media / "uploads" / f"audio.{NAME}.json").exists())

        uploader = await self.serve()
        await until(lambda: uploader.uploaded == 1, timeout=40, what="the upload at the next start")
        self.assert_stored_whole(content)

    def hold_store(self) -> None:
        """Freeze the moto process (a MinIO given from outside cannot be: there, the test relies
        on the upload outlasting the stop)."""
        if self.s3.process is not None:
            self.s3.process.send_signal(signal.SIGSTOP)
            self.addCleanup(self.release_store)

    def release_store(self) -> None:
        if self.s3.process is not None and self.s3.process.poll() is None:
            self.s3.process.send_signal(signal.SIGCONT)

    async def first_parts_in(self) -> int:
        """Wait until the store holds some parts of the upload (but not the object): how many."""
        client, bucket = self.s3.client, self.s3.bucket
        for _ in range(1000):
            for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
                if upload["Key"] != KEY:
                    continue
                parts = client.list_parts(Bucket=bucket, Key=KEY, UploadId=upload["UploadId"])
                if parts.get("Parts"):
                    self.assertEqual(self.s3.keys(), [])
                    return len(parts["Parts"])
            await sleep(0.02)
        raise AssertionError("no part of the upload reached the store")
