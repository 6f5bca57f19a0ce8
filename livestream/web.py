"""The HTTP side of the one port: the recordings API, and the WebSocket upgrade at ``/``."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable

from autobahn.twisted.resource import WebSocketResource
from klein import Klein
from twisted.logger import Logger
from twisted.web.http import combinedLogFormatter
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from livestream.access import OPEN, Access, Refused
from livestream.auth import READ
from livestream.deadline import HeaderDeadlineChannel
from livestream.page import Page, wants_html
from livestream.store import MediaStore

_log = Logger()

_TOKEN_PARAM = re.compile(rb"([?&])token=[^&]*")


def requires(scope: str) -> Callable:
    """With authentication on, a route needs a token with ``scope``: an ``Authorization: Bearer``
    header, or a ``token`` query parameter for what cannot set headers (a ``<video>`` element)."""

    def decorate(route: Callable) -> Callable:
        @functools.wraps(route)
        def guarded(self: WebApp, request: Request, *args: object, **kwargs: object) -> object:
            token = _token(request)
            try:
                self._access.authorize(token, scope)
            except Refused as e:
                return _refuse(request, e, scope, token is not None)
            return route(self, request, *args, **kwargs)

        return guarded

    return decorate


def _token(request: Request) -> str | None:
    header = request.getHeader("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return (value.strip() or None) if scheme.lower() == "bearer" else None
    values = request.args.get(b"token")
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
    request.setResponseCode(error.status)
    challenge = 'Bearer realm="livestream"'
    if error.status == 403:
        challenge += f', error="insufficient_scope", scope="{scope}"'
    elif had_token:
        challenge += ', error="invalid_token"'
    request.setHeader("www-authenticate", challenge)
    request.setHeader("content-type", "application/json")
    request.setHeader("cache-control", "no-store")
    return json.dumps({"error": error.code, "message": error.message}).encode("utf-8")


class WebApp:
    app = Klein()

    def __init__(
        self, store: MediaStore, websocket: IResource, page: Page, access: Access = OPEN
    ) -> None:
        self._store = store
        self._websocket = websocket
        self._page = page
        self._access = access

    @app.route("/", branch=False)
    def root(self, request: Request) -> IResource | bytes:
        """Clients of the seed connect to ``ws://host:8080/``: hand the upgrade to Autobahn.
        A browser gets the page."""
        if request.getHeader("upgrade") is not None:
            return self._websocket
        if wants_html(request):
            return self._page.index(request)
        request.setHeader("content-type", "text/plain; charset=utf-8")
        return (
            b"livestream: connect a WebSocket to this URL to record; "
            b"GET /recordings lists the recordings.\n"
        )

    @app.route("/static/", branch=True, methods=["GET", "HEAD"])
    def static(self, request: Request) -> IResource:
        return self._page.assets

    @app.route("/api/config", methods=["GET"])
    def config(self, request: Request) -> bytes:
        return self._page.config(request)

    @app.route("/live/<name>", methods=["GET"])
    @requires(READ)
    def live(self, request: Request, name: str) -> IResource | bytes:
        return self._page.live(request)

    @app.route("/recordings", methods=["GET"])
    @requires(READ)
    def recordings(self, request: Request) -> bytes:
        request.setHeader("content-type", "application/json")
        request.setHeader("cache-control", "no-store")
        return json.dumps(self._store.listing()).encode("utf-8")


class _WithoutToken:
    """A request as the access log sees it: the URI's ``token`` parameter is blanked, since a log
    is no place for a credential."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.uri = _TOKEN_PARAM.sub(rb"\1token=-", request.uri)

    def __getattr__(self, name: str) -> object:
        return getattr(self._request, name)


def _access_log_line(timestamp: str, request: Request) -> str:
    return combinedLogFormatter(timestamp, _WithoutToken(request))


def make_site(
    store: MediaStore,
    factory,
    page: Page,
    access: Access = OPEN,
    header_timeout: float = 10.0,
) -> Site:
    site = Site(
        WebApp(store, WebSocketResource(factory), page, access).app.resource(),
        logFormatter=_access_log_line,
    )
    site.displayTracebacks = False
    # Plain HTTP/1.1 (a WebSocket upgrade needs no HTTP/2) with a deadline on request headers.
    site.protocol = HeaderDeadlineChannel
    site.header_timeout = header_timeout
    return site
