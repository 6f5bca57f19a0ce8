"""The HTTP side of the one port: the recordings API, and the WebSocket upgrade at ``/``."""

from __future__ import annotations

import json

from autobahn.twisted.resource import WebSocketResource
from klein import Klein
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from livestream.store import MediaStore


class WebApp:
    app = Klein()

    def __init__(self, store: MediaStore, websocket: IResource) -> None:
        self._store = store
        self._websocket = websocket

    @app.route("/", branch=False)
    def root(self, request: Request) -> IResource | bytes:
        """Clients of the seed connect to ``ws://host:8080/``: hand the upgrade to Autobahn."""
        if request.getHeader("upgrade") is not None:
            return self._websocket
        request.setHeader("content-type", "text/plain; charset=utf-8")
        return (
            b"livestream: connect a WebSocket to this URL to record; "
            b"GET /recordings lists the recordings.\n"
        )

    @app.route("/recordings", methods=["GET"])
    def recordings(self, request: Request) -> bytes:
        request.setHeader("content-type", "application/json")
        request.setHeader("cache-control", "no-store")
        return json.dumps(self._store.listing()).encode("utf-8")


def make_site(store: MediaStore, factory) -> Site:
    site = Site(WebApp(store, WebSocketResource(factory)).app.resource())
    site.displayTracebacks = False
    return site
