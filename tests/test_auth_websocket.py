"""Who may connect, end to end: tokens on the WebSocket and the HTTP API, and browser origins.

Real sockets on 127.0.0.1 and the whole service tree; refusals are checked as a client sees them
(the ERROR code, the close code, the HTTP status) and in the log.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.trial.unittest import TestCase

from livestream.auth.access import Access, origin_key
from livestream.auth.tokens import Verifier, mint
from tests.support.http import get, get_json
from tests.support.logs import Logged
from tests.support.media import jpeg_frames, video_facts
from tests.support.server import start_server
from tests.support.websocket import (
    CLOSE_MSG,
    HandshakeRefused,
    connect_msg,
    open_client,
    stream_msg,
)

SECRET = b"0123456789abcdef0123456789abcdef-test"
OTHER_SECRET = b"fedcba9876543210fedcba9876543210-evil"


def token(*scopes: str, secret: bytes = SECRET, ttl: float = 300, **claims) -> str:
    return mint(secret, scopes or ("publish",), ttl, **claims)


def connect_with(client_id: str, tok: object) -> str:
    return json.dumps({"eventType": "CONNECT", "id": client_id, "token": tok})


def alg_none() -> str:
    head = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    body = {"aud": "livestream", "exp": int(time.time()) + 300, "scope": "publish"}
    return f"{head}.{jwt.utils.base64url_encode(json.dumps(body).encode()).decode()}."


class AuthTestCase(TestCase):
    timeout = 60

    async def serve(self, access: Access | None = None) -> int:
        self.media = Path(self.mktemp()).absolute()
        access = access or Access(Verifier(SECRET))
        self.service, port = await start_server(self, self.media, access=access)
        return port

    async def assertConnectRefused(self, port: int, message: str, code: str, **client) -> None:
        """``message`` (a CONNECT) gets ERROR ``code`` and the connection closes with 1008."""
        client = await open_client(port, **client)
        client.send(message)
        error = await client.event("ERROR")
        _, close_code, _ = await client.closed
        self.assertEqual((error["code"], close_code), (code, 1008), error["message"])

    async def assertHandshakeRefused(self, port: int, status: int, **client) -> str:
        try:
            await open_client(port, **client)
        except HandshakeRefused as e:
            self.assertEqual(e.status, status, e.reason)
            return e.reason
        self.fail(f"handshake with {client} was accepted")


class TokenPlacesTests(AuthTestCase):
    """A token is accepted in each of its three places, and a session then records."""

    async def test_in_the_url_query(self) -> None:
        port = await self.serve()
        client = await open_client(port, f"/?token={token(ids=['cam-*'])}")
        client.send(connect_msg("cam-1"))
        await client.event("CONNECTED")
        for frame in jpeg_frames(12):
            client.send(stream_msg("VIDEO", frame))
        client.send(CLOSE_MSG)
        closed = await client.event("CLOSED")
        video = video_facts(self.media / "video" / closed["recordings"]["video"])
        self.assertEqual(video.frames, 12)

    async def test_as_a_subprotocol(self) -> None:
        """A browser offers ``livestream`` and ``bearer.<JWT>``: ``livestream`` is selected, so
        the token is not echoed; offered alone, the bearer one is selected (a browser fails a
        connection whose offer the server does not answer)."""
        port = await self.serve()
        bearer = "bearer." + token()
        for offered, selected in ((["livestream", bearer], "livestream"), ([bearer], bearer)):
            client = await open_client(port, protocols=offered)
            self.assertEqual(client.proto.websocket_protocol_in_use, selected)
            client.send(connect_msg("browser"))
            self.assertEqual((await client.event("CONNECTED"))["id"], "browser")
            client.send(CLOSE_MSG)
            await client.event("CLOSED")

    async def test_in_connect(self) -> None:
        port = await self.serve()
        client = await open_client(port)
        client.send(connect_with("app", token(subject="alice")))
        await client.event("CONNECTED")
        (session,) = self.service.getServiceNamed("sessions").sessions
        self.assertEqual((session.grant.subject, session.grant.scopes),
                         ("alice", frozenset({"publish"})))  # fmt: skip
        client.send(CLOSE_MSG)
        await client.event("CLOSED")

    async def test_grant_limits_bound_the_session(self) -> None:
        """A token's max_bytes ends the session as the daemon's own limit would."""
        port = await self.serve()
        frames = jpeg_frames(6)
        allowed = sum(len(f) for f in frames[:4]) + 10
        client = await open_client(port, f"/?token={token(max_seconds=60, max_bytes=allowed)}")
        client.send(connect_msg("bounded"))
        await client.event("CONNECTED")
        (session,) = self.service.getServiceNamed("sessions").sessions
        self.assertEqual((session.grant.max_seconds, session.grant.max_bytes), (60, allowed))
        for frame in frames:
            client.send(stream_msg("VIDEO", frame))
        self.assertEqual((await client.event("ERROR"))["code"], "limit_reached")
        closed = await client.event("CLOSED")
        _, code, _ = await client.closed
        self.assertEqual(code, 1008)
        video = video_facts(self.media / "video" / closed["recordings"]["video"])
        self.assertEqual(video.frames, 4)

    async def test_auth_off_ignores_tokens(self) -> None:
        """With authentication off (the default), the seed's clients and any token are let in."""
        port = await self.serve(Access())
        client = await open_client(port, "/?token=garbage", protocols=["livestream"])
        self.assertEqual(client.proto.websocket_protocol_in_use, "livestream")
        client.send(connect_with("local", "also-garbage"))
        await client.event("CONNECTED")
        client.send(CLOSE_MSG)
        await client.event("CLOSED")
        self.assertEqual((await get(port, "/recordings")).code, 200)


class RefusalTests(AuthTestCase):
    async def test_connect_without_a_token(self) -> None:
        port = await self.serve()
        await self.assertConnectRefused(port, connect_msg("cam-1"), "unauthorized")

    async def test_bad_tokens_in_connect(self) -> None:
        """Each bad token gets its code and ends the connection with 1008: one connection
        cannot try token after token."""
        port = await self.serve()
        cases = [
            ("expired", token(ttl=60, now=time.time() - 3600), "unauthorized"),
            ("wrong signature", token(secret=OTHER_SECRET), "unauthorized"),
            ("alg none", alg_none(), "unauthorized"),
            ("garbage", "not-a-jwt", "unauthorized"),
            ("wrong scope", token("read"), "forbidden"),
            ("wrong id", token(ids=["cam-*"]), "forbidden"),
        ]
        for label, bad, code in cases:
            with self.subTest(label):
                await self.assertConnectRefused(port, connect_with("intruder", bad), code)
        self.assertEqual(self.service.getServiceNamed("sessions").sessions, ())
        self.assertEqual(await get_json(port, f"/recordings?token={token('read')}"),
                         {"video": [], "audio": []})  # fmt: skip

    async def test_bad_tokens_at_the_handshake(self) -> None:
        """A token presented at the handshake is checked there: no WebSocket for a bad one."""
        port = await self.serve()
        expired = token(ttl=60, now=time.time() - 3600)
        reason = await self.assertHandshakeRefused(port, 401, path=f"/?token={expired}")
        self.assertIn("expired", reason)
        await self.assertHandshakeRefused(port, 401, protocols=["livestream", "bearer.xyz"])
        await self.assertHandshakeRefused(port, 401, path=f"/?token={alg_none()}")
        await self.assertHandshakeRefused(port, 403, path=f"/?token={token('read')}")
        await self.assertHandshakeRefused(
            port, 400, path=f"/?token={token()}", protocols=["bearer." + token()]
        )

    async def test_handshake_token_is_checked_again_at_connect(self) -> None:
        """A token good at the handshake still bounds the ids CONNECT may use."""
        port = await self.serve()
        await self.assertConnectRefused(
            port, connect_msg("dog-1"), "forbidden", path=f"/?token={token(ids=['cam-*'])}"
        )

    async def test_refusals_are_logged_once_with_the_address(self) -> None:
        port = await self.serve()
        logged = Logged(self)
        await self.assertHandshakeRefused(port, 401, path="/?token=garbage")
        await self.assertConnectRefused(port, connect_msg("x"), "unauthorized")
        self.assertEqual(len(logged.matching("refused", "127.0.0.1", "malformed token")), 1,
                         logged.lines)  # fmt: skip
        self.assertEqual(len(logged.matching("refused", "127.0.0.1", "unauthorized")), 1,
                         logged.lines)  # fmt: skip
        # Not a second, address-less line from Autobahn's server side.
        self.assertEqual(logged.matching("opening handshake ('malformed token')"), [])

    async def test_attacker_refused_while_a_session_records(self) -> None:
        """Refusals at every step leave a concurrent good session's recording whole."""
        port = await self.serve()
        good = await open_client(port, f"/?token={token(ids=['studio'])}")
        good.send(connect_msg("studio"))
        name = (await good.event("CONNECTED"))["recording"]
        frames = jpeg_frames(30)
        for i, frame in enumerate(frames):
            good.send(stream_msg("VIDEO", frame))
            if i % 10 == 0:
                await self.assertHandshakeRefused(port, 401, path=f"/?token={alg_none()}")
                await self.assertConnectRefused(port, connect_with("studio", "x.y.z"),
                                                "unauthorized")  # fmt: skip
                await self.assertConnectRefused(
                    port, connect_msg("studio"), "forbidden", path=f"/?token={token(ids=['x'])}"
                )
        good.send(CLOSE_MSG)
        closed = await good.event("CLOSED")
        self.assertEqual(closed["recordings"], {"video": f"{name}.mp4", "audio": None})
        self.assertEqual(video_facts(self.media / "video" / f"{name}.mp4").frames, 30)
        listing = await get_json(port, f"/recordings?token={token('read')}")
        self.assertEqual(listing, {"video": [f"{name}.mp4"], "audio": []})


class JWKSTests(AuthTestCase):
    async def test_es256_token_from_a_jwks(self) -> None:
        """An identity provider's ES256 token, verified with the public key of a JWKS file."""
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        port = await self.serve(Access(Verifier(public_keys={"idp-1": jwt.PyJWK(jwk)})))
        claims = {"aud": "livestream", "exp": int(time.time()) + 300, "scope": "publish",
                  "ids": ["cam-*"]}  # fmt: skip
        good = jwt.encode(claims, key, "ES256", headers={"kid": "idp-1"})
        client = await open_client(port, protocols=["livestream", "bearer." + good])
        client.send(connect_msg("cam-9"))
        await client.event("CONNECTED")
        client.send(CLOSE_MSG)
        await client.event("CLOSED")
        # The same claims under the HS256 secret of another daemon are not accepted here.
        await self.assertHandshakeRefused(port, 401, path=f"/?token={token(ids=['cam-*'])}")


class HTTPTests(AuthTestCase):
    async def test_listing_needs_read(self) -> None:
        port = await self.serve()
        missing = await get(port, "/recordings")
        self.assertEqual(missing.code, 401)
        self.assertEqual(missing.headers.getRawHeaders("www-authenticate"),
                         ['Bearer realm="livestream"'])  # fmt: skip
        self.assertEqual((await missing.json())["error"], "unauthorized")

        bad = await get(port, "/recordings?token=" + token("read", secret=OTHER_SECRET))
        self.assertEqual(bad.code, 401)
        self.assertIn('error="invalid_token"', bad.headers.getRawHeaders("www-authenticate")[0])

        wrong_scope = await get(port, "/recordings?token=" + token("publish"))
        self.assertEqual(wrong_scope.code, 403)
        self.assertIn('scope="read"', wrong_scope.headers.getRawHeaders("www-authenticate")[0])
        self.assertEqual((await wrong_scope.json())["error"], "forbidden")

        good = token("read")
        by_query = await get(port, f"/recordings?token={good}")
        self.assertEqual((by_query.code, await by_query.json()), (200, {"video": [], "audio": []}))
        by_header = await get(port, "/recordings", headers={"Authorization": f"Bearer {good}"})
        self.assertEqual(by_header.code, 200)
        basic = await get(port, "/recordings", headers={"Authorization": "Basic dXNlcjpwdw=="})
        self.assertEqual(basic.code, 401)


class OriginTests(AuthTestCase):
    async def test_allow_list(self) -> None:
        """Listed origins (default ports or not) open; others get 403; clients that send no
        Origin are not browsers and are not checked."""
        allowed = (origin_key("https://app.example.com"), origin_key("http://*.lan:8080"))
        port = await self.serve(Access(origins=allowed))
        for origin in ("https://app.example.com", "https://APP.example.com:443",
                       "http://cam.lan:8080", None):  # fmt: skip
            client = await open_client(port, origin=origin)
            client.proto.sendClose(1000)
            await client.closed
        for origin in ("https://evil.example.com", "http://app.example.com",
                       "https://app.example.com:8443", "http://cam.lan", "null"):  # fmt: skip
            await self.assertHandshakeRefused(port, 403, origin=origin)

    async def test_any_origin_by_default(self) -> None:
        """Without --allow-origin every origin opens, ``null`` too: a page opened from a file,
        as the seed's clients may be, sends ``Origin: null``."""
        port = await self.serve(Access())
        for origin in ("https://anywhere.example", "null"):
            client = await open_client(port, origin=origin)
            client.proto.sendClose(1000)
            await client.closed
