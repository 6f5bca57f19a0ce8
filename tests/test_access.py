"""The access policy without sockets: origins, subprotocols, where tokens are looked for, and
the options that build it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from livestream.auth.access import Access, Refused, origin_key, select_subprotocol
from livestream.auth.tokens import Verifier, mint
from livestream.daemon.options import Options
from livestream.web.accesslog import access_log_line as _access_log_line
from livestream.wire.codes import Refusal as ProtocolError
from tests.support.options import parse

SECRET = b"0123456789abcdef0123456789abcdef-unit"


class OriginTests(SynchronousTestCase):
    def test_origin_key(self) -> None:
        """Origins compare as a browser means them: case and default ports do not matter."""
        for origin, key in [
            ("https://app.example.com", "https://app.example.com:443"),
            ("HTTPS://App.Example.COM:443", "https://app.example.com:443"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("https://*.example.com", "https://*.example.com:443"),
            ("null", "null"),
            ("app://local", "app://local"),
        ]:
            self.assertEqual(origin_key(origin), key, origin)

    def test_not_origins(self) -> None:
        for text in ("", "*", "app.example.com", "https://", "https://x.com/path",
                     "https://x.com?q", "https://u@x.com", "https://x.com:99999",
                     "https://x.com:*"):  # fmt: skip
            self.assertIsNone(origin_key(text), text)

    def test_allow_list(self) -> None:
        access = Access(origins=(origin_key("https://app.example.com"),
                                 origin_key("https://*.example.org")))  # fmt: skip
        self.assertTrue(access.origin_allowed("https://app.example.com"))
        self.assertTrue(access.origin_allowed("https://a.b.example.org"))
        self.assertTrue(access.origin_allowed(None))
        for origin in ("https://example.org", "https://app.example.com.evil.net",
                       "http://app.example.com", "null", "garbage", ""):  # fmt: skip
            self.assertFalse(access.origin_allowed(origin), origin)

    def test_no_list_allows_all(self) -> None:
        for origin in ("https://x.example", "null", None):
            self.assertTrue(Access().origin_allowed(origin))


class HandshakeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.access = Access(Verifier(SECRET))

    def test_subprotocol_selection(self) -> None:
        self.assertEqual(select_subprotocol(["bearer.a", "livestream"]), "livestream")
        self.assertEqual(select_subprotocol(["chat", "bearer.a"]), "bearer.a")
        self.assertIsNone(select_subprotocol(["chat"]))
        self.assertIsNone(select_subprotocol([]))

    def test_token_places(self) -> None:
        token = mint(SECRET, ["publish"], 60)
        self.assertEqual(self.access.handshake(None, {"token": [token]}, []), (token, None))
        self.assertEqual(
            self.access.handshake(None, {}, ["livestream", f"bearer.{token}"]),
            (token, "livestream"),
        )
        self.assertEqual(self.access.handshake(None, {}, []), (None, None))

    def test_refusals(self) -> None:
        def status(origin=None, params=None, offered=()) -> int:
            access = Access(Verifier(SECRET), (origin_key("https://ok.example"),))
            with self.assertRaises(Refused) as caught:
                access.handshake(origin, params or {}, list(offered))
            return caught.exception.status

        good = mint(SECRET, ["publish"], 60)
        self.assertEqual(status(origin="https://bad.example"), 403)
        self.assertEqual(status(params={"token": ["x"]}), 401)
        self.assertEqual(status(params={"token": [mint(SECRET, ["read"], 60)]}), 403)
        self.assertEqual(status(params={"token": [good, good]}), 400)
        self.assertEqual(status(params={"token": [good]}, offered=[f"bearer.{good}"]), 400)

    def test_auth_off_returns_no_token(self) -> None:
        self.assertEqual(
            Access().handshake(None, {"token": ["x"]}, ["bearer.y"]), (None, "bearer.y")
        )

    def test_publish_refusals_are_fatal(self) -> None:
        for token, code in [(None, "unauthorized"), ("x", "unauthorized"),
                            (mint(SECRET, ["read"], 60), "forbidden"),
                            (mint(SECRET, ["publish"], 60, ids=["a"]), "forbidden")]:  # fmt: skip
            with self.assertRaises(ProtocolError) as caught:
                self.access.authorize_publish("b", token)
            self.assertEqual((caught.exception.code, caught.exception.close_code), (code, 1008))

    def test_auth_off_grants_nothing_and_refuses_nothing(self) -> None:
        self.assertIsNone(Access().authorize_publish("anyone", None))
        self.assertIsNone(Access().authorize(None, "read"))


class OptionTests(SynchronousTestCase):
    def secret_file(self, content: bytes = SECRET) -> str:
        path = Path(self.mktemp())
        path.write_bytes(content)
        return str(path)

    def test_off_by_default(self) -> None:
        access = parse().config().access
        self.assertEqual((access.verifier, access.origins), (None, ()))
        self.assertIn("authentication off", access.describe())

    def test_secret_file_turns_auth_on(self) -> None:
        access = parse("--auth-secret-file", self.secret_file()).config().access
        self.assertTrue(access.verifier.verify(mint(SECRET, ["read"], 60)).allows("read"))
        self.assertIn("authentication on", access.describe())

    def test_jwks_turns_auth_on(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = {**jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k"}
        path = Path(self.mktemp())
        path.write_text(json.dumps({"keys": [jwk]}))
        access = parse("--auth-jwks", str(path)).config().access
        claims = {"aud": "livestream", "exp": int(time.time()) + 60, "scope": "read"}
        token = jwt.encode(claims, key, "ES256", headers={"kid": "k"})
        self.assertTrue(access.verifier.verify(token).allows("read"))

    def test_bad_key_files_stop_the_start_with_one_line(self) -> None:
        for argv in (["--auth-secret-file", "/nonexistent/secret"],
                     ["--auth-secret-file", self.secret_file(b"")],
                     ["--auth-secret-file", self.secret_file(b"too-short")],
                     ["--auth-jwks", "/nonexistent/jwks.json"],
                     ["--auth-jwks", self.secret_file(b"{}")]):  # fmt: skip
            message = str(self.assertRaises(SystemExit, parse, *argv))
            self.assertNotIn("\n", message)
            self.assertIn(argv[1], message)

    def test_listed_in_help(self) -> None:
        """``twistd livestream --help`` shows each option with what it defaults to."""
        text = " ".join(str(Options()).split())
        for option in ("--auth-secret-file", "--auth-jwks", "--allow-origin"):
            self.assertIn(option, text)
        self.assertIn("Turn authentication on (default: off)", text)
        self.assertIn("repeatable (default: any)", text)

    def test_allow_origin(self) -> None:
        access = parse("--allow-origin", "https://App.example.com",
                       "--allow-origin", "null").config().access  # fmt: skip
        self.assertEqual(access.origins, ("https://app.example.com:443", "null"))
        self.assertIn("https://app.example.com:443", access.describe())
        message = str(self.assertRaises(SystemExit, parse, "--allow-origin", "app.example.com"))
        self.assertIn("https://app.example.com", message)


class AccessLogTests(SynchronousTestCase):
    def test_token_not_in_the_access_log(self) -> None:
        """A token in the query would otherwise be written to the log with every request."""
        request = DummyRequest([b"recordings"])
        request.uri = b"/recordings?a=1&token=eyJ.secret.sig&b=2"
        request.code, request.sentLength = 200, 40
        line = _access_log_line("[ts]", request)
        self.assertNotIn("secret", line)
        self.assertIn("/recordings?a=1&token=-&b=2", line)

    def test_token_by_any_spelling_not_in_the_access_log(self) -> None:
        """Twisted decodes a parameter's name, so ``%74oken`` is a token too."""
        request = DummyRequest([b"recordings"])
        request.uri = b"/recordings?%74oken=eyJ.secret1.sig&tok%65n=eyJ.secret2.sig&tokens=kept"
        request.uri += b";token=eyJ.secret3.sig"
        request.code, request.sentLength = 200, 40
        line = _access_log_line("[ts]", request)
        self.assertNotIn("secret", line)
        self.assertIn("/recordings?%74oken=-&tok%65n=-&tokens=kept;token=- ", line)

    def test_token_not_in_the_logged_referer(self) -> None:
        """The page opened as ``/?token=`` loads its assets with that URL as the Referer."""
        request = DummyRequest([b"static", b"app.js"])
        request.uri = b"/static/app.js"
        request.requestHeaders.setRawHeaders(b"referer", [b"http://h:8080/?token=eyJ.secret.sig#x"])
        request.code, request.sentLength = 200, 40
        line = _access_log_line("[ts]", request)
        self.assertNotIn("secret", line)
        self.assertIn('"http://h:8080/?token=-#x"', line)
