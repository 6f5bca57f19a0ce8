"""Access tokens: signed, expiring JWTs whose claims bound what a client may do.

Pure apart from reading key files: no Twisted, no sockets. A :class:`Verifier` turns a token into
a :class:`Grant` or refuses it with a :class:`TokenError` whose message may be shown to the client
(it says why, never what the key is). HS256 tokens are checked with a shared secret; RS/ES/PS and
EdDSA tokens with the public keys of a local JWKS file, chosen by the token's ``kid``. The
algorithms a key may verify are fixed by the key, never taken from the token (RFC 8725 §2.1), so
``alg: none`` and HS256-signed-with-a-public-key tokens are refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import jwt

from livestream.wire.messages import MAX_TOKEN_LENGTH

AUDIENCE = "livestream"
# Clocks of the minting host and of the daemon may disagree by this much.
LEEWAY = 30.0
# RFC 7518 §3.2: an HS256 key at least as long as the hash output.
MIN_SECRET_BYTES = 32

PUBLISH = "publish"
READ = "read"
DELETE = "delete"
METRICS = "metrics"
SCOPES = (PUBLISH, READ, DELETE, METRICS)

ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class TokenError(Exception):
    """A token the daemon refuses; the message says why in words fit for the client."""


class KeyFileError(Exception):
    """A secret or JWKS file the daemon cannot use; the message is one line for the operator."""


@dataclass(frozen=True)
class Grant:
    """What one verified token allows.

    ``ids`` is ``None`` when the token names no ids (any id may publish), else the client ids or
    fnmatch patterns (``cam-*``) it may publish as. ``max_seconds``/``max_bytes`` bound each
    session opened with it, where the token says so.
    """

    subject: str | None
    scopes: frozenset[str]
    ids: tuple[str, ...] | None = None
    max_seconds: float | None = None
    max_bytes: int | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    def allows_id(self, client_id: str) -> bool:
        """Case-sensitive match, so ``cam-*`` does not admit ``CAM-1`` on any platform."""
        if self.ids is None:
            return True
        return any(fnmatchcase(client_id, pattern) for pattern in self.ids)


def read_secret(path: str | Path) -> bytes:
    """The HS256 secret: the file's bytes without surrounding whitespace (a trailing newline from
    an editor or ``echo`` must not change the key)."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as e:
        raise KeyFileError(f"cannot read the secret file {path}: {e.strerror or e}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise KeyFileError(
            f"the secret file {path} holds {len(secret)} bytes; it needs at least "
            f"{MIN_SECRET_BYTES} (make one: head -c 32 /dev/urandom | base64 > {path})"
        )
    return secret


def read_jwks(path: str | Path) -> dict[str, jwt.PyJWK]:
    """The public keys of a JWKS file, by ``kid``. Every key needs a ``kid`` and an asymmetric
    algorithm: a symmetric key here would verify tokens anyone holding the file could mint."""
    try:
        doc = json.loads(Path(path).read_bytes())
    except OSError as e:
        raise KeyFileError(f"cannot read the JWKS file {path}: {e.strerror or e}") from None
    except ValueError:
        raise KeyFileError(f"the JWKS file {path} is not JSON") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise KeyFileError(f'the JWKS file {path} has no "keys" list')
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if not isinstance(kid, str) or not kid:
            raise KeyFileError(f'every key in the JWKS file {path} needs a "kid"')
        if "d" in entry:
            raise KeyFileError(f"key {kid!r} in {path} is a private key; give the public key only")
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError as e:
            raise KeyFileError(f"key {kid!r} in {path} is not usable: {e}") from None
        if key.algorithm_name not in ASYMMETRIC:
            raise KeyFileError(
                f"key {kid!r} in {path} is for {key.algorithm_name}; the JWKS file is for "
                "public keys (RS/PS/ES/EdDSA), HS256 uses --auth-secret-file"
            )
        keys[kid] = key
    return keys


class Verifier:
    """Checks tokens against the configured keys: an HS256 secret, JWKS public keys, or both."""

    def __init__(
        self, secret: bytes | None = None, public_keys: dict[str, jwt.PyJWK] | None = None
    ) -> None:
        if not secret and not public_keys:
            raise ValueError("a Verifier needs a secret or public keys")
        self._secret = secret
        self._public_keys = dict(public_keys or {})

    def verify(self, token: str) -> Grant:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        key: bytes | jwt.PyJWK
        if alg == "HS256" and self._secret is not None:
            key, algorithm = self._secret, "HS256"
        elif isinstance(alg, str) and alg in ASYMMETRIC and self._public_keys:
            found = self._public_keys.get(kid) if isinstance(kid, str) else None
            if found is None:
                raise TokenError("token signed with an unknown key (kid)")
            if found.algorithm_name != alg:
                raise TokenError(f"key {kid!r} does not sign {alg}")
            key, algorithm = found, found.algorithm_name
        else:
            raise TokenError(f"token algorithm {str(alg)[:20]!r} is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=AUDIENCE,
                leeway=LEEWAY,
                options={"require": ["exp", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token not valid yet") from None
        except jwt.InvalidSignatureError:
            raise TokenError("token signature does not verify") from None
        except jwt.InvalidAudienceError:
            raise TokenError(f'token is not for "{AUDIENCE}" (aud)') from None
        except jwt.MissingRequiredClaimError as e:
            raise TokenError(f'token has no "{e.claim}" claim') from None
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        return grant_from_claims(claims)


def grant_from_claims(claims: dict[str, object]) -> Grant:
    """Read the livestream claims; a claim of the wrong type refuses the whole token rather than
    being ignored, since ignoring ``ids`` would widen what the token allows."""
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise TokenError('"scope" must be a space-separated string')
    ids = claims.get("ids")
    if ids is not None and not (
        isinstance(ids, list) and all(isinstance(i, str) and i for i in ids)
    ):
        raise TokenError('"ids" must be a list of client ids or patterns')
    subject = claims.get("sub")
    if subject is not None and not isinstance(subject, str):
        raise TokenError('"sub" must be a string')
    return Grant(
        subject=subject,
        scopes=frozenset(scope.split()),
        ids=tuple(ids) if ids is not None else None,
        max_seconds=_positive(claims, "max_seconds", (int, float)),
        max_bytes=_positive(claims, "max_bytes", (int,)),
    )


def _positive(claims: dict[str, object], name: str, types: tuple[type, ...]) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, types) or not value > 0:
        raise TokenError(f'"{name}" must be a positive number')
    return value


def mint(
    secret: bytes,
    scopes: Iterable[str],
    ttl: float,
    *,
    ids: Iterable[str] | None = None,
    subject: str | None = None,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token the daemon holding ``secret`` accepts for ``ttl`` seconds."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "aud": AUDIENCE,
        "iat": issued,
        "exp": issued + max(1, round(ttl)),
        "scope": " ".join(scopes),
    }
    optional = {"sub": subject, "max_seconds": max_seconds, "max_bytes": max_bytes}
    claims.update({k: v for k, v in optional.items() if v is not None})
    if ids is not None:
        claims["ids"] = list(ids)
    return jwt.encode(claims, secret, algorithm="HS256")
