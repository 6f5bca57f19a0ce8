"""Webhooks against a real HTTP receiver on 127.0.0.1: body, signature, retries, a restart."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path

from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from livestream.library.tree import MediaTree
from livestream.ops.webhooks.delivery import MAX_RETRY, retry_delay
from livestream.ops.webhooks.service import Webhooks
from livestream.ops.webhooks.settings import WebhookSettings
from livestream.ops.webhooks.signing import sign
from livestream.sessions.events import Events, Recovered
from tests.support.fakes import stand_in
from tests.support.media import jpeg_frames, pcm, wav_facts
from tests.support.ports import free_port
from tests.support.server import start_server
from tests.support.waiting import sleep
from tests.support.websocket import CLOSE_MSG, record

SECRET = b"w" * 32


def verify(secret: bytes, headers: dict[str, str], body: bytes, tolerance: float = 300) -> bool:
    """The README's snippet, as a receiver writes it."""
    ts = headers["X-Livestream-Timestamp"]
    mac = hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(ts)) < tolerance
    return fresh and hmac.compare_digest("sha256=" + mac, headers["X-Livestream-Signature"])


class Receiver(Resource):
    """Answers each POST with the next scripted status (then 200) and keeps what it got."""

    isLeaf = True

    def __init__(self, codes: list[int] | None = None) -> None:
        super().__init__()
        self.codes = list(codes or [])
        self.got: list[tuple[dict[str, str], bytes]] = []

    def render_POST(self, request: Request) -> bytes:
        headers = {k.decode(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.got.append((headers, request.content.read()))
        request.setResponseCode(self.codes.pop(0) if self.codes else 200)
        return b"thanks"

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.got]

    def listen(self, testcase: TestCase, port: int = 0) -> int:
        listening = reactor.listenTCP(port, Site(self), interface="127.0.0.1")
        testcase.addCleanup(listening.stopListening)
        return listening.getHost().port


async def until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = reactor.seconds() + timeout
    while not check():
        if reactor.seconds() > deadline:
            raise AssertionError("condition not met in time")
        await sleep(0.05)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class WebhookDeliveryTests(TestCase):
    timeout = 120

    def settings(self, port: int) -> WebhookSettings:
        return WebhookSettings((f"http://127.0.0.1:{port}/hook?key=x",), SECRET)

    async def test_events_are_signed_and_describe_the_files(self) -> None:
        receiver = Receiver()
        media = Path(self.mktemp())
        service, port = await start_server(
            self, media, webhooks=self.settings(receiver.listen(self))
        )
        frames = jpeg_frames(9)
        audio = [pcm(4410, seed=i) for i in range(3)]
        _, connected, closed = await record(port, "cam-1", frames=frames, audio=audio)
        await until(lambda: len(receiver.got) == 2)
        hooks = service.getServiceNamed("webhooks")
        await until(lambda: hooks.pending == 0)
        self.assertEqual(list((media / "webhooks").iterdir()), [])

        for headers, body in receiver.got:
            self.assertTrue(verify(SECRET, headers, body))
            self.assertEqual(headers["X-Livestream-Event"], json.loads(body)["id"])
            self.assertEqual(headers["Content-Type"], "application/json")
            self.assertFalse(verify(b"x" * 32, headers, body))
        by_type = {e["type"]: e for e in receiver.events()}
        started, completed = by_type["recording.started"], by_type["recording.completed"]
        name = connected["recording"]
        self.assertEqual(started["type"], "recording.started")
        self.assertEqual((started["recording"], started["client_id"]), (name, "cam-1"))
        self.assertEqual(started["files"], [])
        self.assertEqual(completed["type"], "recording.completed")
        self.assertEqual(completed["recording"], name)
        self.assertEqual(completed["reason"], "close")
        self.assertEqual(completed["bytes"], sum(map(len, frames)) + sum(map(len, audio)))
        self.assertNotEqual(started["id"], completed["id"])
        video, wav = completed["files"]
        mp4 = media / "video" / closed["recordings"]["video"]
        self.assertEqual(video, {
            "kind": "video", "name": mp4.name, "url": f"/recordings/video/{mp4.name}",
            "size": mp4.stat().st_size, "sha256": sha256(mp4), "frames": 9, "duration": 0.6,
        })  # fmt: skip
        path = media / "audio" / closed["recordings"]["audio"]
        self.assertEqual(wav, {
            "kind": "audio", "name": path.name, "url": f"/recordings/audio/{path.name}",
            "size": path.stat().st_size, "sha256": sha256(path), "samples": 13230, "duration": 0.3,
        })  # fmt: skip

    async def test_a_broken_encoder_is_a_failed_event_with_the_audio_it_kept(self) -> None:
        receiver = Receiver()
        tmp = Path(self.mktemp()).absolute()
        # An ffmpeg that cannot encode a stream: it fails as soon as it is started on one.
        broken = stand_in(tmp / "bin", 'case "$*" in *pipe:0*) echo "x264: no" >&2; exit 1;; '
                                       'esac\nexec "$REAL" "$@"')  # fmt: skip
        service, port = await start_server(
            self, tmp / "media", ffmpeg=broken, webhooks=self.settings(receiver.listen(self))
        )
        audio = [pcm(4410, seed=i) for i in range(3)]
        client, connected, _ = await record(port, "doomed", jpeg_frames(3), audio, close=False)
        # It is replaced twice, then given up (three deaths within a minute).
        codes = [(await client.event("ERROR"))["code"] for _ in range(3)]
        self.assertEqual(codes, ["encoder_replaced"] * 2 + ["encoder_failed"])
        client.send(CLOSE_MSG)
        closed = await client.event("CLOSED", timeout=60)
        await until(lambda: len(receiver.got) == 2)
        await until(lambda: service.getServiceNamed("webhooks").pending == 0)

        for headers, body in receiver.got:
            self.assertTrue(verify(SECRET, headers, body))
            self.assertFalse(verify(b"x" * 32, headers, body))
        by_type = {e["type"]: e for e in receiver.events()}
        self.assertEqual(set(by_type), {"recording.started", "recording.failed"})
        failed = by_type["recording.failed"]
        self.assertEqual((failed["recording"], failed["client_id"]),
                         (connected["recording"], "doomed"))  # fmt: skip
        self.assertEqual((failed["error"], failed["reason"]), ("encoder_failed", "close"))
        # No video came out of the encoder; the WAV, written without it, is whole and described.
        self.assertIsNone(closed["recordings"]["video"])
        wav = tmp / "media" / "audio" / closed["recordings"]["audio"]
        (described,) = failed["files"]
        self.assertEqual(described, {
            "kind": "audio", "name": wav.name, "url": f"/recordings/audio/{wav.name}",
            "size": wav.stat().st_size, "sha256": sha256(wav), "samples": 13230, "duration": 0.3,
        })  # fmt: skip
        self.assertEqual(wav_facts(wav).samples, 13230)

    async def test_a_failed_delivery_is_retried_until_a_2xx(self) -> None:
        receiver = Receiver([500, 503])
        service, port = await start_server(
            self, Path(self.mktemp()), webhooks=self.settings(receiver.listen(self))
        )
        await record(port, "mic", audio=[pcm(1000)])
        await until(lambda: service.getServiceNamed("webhooks").delivered == 2)
        bodies: dict[str, list[bytes]] = {}
        for _, body in receiver.got:
            bodies.setdefault(json.loads(body)["id"], []).append(body)
        # Two events, each refused once and then delivered, with the very same body.
        self.assertEqual(sorted(len(sent) for sent in bodies.values()), [2, 2])
        self.assertTrue(all(first == again for first, again in bodies.values()))
        hooks = service.getServiceNamed("webhooks")
        self.assertEqual((hooks.failed, hooks.pending), (2, 0))
        for headers, body in receiver.got:
            self.assertTrue(verify(SECRET, headers, body))

    async def test_an_event_queued_while_the_receiver_is_down_survives_a_restart(self) -> None:
        media = Path(self.mktemp())
        hook_port = free_port()
        settings = self.settings(hook_port)
        service, port = await start_server(self, media, webhooks=settings)
        _, connected, _ = await record(port, "cam", audio=[pcm(500)])
        hooks = service.getServiceNamed("webhooks")
        await until(lambda: hooks.failed >= 2 and hooks.pending == 2)
        await service.stopService()
        queued = sorted((media / "webhooks").iterdir())
        self.assertEqual(len(queued), 2)
        ids = {json.loads(p.read_bytes())["id"] for p in queued}

        receiver = Receiver()
        receiver.listen(self, hook_port)
        again, _ = await start_server(self, media, webhooks=settings)
        await until(lambda: len(receiver.got) == 2)
        await until(lambda: again.getServiceNamed("webhooks").pending == 0)
        self.assertEqual({e["id"] for e in receiver.events()}, ids)
        self.assertEqual({e["recording"] for e in receiver.events()}, {connected["recording"]})
        self.assertEqual(list((media / "webhooks").iterdir()), [])

    async def test_an_event_older_than_the_maximum_age_is_dropped_and_logged(self) -> None:
        receiver = Receiver([500])
        store = MediaTree(Path(self.mktemp()))
        store.ensure()
        wav = store.dir("audio") / "old_1000.wav"
        wav.write_bytes(b"\0" * 144)
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        events = Events()
        hook_port = receiver.listen(self)
        hooks = Webhooks(reactor, events, store, self.settings(hook_port), 15, max_age=0)
        hooks.startService()
        self.addCleanup(hooks.stopService)
        events.emit(Recovered("old_1000", {"audio": "old_1000.wav"}))
        await until(lambda: hooks.dropped == 1)
        self.assertEqual((len(receiver.got), hooks.pending), (1, 0))
        self.assertEqual(list(hooks.directory.iterdir()), [])
        (event,) = receiver.events()
        self.assertEqual(event["type"], "recording.recovered")
        self.assertEqual(event["files"][0]["samples"], 50)
        dropped = [e for e in logged if "dropped" in e.get("log_format", "")]
        self.assertEqual(len(dropped), 1)
        # Logged without the query, which may hold a credential.
        self.assertEqual(dropped[0]["url"], f"http://127.0.0.1:{hook_port}/hook")


class SignatureAndBackoffTests(SynchronousTestCase):
    def test_the_signature_covers_timestamp_and_body(self) -> None:
        body = b'{"id":"1"}'
        value = sign(SECRET, 1700000000, body)
        self.assertEqual(value, "sha256=" + hmac.new(SECRET, b"1700000000." + body,
                                                     hashlib.sha256).hexdigest())  # fmt: skip
        self.assertNotEqual(value, sign(SECRET, 1700000001, body))
        self.assertNotEqual(value, sign(SECRET, 1700000000, body + b" "))

    def test_backoff_doubles_up_to_its_cap(self) -> None:
        self.assertEqual([retry_delay(n) for n in range(1, 6)], [1, 2, 4, 8, 16])
        self.assertEqual(retry_delay(11), MAX_RETRY)
        self.assertEqual(retry_delay(10_000), MAX_RETRY)
