"""Disk errors other than a full disk (EIO, EROFS, a media tree that vanishes): the sessions they
hit end with ``storage_failed``, what is on disk is kept, the daemon goes on serving, and
``/healthz`` says so while it lasts."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from twisted.trial.unittest import TestCase

from livestream.library.tree import AUDIO_STREAM, VIDEO_STREAM, MediaTree
from tests.support.disks import FailingWrites, small_disk, turn_read_only, writable_again
from tests.support.http import get, get_json
from tests.support.media import jpeg_frames, pcm, video_facts, wav_facts
from tests.support.metrics import scrape
from tests.support.server import start_server
from tests.support.waiting import until
from tests.support.websocket import (
    connect_msg,
    open_client,
    record,
    stream_msg,
    stream_without_close,
)


async def health(port: int) -> tuple[int, dict]:
    response = await get(port, "/healthz")
    return response.code, json.loads(await response.content())


def live_session(service):
    (session,) = service.getServiceNamed("sessions").sessions
    return session


async def ended_by_storage(client, error: str) -> dict:
    """The replies of a session a storage failure ended: ``storage_failed`` naming ``error``
    first, CLOSED, then close 1011; returns the ERROR."""
    failed = await client.event("ERROR", timeout=10)
    await client.event("CLOSED", timeout=60)
    _, code, _ = await client.closed
    assert (failed["code"], code) == ("storage_failed", 1011), (failed, code)
    assert error in failed["message"], failed
    return failed


async def refused_by_storage(port: int, error: str) -> None:
    client = await open_client(port)
    client.send(connect_msg("newcomer"))
    refused = await client.event("ERROR")
    _, code, _ = await client.closed
    assert (refused["code"], code) == ("storage_failed", 1011), (refused, code)
    assert error in refused["message"], refused


class StorageFailureTests(TestCase):
    timeout = 120

    async def test_write_error_ends_the_session_with_what_came_before(self) -> None:
        """EIO on a write of the WAV ends that session with ``storage_failed`` (not
        ``storage_full``), both files published with what came before; /healthz is degraded
        from then until another session publishes its files. The EIO is injected where the
        recorder writes (:class:`FailingWrites`): no real device can be made to fail here."""
        media = Path(self.mktemp()).absolute()
        service, port = await start_server(self, media)
        frames, audio = jpeg_frames(10), [pcm(4410, seed=i) for i in range(6)]
        bystander, _ = await stream_without_close(port, "bystander", jpeg_frames(3), [])
        client, name = await stream_without_close(port, "eio", frames, audio[:5])
        sessions = service.getServiceNamed("sessions").sessions
        session = next(s for s in sessions if s.name == name)
        session._audio._file = FailingWrites(session._audio._file, errno.EIO)
        client.send(stream_msg("AUDIO", audio[5]))
        failed = await ended_by_storage(client, "EIO")
        self.assertNotIn(os.fspath(media), failed["message"])
        self.assertEqual(video_facts(media / "video" / f"{name}.mp4").frames, 10)
        wav = wav_facts(media / "audio" / f"{name}.wav")
        self.assertEqual((wav.riff_size_ok, wav.data), (True, b"".join(audio[:5])))

        code, doc = await health(port)
        self.assertEqual((code, doc["status"]), (200, "degraded"))
        self.assertEqual(doc["checks"]["storage"]["error"], "EIO")
        self.assertTrue(doc["checks"]["storage"]["failing"])
        self.assertIn("since", doc["checks"]["storage"])
        samples = await scrape(port)
        self.assertEqual(samples[("livestream_storage_errors_total", (("error", "EIO"),))], 1)
        # The other session was not hit: it goes on, and publishing its files ends the fault.
        bystander.send(stream_msg("VIDEO", jpeg_frames(4)[3]))
        bystander.send(json.dumps({"eventType": "CLOSE"}))
        closed = await bystander.event("CLOSED", timeout=60)
        self.assertEqual(video_facts(media / "video" / closed["recordings"]["video"]).frames, 4)
        code, doc = await health(port)
        self.assertEqual(
            (code, doc["status"], doc["checks"]["storage"]), (200, "ok", {"failing": False})
        )

    async def test_read_only_tree_ends_sessions_keeps_their_files_and_recovers(self) -> None:
        """A tmpfs turned read-only under a live session (EROFS from the kernel): the session
        ends, its files stay in temp/ (they cannot be published) and the next start publishes
        them whole; new sessions are refused meanwhile, and the daemon records again once the
        disk is writable."""
        media = small_disk(self, 64)
        service, port = await start_server(self, media)
        frames, audio = jpeg_frames(12), [pcm(4410, seed=i) for i in range(12)]
        client, name = await stream_without_close(port, "ro", frames, audio)
        # Once the encoder has its output open it writes on (the encoder's own failures are
        # not this test's); new files and renames fail.
        stream = media / "temp" / f"{name}{VIDEO_STREAM}"
        await until(stream.exists, what="the encoder's output")
        turn_read_only(self, media)
        # The daemon's check of the tree (every 2 s) finds it.
        await ended_by_storage(client, "EROFS")
        # Finishing the video cannot remove its faststart part from a read-only disk, and logs
        # that as a failure (recording/video.py's; the files are kept all the same).
        self.flushLoggedErrors(OSError)
        temp = sorted(os.listdir(media / "temp"))
        self.assertEqual(temp, sorted([f"{name}{AUDIO_STREAM}", f"{name}{VIDEO_STREAM}"]))
        code, doc = await health(port)
        self.assertEqual((code, doc["checks"]["media_writable"]), (503, False))
        self.assertEqual(doc["checks"]["storage"]["error"], "EROFS")
        await refused_by_storage(port, "EROFS")

        writable_again(media)
        code, doc = await health(port)
        self.assertEqual((code, doc["status"]), (200, "degraded"))
        _, _, closed = await record(port, "after", jpeg_frames(5))
        self.assertEqual(video_facts(media / "video" / closed["recordings"]["video"]).frames, 5)
        self.assertEqual((await health(port))[1]["status"], "ok")

        await service.stopService()
        _, port = await start_server(self, media)
        await until(
            lambda: (
                (media / "video" / f"{name}.mp4").exists()
                and (media / "audio" / f"{name}.wav").exists()
            ),
            what="recovery",
        )
        self.assertEqual(video_facts(media / "video" / f"{name}.mp4").frames, 12)
        self.assertEqual(wav_facts(media / "audio" / f"{name}.wav").data, b"".join(audio))

    async def test_media_tree_removed_under_live_sessions(self) -> None:
        """``rm -rf media/`` while two sessions record: both end with ``storage_failed``, a new
        CONNECT is refused with it, HTTP goes on answering; once the tree is made again the
        daemon records into it."""
        media = Path(self.mktemp()).absolute()
        _, port = await start_server(self, media)
        video, name = await stream_without_close(port, "cam", jpeg_frames(8), [pcm(4410)])
        sound, _ = await stream_without_close(port, "mic", [], [pcm(4410, seed=1)])
        await until((media / "temp" / f"{name}{VIDEO_STREAM}").exists, what="the encoder's output")
        shutil.rmtree(media)
        for client in (video, sound):
            await ended_by_storage(client, "ENOENT")
        await refused_by_storage(port, "ENOENT")
        code, doc = await health(port)
        self.assertEqual((code, doc["checks"]["storage"]["error"]), (503, "ENOENT"))
        # The library is still listed: the index is open though its files went with the tree.
        listing = await get_json(port, "/recordings")
        self.assertEqual(set(listing), {"video", "audio"})
        self.assertEqual(
            (await get_json(port, "/api/recordings"))["total"], len(sum(listing.values(), []))
        )

        MediaTree(media).ensure()
        self.assertEqual((await health(port))[1]["status"], "degraded")
        _, _, closed = await record(port, "again", jpeg_frames(5), [pcm(4410)])
        self.assertEqual(video_facts(media / "video" / closed["recordings"]["video"]).frames, 5)
        self.assertEqual((await health(port))[1]["status"], "ok")
