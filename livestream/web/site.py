"""The one Twisted Site of the port: the Klein app (with the WebSocket upgrade at ``/``) behind
the UTF-8 check, requests with bounded bodies, a deadline on request headers, and the access
log without tokens.

What :mod:`livestream.daemon.service` listens with; tests build it the same way.
"""

from __future__ import annotations

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.web.server import Site

from livestream.auth.access import OPEN, Access
from livestream.bucket.objectstore import ObjectStore
from livestream.hls.streams import LiveStreams
from livestream.library.index import RecordingIndex
from livestream.library.local import Library
from livestream.library.tree import MediaTree
from livestream.ops.health import Health
from livestream.ops.metrics import Metrics
from livestream.sessions.registry import SessionRegistry
from livestream.web.accesslog import access_log_line
from livestream.web.app import WebApp
from livestream.web.bodies import BoundedRequest
from livestream.web.deadline import HeaderDeadlineSite
from livestream.web.page import Page
from livestream.web.utf8only import Utf8Only


def make_site(
    tree: MediaTree,
    factory: WebSocketServerFactory,
    page: Page,
    access: Access = OPEN,
    header_timeout: float = 10.0,
    *,
    index: RecordingIndex,
    registry: SessionRegistry | None = None,
    health: Health | None = None,
    metrics: Metrics | None = None,
    library: Library | None = None,
    objects: ObjectStore | None = None,
    presign: int = 0,
    live: LiveStreams | None = None,
) -> Site:
    """``index`` answers the listings; ``registry`` is where ``/api/sessions`` finds live
    sessions (none without one); ``health`` what ``/healthz`` checks (by default the media
    tree and an ``ffmpeg`` on PATH); ``library``, ``objects`` and ``presign`` as for
    :class:`WebApp`; ``live`` the sessions' HLS streams (none without)."""
    app = WebApp(
        tree,
        WebSocketResource(factory),
        page,
        access,
        index=index,
        registry=registry,
        health=health if health is not None else Health(tree, "ffmpeg"),
        metrics=metrics,
        library=library,
        objects=objects,
        presign=presign,
        live=live,
    )
    # Plain HTTP/1.1 (a WebSocket upgrade needs no HTTP/2) with a deadline on request headers.
    site = HeaderDeadlineSite(
        Utf8Only(app.app.resource()),
        header_timeout,
        requestFactory=BoundedRequest,
        logFormatter=access_log_line,
    )
    site.displayTracebacks = False
    return site
