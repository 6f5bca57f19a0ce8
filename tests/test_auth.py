"""Tokens: what verifies, what is refused and why, what a grant allows, and the key files."""

from __future__ import annotations

import base64
import json
import time
from functools import cache
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.trial.unittest import SynchronousTestCase

from livestream.auth.tokens import (
    LEEWAY,
    Grant,
    KeyFileError,
    TokenError,
    Verifier,
    mint,
    read_jwks,
    read_secret,
)
from livestream.wire.messages import MAX_TOKEN_LENGTH

SECRET = b"s3cret-s3cret-s3cret-s3cret-s3cret!"


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {"aud": "livestream", "iat": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def jwks(**keys_by_kid) -> dict:
    """A JWKS document of the public halves of ``keys_by_kid``."""
    entries = []
    for kid, key in keys_by_kid.items():
        algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else (
            jwt.algorithms.ECAlgorithm
        )  # fmt: skip
        entry = algorithm.to_jwk(key.public_key(), as_dict=True)
        entries.append({**entry, "kid": kid})
    return {"keys": entries}


def write_json(testcase: SynchronousTestCase, doc: object) -> Path:
    path = Path(testcase.mktemp())
    path.write_text(json.dumps(doc))
    return path


class HS256Tests(SynchronousTestCase):
    def setUp(self) -> None:
        self.verifier = Verifier(SECRET)

    def refused(self, token: str) -> str:
        return str(self.assertRaises(TokenError, self.verifier.verify, token))

    def test_minted_token_round_trip(self) -> None:
        """What the mint command makes, the daemon reads back claim for claim."""
        token = mint(
            SECRET, ["publish", "read"], 3600, ids=["cam-*"], subject="alice",
            max_seconds=90, max_bytes=10_000,
        )  # fmt: skip
        self.assertEqual(
            self.verifier.verify(token),
            Grant("alice", frozenset({"publish", "read"}), ("cam-*",), 90, 10_000),
        )

    def test_minimal_token(self) -> None:
        """Without ids or limits a token allows any id and bounds nothing beyond the daemon's."""
        grant = self.verifier.verify(jwt.encode(claims(scope="publish"), SECRET, "HS256"))
        self.assertEqual(grant, Grant(None, frozenset({"publish"})))
        self.assertTrue(grant.allows_id("anything at all"))

    def test_expired(self) -> None:
        self.assertIn("expired", self.refused(mint(SECRET, ["publish"], 60, now=time.time() - 600)))

    def test_leeway(self) -> None:
        """A clock a little behind the minting host's still accepts a just-expired token; past
        the leeway it does not."""
        now = int(time.time())
        ok = jwt.encode(claims(scope="publish", exp=now - int(LEEWAY) + 5), SECRET, "HS256")
        self.assertTrue(self.verifier.verify(ok).allows("publish"))
        late = jwt.encode(claims(scope="publish", exp=now - int(LEEWAY) - 5), SECRET, "HS256")
        self.assertIn("expired", self.refused(late))

    def test_not_yet_valid(self) -> None:
        token = jwt.encode(claims(nbf=int(time.time()) + 600), SECRET, "HS256")
        self.assertIn("not valid yet", self.refused(token))

    def test_wrong_secret(self) -> None:
        token = mint(b"another-secret-another-secret-another", ["publish"], 60)
        self.assertIn("signature", self.refused(token))

    def test_tampered_claims(self) -> None:
        """Widening a signed token's scope breaks its signature."""
        head, _, sig = mint(SECRET, ["read"], 60).split(".")
        forged = f"{head}.{b64(claims(scope='publish read delete'))}.{sig}"
        self.assertIn("signature", self.refused(forged))

    def test_alg_none(self) -> None:
        """An unsigned token is refused however it spells "none"."""
        for alg in ("none", "None", "NONE"):
            token = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims(scope='publish'))}."
            self.assertIn("not accepted", self.refused(token))

    def test_other_algorithms_refused(self) -> None:
        """HS384/HS512 with the same secret are not what the daemon accepts (a fixed list)."""
        token = jwt.encode(claims(scope="publish"), SECRET * 2, "HS512")
        self.assertIn("not accepted", self.refused(token))

    def test_garbage(self) -> None:
        for token in ("", "x", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9", "ü.ü.ü",
                      f"{b64([1, 2])}.{b64({})}.", f"{b64({'alg': ['HS256']})}.{b64({})}.",
                      f"{b64({'alg': 'ES256', 'kid': ['x']})}.{b64({})}.",
                      "e" * (MAX_TOKEN_LENGTH + 1)):  # fmt: skip
            self.assertIsInstance(self.refused(token), str, token)

    def test_required_claims(self) -> None:
        """No expiry is no token: a leaked one would work for ever. The audience keeps tokens
        minted for another service with the same secret out."""
        self.assertIn('"exp"', self.refused(jwt.encode(claims(exp=None), SECRET, "HS256")))
        self.assertIn('"aud"', self.refused(jwt.encode(claims(aud=None), SECRET, "HS256")))
        self.assertIn("aud", self.refused(jwt.encode(claims(aud="other"), SECRET, "HS256")))

    def test_malformed_claims_refuse_the_token(self) -> None:
        """A claim of the wrong shape is not ignored: ignoring "ids" would allow every id."""
        for bad in (
            {"scope": ["publish"]},
            {"ids": "cam-1"},
            {"ids": [1]},
            {"ids": [""]},
            {"sub": 5},
            {"max_seconds": -1},
            {"max_seconds": "60"},
            {"max_bytes": 1.5},
            {"max_bytes": True},
            {"max_bytes": 0},
        ):
            token = jwt.encode(claims(**{"scope": "publish", **bad}), SECRET, "HS256")
            self.assertIsInstance(self.refused(token), str, bad)


class GrantTests(SynchronousTestCase):
    def test_id_patterns(self) -> None:
        grant = Grant(None, frozenset({"publish"}), ("cam-*", "alice"))
        self.assertTrue(grant.allows_id("cam-1"))
        self.assertTrue(grant.allows_id("alice"))
        self.assertFalse(grant.allows_id("alice2"))
        self.assertFalse(grant.allows_id("CAM-1"))
        self.assertFalse(grant.allows_id("bob"))

    def test_no_ids_is_no_id(self) -> None:
        """An empty list names no id: such a token may read but not publish."""
        self.assertFalse(Grant(None, frozenset({"publish"}), ()).allows_id("cam-1"))

    def test_scopes(self) -> None:
        grant = Grant(None, frozenset({"read"}))
        self.assertTrue(grant.allows("read"))
        self.assertFalse(grant.allows("publish"))


class JWKSTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.keys = read_jwks(write_json(self, jwks(rsa1=rsa_key(), ec1=ec_key())))
        self.verifier = Verifier(public_keys=self.keys)

    def test_rs256_and_es256(self) -> None:
        """Tokens from an identity provider's keys verify with the public keys alone."""
        rs = jwt.encode(claims(scope="publish", sub="idp-user"), rsa_key(), "RS256",
                        headers={"kid": "rsa1"})  # fmt: skip
        es = jwt.encode(claims(scope="read"), ec_key(), "ES256", headers={"kid": "ec1"})
        self.assertEqual(self.verifier.verify(rs).subject, "idp-user")
        self.assertTrue(self.verifier.verify(es).allows("read"))

    def test_unknown_or_missing_kid(self) -> None:
        for headers in ({"kid": "rsa2"}, {}):
            token = jwt.encode(claims(), rsa_key(), "RS256", headers=headers)
            self.assertIn("unknown key", str(self.assertRaises(TokenError, self.verifier.verify,
                                                               token)))  # fmt: skip

    def test_key_signs_only_its_algorithm(self) -> None:
        """An RSA key named with an ES256 header, or RS512 for an RS256 key, is refused."""
        token = jwt.encode(claims(), rsa_key(), "RS512", headers={"kid": "rsa1"})
        self.assertRaises(TokenError, self.verifier.verify, token)
        token = jwt.encode(claims(), ec_key(), "ES256", headers={"kid": "rsa1"})
        self.assertRaises(TokenError, self.verifier.verify, token)

    def test_wrong_private_key(self) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(claims(), other, "RS256", headers={"kid": "rsa1"})
        self.assertIn("signature", str(self.assertRaises(TokenError, self.verifier.verify, token)))

    def test_public_key_as_hmac_secret(self) -> None:
        """The classic confusion: HS256 signed with the (public) RSA key. Without a secret
        configured, HS256 is not accepted at all."""
        pem = (
            rsa_key()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        header = {"alg": "HS256", "kid": "rsa1", "typ": "JWT"}
        signing_input = f"{b64(header)}.{b64(claims(scope='publish'))}".encode()
        signature = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
            signing_input, pem
        )
        token = signing_input.decode() + "." + base64.urlsafe_b64encode(signature).rstrip(
            b"="
        ).decode()  # fmt: skip
        self.assertIn("not accepted", str(self.assertRaises(TokenError, self.verifier.verify,
                                                             token)))  # fmt: skip

    def test_secret_and_keys_together(self) -> None:
        both = Verifier(SECRET, self.keys)
        self.assertTrue(both.verify(mint(SECRET, ["read"], 60)).allows("read"))
        rs = jwt.encode(claims(scope="read"), rsa_key(), "RS256", headers={"kid": "rsa1"})
        self.assertTrue(both.verify(rs).allows("read"))


class KeyFileTests(SynchronousTestCase):
    def refused(self, reader, path: Path) -> str:
        return str(self.assertRaises(KeyFileError, reader, path))

    def test_secret_file(self) -> None:
        """Surrounding whitespace (the newline an editor adds) is not part of the secret."""
        path = Path(self.mktemp())
        path.write_bytes(b"  " + SECRET + b"\n")
        self.assertEqual(read_secret(path), SECRET)

    def test_secret_file_refusals(self) -> None:
        """Missing, empty and short secrets stop the daemon; the message names the file and says
        how to make a good one."""
        missing = Path(self.mktemp())
        self.assertIn(str(missing), self.refused(read_secret, missing))
        for content in (b"", b"\n", b"short-secret"):
            path = Path(self.mktemp())
            path.write_bytes(content)
            message = self.refused(read_secret, path)
            self.assertIn("at least 32", message)
            self.assertIn("/dev/urandom", message)

    def test_jwks_refusals(self) -> None:
        rsa_entry = jwks(k=rsa_key())["keys"][0]
        private = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key(), as_dict=True)
        cases = {
            "not JSON": "{",
            "no keys": {"keys": []},
            "not a list": {"keys": {"kid": "x"}},
            "no kid": {"keys": [{k: v for k, v in rsa_entry.items() if k != "kid"}]},
            "symmetric": {"keys": [{"kty": "oct", "kid": "h", "k": b64("x" * 40)}]},
            "private": {"keys": [{**private, "kid": "p"}]},
            "broken": {"keys": [{"kty": "RSA", "kid": "b"}]},
        }
        for label, doc in cases.items():
            path = Path(self.mktemp())
            path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
            self.assertIn(str(path), self.refused(read_jwks, path), label)
        self.assertIn("cannot read", self.refused(read_jwks, Path(self.mktemp())))
