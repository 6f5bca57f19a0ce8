"""The web page: its files (shipped in the package, no build step), what it must know about the
daemon, and the viewer WebSocket of a live session (which the page watched through before it
played the session's HLS, kept for the clients written for it). ``web.app`` mounts these on its
routes."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from twisted.web.static import File

from livestream.auth.access import Access
from livestream.sessions.session import Session
from livestream.web.live import ViewerFactory

STATIC = Path(str(resources.files("livestream") / "static"))
# No hashed file names (no build step), so browsers revalidate each time: Last-Modified makes
# that a 304 when nothing changed.
CACHE = "no-cache"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class _NotFound(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return error(request, 404, "not_found", "no such file")


class _Assets(File):
    """The package's static files: explicit content types, no directory listings."""

    contentTypes = TYPES
    indexNames: list[str] = []
    # File types childNotFound as its own (private) error page, yet only renders it or returns
    # it as a child: any resource will do, and this one answers in JSON.
    childNotFound = _NotFound()  # type: ignore[assignment]

    def directoryListing(self) -> IResource:
        return self.childNotFound

    def render(self, request: Request) -> bytes | int:
        request.setHeader("cache-control", CACHE)
        request.setHeader("x-content-type-options", "nosniff")
        return super().render(request)


def error(request: Request, status: int, code: str, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json")
    request.setHeader("cache-control", "no-store")
    return json.dumps({"error": code, "message": message}).encode("utf-8")


def wants_html(request: Request) -> bool:
    """Browsers ask for ``text/html`` when they open a page; curl and other clients do not."""
    accept = request.getHeader(b"accept") or b""
    return b"text/html" in accept.lower()


class Page:
    def __init__(
        self,
        sessions: Callable[[], tuple[Session, ...]],
        access: Access,
        fps: int,
        resume_grace: float = 0.0,
    ) -> None:
        """``sessions``: what returns the live sessions now (the registry's ``sessions``);
        ``resume_grace``: how long a dropped session waits for its client (--resume-grace)."""
        self._access = access
        self._fps = fps
        self._resume_grace = resume_grace
        self.assets: IResource = _Assets(str(STATIC), defaultType="application/octet-stream")
        self._live = WebSocketResource(ViewerFactory(sessions, access, fps))

    def live(self, request: Request) -> IResource | bytes:
        """The viewer WebSocket of a live session (see :mod:`livestream.live`)."""
        if (request.getHeader(b"upgrade") or b"").lower() != b"websocket":
            return error(request, 400, "websocket_expected", "open this URL as a WebSocket")
        return self._live

    def index(self, request: Request) -> bytes:
        """The page may be opened as ``/?token=<JWT>``: no-referrer keeps that URL out of the
        requests it makes (and the logs of proxies on their way)."""
        request.setHeader("content-type", TYPES[".html"])
        request.setHeader("cache-control", CACHE)
        request.setHeader("x-content-type-options", "nosniff")
        request.setHeader("referrer-policy", "no-referrer")
        return (STATIC / "index.html").read_bytes()

    def config(self, request: Request) -> bytes:
        """What the page must know before it can stream: the frame rate it sends at, whether it
        needs a token, and how long it may take to come back after a dropped connection. Open to
        anyone: nothing in it is secret."""
        request.setHeader("content-type", "application/json")
        request.setHeader("cache-control", "no-store")
        body = {
            "fps": self._fps,
            "auth": self._access.verifier is not None,
            "resumeGrace": self._resume_grace,
        }
        return json.dumps(body).encode("utf-8")
