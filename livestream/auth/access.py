"""Who may connect: tokens on the WebSocket and the HTTP API, and the browser origins allowed.

One :class:`Access` holds the policy (auth off and every origin allowed by default, for local use);
the protocol and the web app ask it and turn its refusals into their own replies. Apart from the
option block at the end, nothing here touches the network or Twisted.

A token may come in three places, because browsers cannot set headers on a WebSocket: the URL
query (``?token=``), a subprotocol (``bearer.<JWT>``), or CONNECT's ``token``. One given at the
handshake is checked there, so a bad one never gets a WebSocket; a connection without one may
still open, and its CONNECT must then carry one.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from twisted.python import usage

from livestream.auth.tokens import (
    PUBLISH,
    Grant,
    KeyFileError,
    TokenError,
    Verifier,
    read_jwks,
    read_secret,
)
from livestream.wire.codes import Refusal

# Offered by clients that name the protocol; selected whenever offered, so a browser that also
# offers a bearer token never has the token echoed back.
SUBPROTOCOL = "livestream"
BEARER_PREFIX = "bearer."
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class Refused(Refusal):
    """A request the access policy turns away: a snake_case ``code``, and the HTTP ``status``
    for a refusal answered over HTTP (a handshake, a route)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status = status


def origin_key(origin: str) -> str | None:
    """An origin as ``scheme://host:port`` (lower case, default port explicit), so that
    ``https://App.example.com`` and ``https://app.example.com:443`` compare equal; ``None`` for
    anything that is not an origin. ``null`` (file:// pages, sandboxed frames) stays ``null``."""
    if origin.strip().lower() == "null":
        return "null"
    try:
        parts = urlsplit(origin.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    host = parts.hostname
    if not parts.scheme or not host or parts.path not in ("", "/") or parts.query:
        return None
    if parts.username is not None or parts.fragment:
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


def select_subprotocol(offered: list[str]) -> str | None:
    """``livestream`` if offered, else an offered bearer token: a browser fails a connection whose
    offered subprotocols the server does not answer with one of them."""
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    return next((p for p in offered if p.startswith(BEARER_PREFIX)), None)


@dataclass(frozen=True)
class Access:
    """The policy: ``verifier`` is ``None`` when authentication is off; ``origins`` holds the
    allowed origin patterns (as :func:`origin_key` writes them), empty when any origin may
    connect."""

    verifier: Verifier | None = None
    origins: tuple[str, ...] = ()

    def describe(self) -> str:
        auth = "on" if self.verifier is not None else "off (anyone who can connect may publish)"
        origins = ", ".join(self.origins) if self.origins else "any"
        return f"authentication {auth}; browser origins allowed: {origins}"

    def origin_allowed(self, origin: str | None) -> bool:
        """Clients that send no Origin (not browsers) are not checked: they could send any."""
        if origin is None or not self.origins:
            return True
        key = origin_key(origin)
        return key is not None and any(fnmatchcase(key, pattern) for pattern in self.origins)

    def handshake(
        self, origin: str | None, params: dict[str, list[str]], offered: list[str]
    ) -> tuple[str | None, str | None]:
        """Check a WebSocket opening handshake; return the token it carried (for CONNECT to use)
        and the subprotocol to select, or raise :class:`Refused`."""
        if not self.origin_allowed(origin):
            raise Refused(403, "forbidden", "origin not allowed")
        subprotocol = select_subprotocol(offered)
        if self.verifier is None:
            return None, subprotocol
        tokens = params.get("token", []) + [
            p.removeprefix(BEARER_PREFIX) for p in offered if p.startswith(BEARER_PREFIX)
        ]
        if len(tokens) > 1:
            raise Refused(400, "invalid_request", "more than one token")
        if not tokens:
            return None, subprotocol
        self.authorize(tokens[0], PUBLISH)
        return tokens[0], subprotocol

    def authorize(self, token: str | None, scope: str) -> Grant | None:
        """The grant of ``token`` if it allows ``scope``; ``None`` when authentication is off.
        401 for no token or a token that does not verify, 403 for a good token without
        ``scope``."""
        if self.verifier is None:
            return None
        if not token:
            raise Refused(401, "unauthorized", "this server needs an access token")
        try:
            grant = self.verifier.verify(token)
        except TokenError as e:
            raise Refused(401, "unauthorized", str(e)) from None
        if not grant.allows(scope):
            raise Refused(403, "forbidden", f'the token lacks the "{scope}" scope')
        return grant

    def authorize_publish(self, client_id: str, token: str | None) -> Grant | None:
        """CONNECT's check: a token with ``publish`` that names this id."""
        grant = self.authorize(token, PUBLISH)
        if grant is not None and not grant.allows_id(client_id):
            raise Refused(
                403, "forbidden", f"the token does not allow publishing as {client_id[:40]!r}"
            )
        return grant


class AccessOptions(usage.Options):
    """The options of who may connect, a block of their own; :meth:`access` reads them once."""

    optParameters: list[list[object]] = [
        ["auth-secret-file", None, None,
         "Turn authentication on (default: off): verify HS256 tokens with the secret in this "
         "file (at least 32 bytes; keep it private). Mint tokens with livestream-token."],
        ["auth-jwks", None, None,
         "Turn authentication on: verify RS/PS/ES/EdDSA tokens with the public keys of this "
         "local JWKS file, chosen by the token's kid."],
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self["allow-origin"] = []

    def opt_allow_origin(self, origin: str) -> None:
        """Browser origin that may open a WebSocket, repeatable (default: any); e.g. https://app.example.com, https://*.example.com:8443, null. Clients that send no Origin are not browsers and are not checked."""  # noqa: E501
        key = origin_key(origin)
        if key is None:
            raise usage.UsageError(
                f"--allow-origin {origin!r} is not an origin; write it as a browser sends it, "
                "e.g. https://app.example.com"
            )
        self["allow-origin"].append(key)

    def access(self) -> Access:
        """Read the key files now, so a missing or weak one stops the daemon at start."""
        try:
            secret = read_secret(self["auth-secret-file"]) if self["auth-secret-file"] else None
            keys = read_jwks(self["auth-jwks"]) if self["auth-jwks"] else None
        except KeyFileError as e:
            raise usage.UsageError(str(e)) from None
        verifier = Verifier(secret, keys) if secret or keys else None
        return Access(verifier, tuple(self["allow-origin"]))


OPEN = Access()
