"""The token check in front of an HTTP route: ``@requires(scope)``.

:class:`~livestream.auth.access.Access` decides whether a token allows a scope; this is where an
HTTP request's token is found (a header, or the query for what cannot set one) and where a
refusal becomes an answer a client can act on: 401 or 403 with the RFC 6750 challenge and a JSON
body, and one log line naming the client. A refused request never reaches its route.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol, cast

from twisted.logger import Logger
from twisted.web.server import Request

from livestream.auth.access import Access, Refused
from livestream.web.answers import error_answer

_log = Logger()


class Guarded(Protocol):
    """What a guarded route is a method of: the holder of the policy that checks its tokens."""

    _access: Access


def requires(scope: str) -> Callable:
    """With authentication on, a route needs a token with ``scope``: an ``Authorization: Bearer``
    header, or a ``token`` query parameter for what cannot set headers (a ``<video>`` element)."""

    def decorate(route: Callable) -> Callable:
        @functools.wraps(route)
        def guarded(self: Guarded, request: Request, *args: object, **kwargs: object) -> object:
            token = _token(request)
            try:
                self._access.authorize(token, scope)
            except Refused as e:
                return _refuse(request, e, scope, token is not None)
            return route(self, request, *args, **kwargs)

        return guarded

    return decorate


def _token(request: Request) -> str | None:
    # As bytes: HTTP lets a header hold any octet, and a str would be decoded as UTF-8 (a 500).
    raw = request.getHeader(b"authorization")
    if raw is not None:
        scheme, _, value = raw.decode("latin-1").partition(" ")
        return (value.strip() or None) if scheme.lower() == "bearer" else None
    # Twisted declares Request.args as a class attribute ``args = None``, so it types as None;
    # the request sets it to the parsed query (bytes to lists of bytes) before a resource sees it.
    args = cast("dict[bytes, list[bytes]]", request.args)
    values = args.get(b"token")
    return values[0].decode("ascii", "replace") if values else None


def _refuse(request: Request, error: Refused, scope: str, had_token: bool) -> bytes:
    """401 or 403 with the RFC 6750 challenge, a JSON body, and one log line naming the client."""
    _log.info(
        "refused {method} {path} from {peer}: {status} {message}",
        method=request.method.decode("ascii", "replace"),
        path=request.path.decode("ascii", "replace"),
        peer=getattr(request.getClientAddress(), "host", "?"),
        status=error.status, message=error.message,
    )  # fmt: skip
    challenge = 'Bearer realm="livestream"'
    if error.status == 403:
        challenge += f', error="insufficient_scope", scope="{scope}"'
    elif had_token:
        challenge += ', error="invalid_token"'
    request.setHeader("www-authenticate", challenge)
    return error_answer(request, error.status, error.code, error.message)
