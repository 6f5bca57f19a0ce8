"""TLS through a Twisted ``ssl:`` endpoint, end to end: clients that verify the certificate
record and list over wss:// and https://, clients that cannot verify it get nothing, and a slow
encoder still slows the sender when the socket is wrapped in TLS."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.ssl import Certificate
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from livestream.auth.access import Access
from livestream.auth.tokens import Verifier, mint
from tests.support.fakes import stand_in
from tests.support.media import jpeg_frames, pcm, video_facts, wav_facts
from tests.support.server import start_server
from tests.support.tls import authority, server_files, trusting
from tests.support.waiting import sleep
from tests.support.websocket import (
    CLOSE_MSG,
    HandshakeRefused,
    connect_msg,
    open_client,
    stream_msg,
)

SECRET = b"0123456789abcdef0123456789abcdef-tls!"


class TLSTests(TestCase):
    timeout = 120

    async def serve(self, **options) -> int:
        tmp = Path(self.mktemp()).absolute()
        key, cert = server_files(tmp / "tls")
        self.media = tmp / "media"
        self.service, port = await start_server(
            self,
            self.media,
            listen=f"ssl:{{port}}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            **options,
        )
        return port

    async def test_verified_wss_recording_and_https_listing(self) -> None:
        """The deployment the README describes: TLS plus a token in the URL, a client that
        checks the certificate, and a recording that decodes as sent."""
        port = await self.serve(access=Access(Verifier(SECRET)))
        token = mint(SECRET, ["publish", "read"], 300)
        client = await open_client(port, f"/?token={token}", tls=trusting("livestream test CA"))
        self.assertIsNotNone(client.proto.transport.getPeerCertificate())
        client.send(connect_msg("secure"))
        name = (await client.event("CONNECTED"))["recording"]
        frames = jpeg_frames(30)
        audio = [pcm(1470, seed=i) for i in range(30)]
        for frame, chunk in zip(frames, audio, strict=True):
            client.send(stream_msg("VIDEO", frame))
            client.send(stream_msg("AUDIO", chunk))
        client.send(CLOSE_MSG)
        closed = await client.event("CLOSED")
        self.assertEqual(closed["recordings"], {"video": f"{name}.mp4", "audio": f"{name}.wav"})
        video = video_facts(self.media / "video" / f"{name}.mp4")
        self.assertEqual((video.codec, video.frames, video.width), ("h264", 30, 320))
        self.assertEqual(wav_facts(self.media / "audio" / f"{name}.wav").data, b"".join(audio))

        ca = authority("livestream test CA")[1].public_bytes(serialization.Encoding.PEM)
        agent = Agent(
            reactor,
            contextFactory=BrowserLikePolicyForHTTPS(Certificate.loadPEM(ca)),
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
        response = await HTTPClient(agent).get(
            f"https://localhost:{port}/recordings", headers={"Authorization": f"Bearer {token}"}
        )
        self.assertEqual(
            await response.json(), {"video": [f"{name}.mp4"], "audio": [f"{name}.wav"]}
        )

    async def test_clients_that_cannot_verify_get_nothing(self) -> None:
        """A certificate from an unknown CA, or for another name, fails the TLS handshake:
        no WebSocket, no HTTP answer."""
        port = await self.serve()
        for tls in (trusting("some other CA"), trusting("livestream test CA", "example.com")):
            with self.assertRaises(ConnectionError) as caught:
                await open_client(port, tls=tls)
            self.assertNotIsInstance(caught.exception, HandshakeRefused)
        good = await open_client(port, tls=trusting("livestream test CA"))
        good.proto.sendClose(1000)
        await good.closed

    async def test_slow_encoder_pauses_a_tls_socket(self) -> None:
        """Back-pressure reaches through TLS: while ffmpeg does not read, the daemon stops
        reading the client (the TCP transport under TLS), and nothing is lost."""
        tmp = Path(self.mktemp()).absolute()
        slow = stand_in(tmp / "bin", 'case "$*" in *pipe:0*) sleep 3;; esac\nexec "$REAL" "$@"')
        port = await self.serve(ffmpeg=slow)
        client = await open_client(port, tls=trusting("livestream test CA"))
        client.send(connect_msg("flood"))
        await client.event("CONNECTED")
        frames = jpeg_frames(120, "640x480", "mandelbrot")
        for frame in frames:
            client.send(stream_msg("VIDEO", frame))
        await sleep(1.5)
        (session,) = self.service.getServiceNamed("sessions").sessions
        self.assertLess(session.frames, 30, f"{session.frames} of 120 frames taken in a stall")
        client.send(CLOSE_MSG)
        closed = await client.event("CLOSED", timeout=90)
        self.assertEqual(video_facts(self.media / "video" / closed["recordings"]["video"]).frames,
                         120)  # fmt: skip
