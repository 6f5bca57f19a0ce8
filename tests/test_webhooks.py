"""Webhooks against a real HTTP receiver on 127.0.0.1 that checks each request with the
``standardwebhooks`` library, as a receiver would: body, signature, retries, a restart."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from livestream.library.tree import MediaTree
from livestream.ops.webhooks.delivery import MAX_RETRY, retry_delay
from livestream.ops.webhooks.service import Webhooks
from livestream.ops.webhooks.settings import WebhookSettings, read_signing_key
from livestream.ops.webhooks.signing import sign, signed_headers
from livestream.sessions.events import Events, Recovered
from tests.support.fakes import stand_in
from tests.support.media import jpeg_frames, pcm, wav_facts
from tests.support.ports import free_port
from tests.support.server import start_server
from tests.support.waiting import sleep
from tests.support.websocket import CLOSE_MSG, record

# What --webhook-secret-file holds, and what a receiver gives its library.
SECRET = "whsec_" + base64.b64encode(b"w" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"x" * 32).decode()


class Receiver(Resource):
    """Checks each POST with the ``standardwebhooks`` library and ``secret``, answers one it
    refuses 401 (and notes why), any other with the next scripted status (then 200), and keeps
    what it got, header names in lower case."""

    isLeaf = True

    def __init__(self, codes: list[int] | None = None, secret: str = SECRET) -> None:
        super().__init__()
        self.codes = list(codes or [])
        self.webhook = Webhook(secret)
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.refused: list[str] = []

    def render_POST(self, request: Request) -> bytes:
        headers = {k.decode().lower(): v[0].decode()
                   for k, v in request.requestHeaders.getAllRawHeaders()}  # fmt: skip
        body = request.content.read()
        self.got.append((headers, body))
        try:
            self.webhook.verify(body, headers)
        except WebhookVerificationError as e:
            self.refused.append(str(e))
            request.setResponseCode(401)
            return b"not signed with my secret"
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

    def secret_file(self) -> Path:
        """A --webhook-secret-file holding SECRET, as an editor leaves it."""
        path = Path(self.mktemp())
        path.write_text(SECRET + "\n")
        return path

    def settings(self, port: int) -> WebhookSettings:
        """As the daemon has them: the key read from the secret file."""
        key = read_signing_key(self.secret_file())
        return WebhookSettings((f"http://127.0.0.1:{port}/hook?key=x",), key)

    def recovered(self, receiver: Receiver, max_age: float = 3600) -> tuple[Webhooks, int]:
        """The webhooks service alone, posting to ``receiver`` (and its port) the one event of
        a recording recovered at start."""
        store = MediaTree(Path(self.mktemp()))
        store.ensure()
        (store.dir("audio") / "old_1000.wav").write_bytes(b"\0" * 144)
        events = Events()
        hook_port = receiver.listen(self)
        settings = self.settings(hook_port)
        hooks = Webhooks(reactor, events, store, settings, 15, max_age=max_age)
        hooks.startService()
        self.addCleanup(hooks.stopService)
        events.emit(Recovered("old_1000", {"audio": "old_1000.wav"}))
        return hooks, hook_port

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

        self.assertEqual(receiver.refused, [])
        for headers, body in receiver.got:
            self.assertEqual(headers["webhook-id"], json.loads(body)["id"])
            self.assertEqual(headers["content-type"], "application/json")
            self.assertEqual([name for name in headers if name.startswith("x-livestream")], [])
            with self.assertRaises(WebhookVerificationError):
                Webhook(OTHER_SECRET).verify(body, headers)
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

        self.assertEqual(receiver.refused, [])
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
        for headers, body in receiver.got:
            self.assertEqual(headers["webhook-id"], json.loads(body)["id"])
            bodies.setdefault(headers["webhook-id"], []).append(body)
        # Two events, each refused once and then delivered, with the very same id and body.
        self.assertEqual(sorted(len(sent) for sent in bodies.values()), [2, 2])
        self.assertTrue(all(first == again for first, again in bodies.values()))
        hooks = service.getServiceNamed("webhooks")
        self.assertEqual((hooks.failed, hooks.pending), (2, 0))
        self.assertEqual(receiver.refused, [])

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
        self.assertEqual({headers["webhook-id"] for headers, _ in receiver.got}, ids)
        self.assertEqual(receiver.refused, [])
        self.assertEqual({e["recording"] for e in receiver.events()}, {connected["recording"]})
        self.assertEqual(list((media / "webhooks").iterdir()), [])

    async def test_an_event_older_than_the_maximum_age_is_dropped_and_logged(self) -> None:
        receiver = Receiver([500])
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        hooks, hook_port = self.recovered(receiver, max_age=0)
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

    async def test_a_receiver_with_another_secret_refuses_every_attempt(self) -> None:
        receiver = Receiver(secret=OTHER_SECRET)
        hooks, _ = self.recovered(receiver)
        await until(lambda: len(receiver.refused) >= 2)
        # Its 401 is a failure like any other: the event stays queued for the next attempt.
        self.assertEqual(set(receiver.refused), {"No matching signature found"})
        self.assertEqual((hooks.delivered, hooks.pending), (0, 1))
        self.assertGreaterEqual(hooks.failed, 1)

    async def test_the_library_refuses_a_delivery_altered_or_replayed_late(self) -> None:
        receiver = Receiver()
        hooks, _ = self.recovered(receiver)
        await until(lambda: hooks.delivered == 1)
        ((headers, body),) = receiver.got
        webhook = Webhook(SECRET)
        self.assertEqual(webhook.verify(body, headers)["id"], headers["webhook-id"])
        stamp = int(headers["webhook-timestamp"])
        altered = {
            "body": (body.replace(b"recording.recovered", b"recording.completed"), headers),
            "id": (body, {**headers, "webhook-id": "0" * 32}),
            "timestamp": (body, {**headers, "webhook-timestamp": str(stamp - 1)}),
        }
        for what, (sent, claimed) in altered.items():
            with self.assertRaises(WebhookVerificationError, msg=what) as refused:
                webhook.verify(sent, claimed)
            self.assertEqual(str(refused.exception), "No matching signature found")
        with self.assertRaises(WebhookVerificationError):
            Webhook(OTHER_SECRET).verify(body, headers)
        # What the daemon would have signed ten minutes ago: right but stale (the library
        # allows five minutes), so a captured request cannot be replayed later.
        key = read_signing_key(self.secret_file())
        event_id = headers["webhook-id"]
        webhook.verify(body, signed_headers(key, event_id, int(time.time()), body))
        stale = signed_headers(key, event_id, int(time.time()) - 600, body)
        with self.assertRaises(WebhookVerificationError) as refused:
            webhook.verify(body, stale)
        self.assertEqual(str(refused.exception), "Message timestamp too old")


class SignatureAndBackoffTests(SynchronousTestCase):
    def test_the_signature_is_the_standard_webhooks_one(self) -> None:
        """The specification's test vector, then every part of the message signed."""
        key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        msg_id, body = "msg_p5jXN8AQM9LWM0D4loKWxJek", b'{"test": 2432232314}'
        value = sign(key, msg_id, 1614265330, body)
        self.assertEqual(value, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        self.assertNotEqual(value, sign(key, msg_id + "x", 1614265330, body))
        self.assertNotEqual(value, sign(key, msg_id, 1614265331, body))
        self.assertNotEqual(value, sign(key, msg_id, 1614265330, body + b" "))

    def test_backoff_doubles_up_to_its_cap(self) -> None:
        self.assertEqual([retry_delay(n) for n in range(1, 6)], [1, 2, 4, 8, 16])
        self.assertEqual(retry_delay(11), MAX_RETRY)
        self.assertEqual(retry_delay(10_000), MAX_RETRY)
