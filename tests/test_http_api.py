"""The recordings API over real HTTP on 127.0.0.1: downloads with Range and HEAD, posters, details,
delete, live sessions, health, and who may use each route."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import treq
from twisted.internet import reactor
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from livestream.auth.access import Access
from livestream.auth.tokens import Verifier, mint
from livestream.library.tree import TEMP, VIDEO_STREAM
from livestream.wire.kinds import SAMPLE_RATE
from tests.support.http import get, get_json, raw
from tests.support.media import ffmpeg_exe, jpeg_frames, pcm, video_facts, wav_facts
from tests.support.server import start_server
from tests.support.waiting import sleep
from tests.support.websocket import CLOSE_MSG, connect_msg, open_client, record, stream_msg

FPS = 15
SECRET = b"s" * 32


async def http(port: int, method: str, path: str, headers: dict[str, str] | None = None):
    """One request over a fresh connection; returns (response, body)."""
    response = await treq.request(
        method,
        f"http://127.0.0.1:{port}{path}",
        headers=headers,
        timeout=10,
        pool=HTTPConnectionPool(reactor, persistent=False),
    )
    return response, await response.content()


class _Recorded(unittest.TestCase):
    """A server with one real recording of video (3 s) and audio."""

    frames = jpeg_frames(45)
    audio = tuple(pcm(4410, seed=i) for i in range(6))

    async def serve_and_record(self, access=None, client_id: str = "cam") -> dict:
        self.media = Path(self.mktemp())
        self.service, self.port = await start_server(self, self.media, fps=FPS, access=access)
        if access is None:
            _, _, closed = await record(self.port, client_id, self.frames, self.audio)
            return closed["recordings"]
        return await self.record_with_token(client_id)

    async def record_with_token(self, client_id: str) -> dict:
        client = await open_client(self.port, "/?token=" + mint(SECRET, ["publish"], 60))
        client.send(connect_msg(client_id))
        await client.event("CONNECTED")
        for frame, chunk in zip(self.frames, self.audio * 10, strict=False):
            client.send(stream_msg("VIDEO", frame))
            client.send(stream_msg("AUDIO", chunk))
        client.send(CLOSE_MSG)
        return (await client.event("CLOSED", timeout=60))["recordings"]


class DownloadTests(_Recorded):
    async def test_whole_files_are_the_files_on_disk(self) -> None:
        files = await self.serve_and_record()
        for kind, filename, ctype in (
            ("video", files["video"], "video/mp4"),
            ("audio", files["audio"], "audio/wav"),
        ):
            on_disk = (self.media / kind / filename).read_bytes()
            response, body = await http(self.port, "GET", f"/recordings/{kind}/{filename}")
            self.assertEqual(response.code, 200)
            self.assertEqual(body, on_disk)
            h = response.headers
            self.assertEqual(h.getRawHeaders("content-type"), [ctype])
            self.assertEqual(response.length, len(on_disk))
            self.assertEqual(h.getRawHeaders("accept-ranges"), ["bytes"])
            self.assertTrue(h.hasHeader("last-modified"))
            etag = h.getRawHeaders("etag")[0]
            again, body = await http(
                self.port, "GET", f"/recordings/{kind}/{filename}", {"If-None-Match": etag}
            )
            self.assertEqual((again.code, body), (304, b""))

    async def test_ranges(self) -> None:
        files = await self.serve_and_record()
        path = f"/recordings/video/{files['video']}"
        data = (self.media / "video" / files["video"]).read_bytes()
        size = len(data)
        for spec, first, last in (
            ("0-99", 0, 99),
            ("1000-1999", 1000, 1999),
            ("-500", size - 500, size - 1),
            (f"{size - 10}-", size - 10, size - 1),
            (f"{size - 5}-{size + 100}", size - 5, size - 1),
        ):
            response, body = await http(self.port, "GET", path, {"Range": f"bytes={spec}"})
            self.assertEqual(response.code, 206, spec)
            self.assertEqual(body, data[first : last + 1], spec)
            self.assertEqual(
                response.headers.getRawHeaders("content-range"), [f"bytes {first}-{last}/{size}"]
            )
            self.assertEqual(response.length, last - first + 1)
        for spec in (f"{size}-", f"{size + 10}-{size + 20}"):
            response, _ = await http(self.port, "GET", path, {"Range": f"bytes={spec}"})
            self.assertEqual(response.code, 416, spec)
            self.assertEqual(response.headers.getRawHeaders("content-range"), [f"bytes */{size}"])

    async def test_head_has_the_headers_of_get_and_no_body(self) -> None:
        files = await self.serve_and_record()
        video, audio = files["video"], files["audio"]
        for target in (f"/recordings/video/{video}", f"/recordings/audio/{audio}"):
            g_status, g_headers, g_body = await raw(self.port, "GET", target)
            h_status, h_headers, h_body = await raw(self.port, "HEAD", target)
            self.assertEqual((g_status, h_status), (200, 200))
            self.assertEqual(h_body, b"")
            self.assertGreater(len(g_body), 0)
            for name in ("content-type", "content-length", "accept-ranges", "etag"):
                self.assertEqual(h_headers[name], g_headers[name], name)
            self.assertEqual(int(h_headers["content-length"]), len(g_body))

    async def test_only_recordings_are_served(self) -> None:
        """Traversal, encoded separators, NUL, other suffixes, temp/ and hidden files, directory
        listings, and symlinks out of the tree: all a JSON 404 that reveals nothing."""
        files = await self.serve_and_record()
        outside = Path(self.mktemp()).absolute()
        outside.mkdir()
        secret = outside / "secret_1.mp4"
        secret.write_bytes(b"SECRET-BYTES")
        (self.media / "video" / "link_1.mp4").symlink_to(secret)
        (self.media / "audio" / "link_2.wav").symlink_to(secret)
        (self.media / "posters" / "link_1.jpg").symlink_to(secret)
        (self.media / "video" / "dirlink_1.mp4").symlink_to(outside)
        (self.media / TEMP / f"live_5{VIDEO_STREAM}").write_bytes(b"SECRET-BYTES")
        (self.media / "video" / ".hidden_3.mp4").write_bytes(b"SECRET-BYTES")
        (self.media / "video" / "nl_4\n.mp4").write_bytes(b"SECRET-BYTES")
        (self.media / "video" / "sub_6.mp4").mkdir()
        # The links resolve: what they point at is readable through them.
        self.assertEqual((self.media / "video" / "link_1.mp4").read_bytes(), b"SECRET-BYTES")
        video = files["video"]
        targets = [
            "/recordings/video/nothere_1.mp4",
            "/recordings/video/link_1.mp4",
            "/recordings/audio/link_2.wav",
            "/recordings/posters/link_1.jpg",
            "/recordings/video/dirlink_1.mp4",
            "/recordings/video/sub_6.mp4",
            "/recordings/video/.hidden_3.mp4",
            "/recordings/video/nl_4%0a.mp4",
            "/recordings/video/nl_4%0A.mp4",
            f"/recordings/temp/live_5{VIDEO_STREAM}",
            f"/recordings/video/..%2ftemp%2flive_5{VIDEO_STREAM}",
            f"/recordings/video/%2e%2e%2ftemp%2flive_5{VIDEO_STREAM}",
            f"/recordings/video/../temp/live_5{VIDEO_STREAM}",
            "/recordings/video/..",
            "/recordings/video/%2e%2e",
            "/recordings/video/",
            "/recordings/video",
            "/recordings/posters/",
            "/recordings/video//etc/passwd",
            "/recordings/video/%2fetc%2fpasswd",
            f"/recordings/video/{outside}/secret_1.mp4",
            f"/recordings/video/{video}%00",
            f"/recordings/video/{video[:-4]}%00.mp4",
            f"/recordings/audio/{video}",
            f"/recordings/video/{video[:-4]}.wav",
            f"/recordings/video/{video}/",
            f"/recordings/video/{video}/x",
        ]
        for target in targets:
            for method in ("GET", "HEAD"):
                status, headers, body = await raw(self.port, method, target)
                self.assertEqual(status, 404, (method, target))
                self.assertEqual(headers["content-type"], "application/json", target)
                self.assertNotIn(b"SECRET", body)
                if method == "GET":
                    self.assertEqual(json.loads(body)["error"], "not_found", target)
        self.assertEqual(secret.read_bytes(), b"SECRET-BYTES")


class PosterTests(_Recorded):
    async def test_poster_is_a_frame_the_client_sent(self) -> None:
        files = await self.serve_and_record()
        name = files["video"][:-4]
        response, body = await http(self.port, "GET", f"/recordings/posters/{name}.jpg")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["image/jpeg"])
        # One second in, at the recording's rate.
        self.assertEqual(body, self.frames[FPS])
        self.assertEqual([p.name for p in (self.media / "posters").iterdir()], [f"{name}.jpg"])

    async def test_short_recording_has_its_first_frame(self) -> None:
        self.media = Path(self.mktemp())
        _, port = await start_server(self, self.media, fps=FPS)
        frames = jpeg_frames(5)
        _, _, closed = await record(port, "short", frames)
        name = closed["recordings"]["video"][:-4]
        response, body = await http(port, "GET", f"/recordings/posters/{name}.jpg")
        self.assertEqual((response.code, body), (200, frames[0]))

    async def test_audio_only_has_no_poster(self) -> None:
        self.media = Path(self.mktemp())
        _, port = await start_server(self, self.media, fps=FPS)
        _, _, closed = await record(port, "mic", audio=[pcm(100)])
        name = closed["recordings"]["audio"][:-4]
        response, _ = await http(port, "GET", f"/recordings/posters/{name}.jpg")
        self.assertEqual(response.code, 404)
        (entry,) = (await get_json(port, "/api/recordings"))["recordings"]
        self.assertIsNone(entry["poster"])


class DetailsTests(_Recorded):
    async def test_values_match_what_a_decoder_sees(self) -> None:
        files = await self.serve_and_record()
        # A second, later session: newest first.
        await sleep(0.01)
        _, _, closed = await record(self.port, "later", audio=[pcm(1000)])
        later = closed["recordings"]["audio"]
        doc = await get_json(self.port, "/api/recordings")
        names = [e["name"] for e in doc["recordings"]]
        self.assertEqual(names[0], later)
        self.assertEqual(sorted(names), sorted([later, files["video"], files["audio"]]))
        by_name = {e["name"]: e for e in doc["recordings"]}

        video = by_name[files["video"]]
        path = self.media / "video" / files["video"]
        facts = video_facts(path)
        stem = files["video"][:-4]
        created = datetime.fromtimestamp(int(stem.rpartition("_")[2]) / 1000, UTC)
        self.assertEqual(video["kind"], "video")
        self.assertEqual(video["size"], path.stat().st_size)
        self.assertEqual(
            video["created"], created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
        self.assertEqual(video["frames"], facts.frames)
        self.assertEqual(video["frames"], len(self.frames))
        self.assertLessEqual(abs(video["duration"] - facts.duration), 1 / FPS)
        self.assertEqual(video["url"], f"/recordings/video/{files['video']}")
        self.assertEqual(video["poster"], f"/recordings/posters/{stem}.jpg")
        response, body = await http(self.port, "GET", video["url"])
        self.assertEqual((response.code, body), (200, path.read_bytes()))

        audio = by_name[files["audio"]]
        wav = wav_facts(self.media / "audio" / files["audio"])
        self.assertEqual(audio["kind"], "audio")
        self.assertEqual(audio["samples"], wav.samples)
        self.assertEqual(audio["samples"], sum(len(c) for c in self.audio) // 2)
        self.assertAlmostEqual(audio["duration"], wav.samples / SAMPLE_RATE)
        self.assertIsNone(audio["poster"])
        self.assertNotIn("frames", audio)
        self.assertNotIn("samples", video)

    async def test_seed_listing_keeps_its_shape(self) -> None:
        files = await self.serve_and_record()
        response = await get(self.port, "/recordings")
        self.assertEqual(
            json.loads(await response.content()),
            {"video": [files["video"]], "audio": [files["audio"]]},
        )

    async def test_fragmented_mp4_published_as_fallback(self) -> None:
        """When the faststart copy fails, the fragmented MP4 is published; its counts come from
        the fragments."""
        self.media = Path(self.mktemp())
        broken = Path(self.mktemp())
        broken.mkdir()
        # An ffmpeg that encodes, but whose faststart copy (the run reading an .fmp4) fails.
        wrapper = broken / "ffmpeg"
        wrapper.write_text(
            f'#!/bin/sh\ncase "$*" in *+faststart*) exit 1;; esac\nexec {ffmpeg_exe()} "$@"\n'
        )
        wrapper.chmod(0o755)
        _, port = await start_server(self, self.media, fps=FPS, ffmpeg=str(wrapper))
        frames = jpeg_frames(30)
        _, _, closed = await record(port, "frag", frames)
        (entry,) = (await get_json(port, "/api/recordings"))["recordings"]
        path = self.media / "video" / closed["recordings"]["video"]
        self.assertIn(b"moof", path.read_bytes())
        facts = video_facts(path)
        self.assertEqual(entry["frames"], facts.frames)
        self.assertEqual(entry["frames"], len(frames))
        self.assertLessEqual(abs(entry["duration"] - len(frames) / FPS), 1 / FPS)


class DeleteTests(_Recorded):
    async def test_delete_then_gone(self) -> None:
        files = await self.serve_and_record()
        video, audio = files["video"], files["audio"]
        stem = video[:-4]
        response, body = await http(self.port, "DELETE", f"/recordings/video/{video}")
        self.assertEqual((response.code, body), (204, b""))
        self.assertFalse((self.media / "video" / video).exists())
        self.assertFalse((self.media / "posters" / f"{stem}.jpg").exists())
        for path in (f"/recordings/video/{video}", f"/recordings/posters/{stem}.jpg"):
            self.assertEqual((await http(self.port, "GET", path))[0].code, 404)
        again, body = await http(self.port, "DELETE", f"/recordings/video/{video}")
        self.assertEqual(again.code, 404)
        self.assertEqual(json.loads(body)["error"], "not_found")
        self.assertEqual(await get_json(self.port, "/recordings"), {"video": [], "audio": [audio]})
        # The name alone, without its suffix, names the recording too.
        response, _ = await http(self.port, "DELETE", f"/recordings/audio/{audio[:-4]}")
        self.assertEqual(response.code, 204)
        self.assertEqual(
            await get_json(self.port, "/api/recordings"),
            {"recordings": [], "total": 0, "next": None},
        )

    async def test_recording_in_progress_is_not_found(self) -> None:
        self.media = Path(self.mktemp())
        _, port = await start_server(self, self.media, fps=FPS)
        client, connected, _ = await record(port, "live", jpeg_frames(10), close=False)
        name = connected["recording"]
        for kind, suffix in (("video", ".mp4"), ("audio", ".wav")):
            response, _ = await http(port, "DELETE", f"/recordings/{kind}/{name}{suffix}")
            self.assertEqual(response.code, 404)
        client.send(CLOSE_MSG)
        closed = await client.event("CLOSED", timeout=60)
        self.assertEqual(closed["recordings"]["video"], f"{name}.mp4")
        self.assertTrue((self.media / "video" / f"{name}.mp4").exists())

    async def test_outside_the_tree_is_never_deleted(self) -> None:
        self.media = Path(self.mktemp())
        _, port = await start_server(self, self.media, fps=FPS)
        outside = Path(self.mktemp()).absolute()
        outside.mkdir()
        target = outside / "keep_1.mp4"
        target.write_bytes(b"keep")
        (self.media / "video" / "link_1.mp4").symlink_to(target)
        self.assertEqual((self.media / "video" / "link_1.mp4").read_bytes(), b"keep")
        for path in (
            "/recordings/video/link_1.mp4",
            "/recordings/video/..%2f..%2f" + str(target).lstrip("/").replace("/", "%2f"),
            "/recordings/posters/link_1.jpg",
            "/recordings/temp/x_1.video.fmp4",
        ):
            status, _, _ = await raw(port, "DELETE", path)
            self.assertIn(status, (404, 405), path)
        self.assertEqual(target.read_bytes(), b"keep")
        self.assertTrue((self.media / "video" / "link_1.mp4").is_symlink())


class SessionsTests(unittest.TestCase):
    async def test_live_session_then_none(self) -> None:
        media = Path(self.mktemp())
        _, port = await start_server(self, media, fps=FPS)
        self.assertEqual(await get_json(port, "/api/sessions"), {"sessions": []})
        frames = jpeg_frames(8)
        before = datetime.now(UTC)
        client, connected, _ = await record(port, "cam-1", frames, close=False)
        sent = sum(len(f) for f in frames)
        for _ in range(100):
            (live,) = (await get_json(port, "/api/sessions"))["sessions"]
            if live["frames"] == len(frames):
                break
            await sleep(0.05)
        self.assertEqual(live["id"], "cam-1")
        self.assertEqual(live["recording"], connected["recording"])
        self.assertEqual((live["frames"], live["bytes"]), (len(frames), sent))
        self.assertIn("127.0.0.1", live["peer"])
        since = datetime.fromisoformat(live["since"].replace("Z", "+00:00"))
        self.assertLessEqual(abs((since - before).total_seconds()), 5)
        client.send(CLOSE_MSG)
        await client.event("CLOSED", timeout=60)
        await client.closed
        for _ in range(100):
            doc = await get_json(port, "/api/sessions")
            if not doc["sessions"]:
                break
            await sleep(0.05)
        self.assertEqual(doc, {"sessions": []})


class HealthTests(unittest.TestCase):
    async def health(self, port: int) -> tuple[int, dict]:
        response, body = await http(port, "GET", "/healthz")
        return response.code, json.loads(body)

    async def test_healthy(self) -> None:
        media = Path(self.mktemp())
        _, port = await start_server(self, media)
        code, doc = await self.health(port)
        self.assertEqual(code, 200)
        self.assertEqual(doc["status"], "ok")
        checks = doc["checks"]
        self.assertEqual((checks["ffmpeg"], checks["media_writable"]), (True, True))
        self.assertGreater(checks["free_bytes"], 0)
        self.assertEqual(checks["min_free_bytes"], 0)
        self.assertEqual(list((media / TEMP).iterdir()), [])

    async def test_media_tree_that_cannot_be_written(self) -> None:
        """temp/ replaced by a file (chmod would not stop root): no file can be made in it."""
        media = Path(self.mktemp())
        _, port = await start_server(self, media)
        (media / TEMP).rmdir()
        (media / TEMP).write_bytes(b"")
        code, doc = await self.health(port)
        self.assertEqual((code, doc["status"]), (503, "fail"))
        self.assertFalse(doc["checks"]["media_writable"])
        self.assertTrue(doc["checks"]["ffmpeg"])

    async def test_ffmpeg_gone(self) -> None:
        media = Path(self.mktemp())
        bin_dir = Path(self.mktemp())
        bin_dir.mkdir()
        exe = bin_dir / "ffmpeg"
        shutil.copy(ffmpeg_exe(), exe)
        _, port = await start_server(self, media, ffmpeg=os.fspath(exe))
        self.assertEqual((await self.health(port))[0], 200)
        exe.chmod(0o644)
        code, doc = await self.health(port)
        self.assertEqual((code, doc["checks"]["ffmpeg"]), (503, False))
        exe.unlink()
        self.assertEqual((await self.health(port))[0], 503)

    async def test_below_the_free_space_reserve(self) -> None:
        media = Path(self.mktemp())
        _, port = await start_server(self, media, min_free_bytes=1 << 60)
        code, doc = await self.health(port)
        self.assertEqual((code, doc["checks"]["min_free_bytes"]), (503, 1 << 60))
        self.assertTrue(doc["checks"]["media_writable"])


class AuthTests(_Recorded):
    async def test_each_route_needs_its_scope(self) -> None:
        files = await self.serve_and_record(access=Access(Verifier(SECRET)))
        video, audio = files["video"], files["audio"]
        read = {"Authorization": "Bearer " + mint(SECRET, ["read"], 60)}
        publish = {"Authorization": "Bearer " + mint(SECRET, ["publish"], 60)}
        delete = {"Authorization": "Bearer " + mint(SECRET, ["delete"], 60)}
        routes = [
            ("GET", f"/recordings/video/{video}", read, publish, 200),
            ("HEAD", f"/recordings/video/{video}", read, publish, 200),
            ("GET", f"/recordings/audio/{audio}", read, publish, 200),
            ("GET", f"/recordings/posters/{video[:-4]}.jpg", read, publish, 200),
            ("GET", "/api/recordings", read, publish, 200),
            ("GET", "/api/sessions", read, delete, 200),
            ("DELETE", f"/recordings/video/{video}", delete, read, 204),
            ("DELETE", f"/recordings/audio/{audio}", delete, read, 204),
        ]
        for method, path, good, wrong, ok in routes:
            response, body = await http(self.port, method, path)
            self.assertEqual(response.code, 401, (method, path))
            self.assertTrue(response.headers.hasHeader("www-authenticate"))
            response, body = await http(self.port, method, path, wrong)
            self.assertEqual(response.code, 403, (method, path))
            if method != "HEAD":
                self.assertEqual(json.loads(body)["error"], "forbidden")
            response, _ = await http(self.port, method, path, good)
            self.assertEqual(response.code, ok, (method, path))
        # A <video> element cannot set headers: the token goes in the query.
        token = mint(SECRET, ["read"], 60)
        response, _ = await http(self.port, "GET", f"/api/recordings?token={token}")
        self.assertEqual(response.code, 200)
        # Probes carry no token.
        response, _ = await http(self.port, "GET", "/healthz")
        self.assertEqual(response.code, 200)
