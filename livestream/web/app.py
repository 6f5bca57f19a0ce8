"""The Klein routes of the one port: the recordings API, downloads, the page's routes, and the
WebSocket upgrade at ``/``; and the error handlers that answer what no route answers itself.

A route says what it answers. How is elsewhere in ``web``: ``answers`` (JSON), ``guard``
(tokens), ``mediafile`` and ``objectfile`` (the files); ``site`` puts the app on the port.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from klein import Klein, KleinErrorHandler
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from livestream.auth.access import OPEN, Access
from livestream.auth.tokens import DELETE, METRICS, READ
from livestream.bucket.objectstore import ObjectStore
from livestream.hls.streams import LiveStreams
from livestream.library import query as queries
from livestream.library.catalog import entry, full_entry, iso_utc
from livestream.library.index import RecordingIndex
from livestream.library.local import Found, Library, LocalFile, LocalLibrary, StoreUnavailable
from livestream.library.tree import POSTER_SUFFIX, POSTER_TYPE, MediaTree, is_recording_name
from livestream.ops.health import FAIL, Health
from livestream.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from livestream.ops.metrics import Metrics
from livestream.sessions.registry import SessionRegistry
from livestream.web.answers import error_answer, json_answer, no_such_recording
from livestream.web.guard import requires
from livestream.web.hls import LiveHls, cross_origin, live_playlist, preflight
from livestream.web.mediafile import MediaFile
from livestream.web.objectfile import ObjectFile
from livestream.web.page import Page, wants_html
from livestream.wire.kinds import AUDIO, SUFFIXES, VIDEO, MediaKind

_log = Logger()


def _error_handler(
    handler: Callable[[WebApp, Request, Failure], bytes | Failure],
) -> KleinErrorHandler:
    """``handler`` as the error handler ``Klein.handle_errors`` takes, unchanged. Klein types a
    handler's request as ``IRequest``, though it passes the ``twisted.web.server.Request`` the
    Site made (its ``handle_errors`` says so); and its ``KleinRenderable`` has no ``Failure``,
    though a Failure returned goes on to the next handler. Neither can be said to it: cast."""
    return cast(KleinErrorHandler, handler)


def _name_of(filename: str, suffix: str, bare: bool = False) -> str | None:
    """The recording name in a URL's file name, or None for anything the media tree could not have
    made (``..``, separators, NUL, another suffix). ``bare`` also accepts the name alone."""
    if filename.endswith(suffix):
        name = filename[: -len(suffix)]
    elif bare:
        name = filename
    else:
        return None
    return name if is_recording_name(name) else None


class WebApp:
    """The routes, on the object that holds what they answer from (the Klein app on the class
    that holds the state, not a module global): the library, the page, the access policy, the
    live sessions, health and metrics."""

    app = Klein()

    def __init__(
        self,
        tree: MediaTree,
        websocket: IResource,
        page: Page,
        access: Access = OPEN,
        *,
        index: RecordingIndex,
        registry: SessionRegistry | None = None,
        health: Health,
        metrics: Metrics | None = None,
        library: Library | None = None,
        objects: ObjectStore | None = None,
        presign: int = 0,
        live: LiveStreams | None = None,
    ) -> None:
        """``index`` answers every listing; ``library`` finds and deletes (default: the media
        tree);
        ``objects`` the bucket its stored objects are read from, and ``presign`` the seconds
        a presigned URL lasts when downloads are redirected to the store (0: streamed here)."""
        self._tree = tree
        self._websocket = websocket
        self._page = page
        self._access = access
        self._registry = registry
        self._health = health
        self._index = index
        self._library = library if library is not None else LocalLibrary(tree, index)
        self._objects = objects
        self._presign = presign
        self._metrics = metrics
        self._hls = LiveHls(live) if live is not None else None

    @app.handle_errors(NotFound)
    @_error_handler
    def not_found(self, request: Request, failure: Failure) -> bytes:
        return error_answer(request, 404, "not_found", "no such resource")

    @app.handle_errors(MethodNotAllowed)
    @_error_handler
    def not_allowed(self, request: Request, failure: Failure) -> bytes:
        allowed = sorted(failure.value.valid_methods or [])
        request.setHeader("allow", ", ".join(allowed))
        return error_answer(request, 405, "method_not_allowed", "allowed: " + ", ".join(allowed))

    @app.handle_errors(StoreUnavailable)
    @_error_handler
    def unavailable(self, request: Request, failure: Failure) -> bytes:
        """The library could not be read or changed (its bucket did not answer): whichever
        route asked, a 503 that says so. Before :meth:`internal_error`, which takes the rest."""
        return error_answer(request, 503, "store_unavailable", str(failure.value))

    # The bare ``@app.handle_errors`` is this, but typed as returning a decorator, not the handler.
    @app.handle_errors(Exception)
    @_error_handler
    def internal_error(self, request: Request, failure: Failure) -> bytes | Failure:
        """Whatever a route did not expect: logged once with its traceback, answered as every
        other error is, without the traceback. Werkzeug's HTTP exceptions are answers, not
        failures: those without a handler above are left to Klein."""
        if failure.check(HTTPException):
            return failure
        _log.failure(
            "{method} {path} failed", failure,
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("ascii", "replace"),
        )  # fmt: skip
        return error_answer(
            request, 500, "internal_error", "the server could not answer this request"
        )

    @app.route("/", branch=False, methods=["GET", "HEAD"])
    def root(self, request: Request) -> IResource | bytes:
        """Clients of the seed connect to ``ws://host:8080/``: hand the upgrade to Autobahn.
        A browser gets the page."""
        if request.getHeader(b"upgrade") is not None:
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

    @app.route("/live/<name>/<filename>", methods=["GET", "HEAD"])
    @cross_origin
    @requires(READ)
    async def live_playlist(self, request: Request, name: str, filename: str) -> bytes:
        """A live session's HLS playlists (:mod:`livestream.web.hls`)."""
        if self._hls is None:
            return error_answer(request, 404, "not_found", "no live HLS here")
        return await self._hls.playlist(request, name, filename)

    @app.route("/live/<name>/<track>/<filename>", methods=["GET", "HEAD"])
    @cross_origin
    @requires(READ)
    async def live_media(
        self, request: Request, name: str, track: str, filename: str
    ) -> bytes | IResource:
        """A live session's init segments, parts and segments."""
        if self._hls is None:
            return error_answer(request, 404, "not_found", "no live HLS here")
        return await self._hls.media(request, name, track, filename)

    @app.route("/live/<name>/<filename>", methods=["OPTIONS"])
    @app.route("/live/<name>/<track>/<filename>", methods=["OPTIONS"])
    @cross_origin
    def live_preflight(self, request: Request, **_: str) -> bytes:
        return preflight(request)

    @app.route("/recordings", methods=["GET"])
    @requires(READ)
    async def recordings(self, request: Request) -> IResource | bytes:
        """Every name, in one document as large as the library: written to a file off the
        reactor when the library has changed since the last, and served from it in pieces
        (with an ETag, so a poller that has it gets a 304)."""
        found = await self._index.seed_listing()
        if isinstance(found, bytes):
            request.setHeader("content-type", "application/json")
            request.setHeader("cache-control", "no-store")
            return found
        request.setHeader("cache-control", "no-cache")
        return MediaFile(found, "application/json", found.stat())

    @app.route("/recordings/video/<filename>", methods=["GET", "HEAD"])
    @requires(READ)
    async def video(self, request: Request, filename: str) -> IResource | bytes:
        return await self._serve(request, VIDEO, filename)

    @app.route("/recordings/audio/<filename>", methods=["GET", "HEAD"])
    @requires(READ)
    async def audio(self, request: Request, filename: str) -> IResource | bytes:
        return await self._serve(request, AUDIO, filename)

    async def _serve(self, request: Request, kind: MediaKind, filename: str) -> IResource | bytes:
        name = _name_of(filename, kind.suffix)
        if name is None:
            return no_such_recording(request)
        found = await self._library.find(kind, name)
        if found is None:
            return no_such_recording(request)
        return self._file(found, kind.content_type)

    def _file(self, found: Found, content_type: str) -> IResource:
        """A local file as :class:`MediaFile`; an object of the bucket streamed or redirected."""
        if isinstance(found, LocalFile):
            return MediaFile(found.path, content_type, found.st)
        assert self._objects is not None, "an object was found without a bucket"
        return ObjectFile(self._objects, found, self._presign)

    @app.route("/recordings/posters/<filename>", methods=["GET", "HEAD"])
    @requires(READ)
    async def poster(self, request: Request, filename: str) -> IResource | bytes:
        name = _name_of(filename, POSTER_SUFFIX)
        found = await self._library.find_poster(name) if name else None
        if found is None:
            return error_answer(request, 404, "not_found", "no such poster")
        return self._file(found, POSTER_TYPE)

    @app.route("/recordings/video/<filename>", methods=["DELETE"])
    @requires(DELETE)
    async def delete_video(self, request: Request, filename: str) -> bytes:
        return await self._delete(request, VIDEO, filename)

    @app.route("/recordings/audio/<filename>", methods=["DELETE"])
    @requires(DELETE)
    async def delete_audio(self, request: Request, filename: str) -> bytes:
        return await self._delete(request, AUDIO, filename)

    async def _delete(self, request: Request, kind: MediaKind, filename: str) -> bytes:
        """A recording still being made is in ``temp/``, so it is not found here."""
        name = _name_of(filename, kind.suffix, bare=True)
        if name is None:
            return no_such_recording(request)
        if not await self._library.delete(kind, name):
            return no_such_recording(request)
        _log.info(
            "deleted {kind} {name} for {peer}", kind=kind, name=name,
            peer=getattr(request.getClientAddress(), "host", "?"),
        )  # fmt: skip
        request.setResponseCode(204)
        return b""

    @app.route("/api/recordings", methods=["GET"])
    @requires(READ)
    async def details(self, request: Request) -> bytes:
        """A page of the recordings (``library.query`` says which): newest first unless asked
        otherwise, the total matching, and the cursor of the next page."""
        try:
            query = queries.parse(request.args or {})
        except queries.BadQuery as e:
            return error_answer(request, 400, "bad_query", str(e))
        found = await self._index.page(query)
        return json_answer(request, 200, {
            "recordings": [entry(row) for row in found.rows],
            "total": found.total,
            "next": found.next,
        })  # fmt: skip

    @app.route("/api/recordings/<kind>/<filename>", methods=["GET"])
    @requires(READ)
    async def detail(self, request: Request, kind: str, filename: str) -> bytes:
        """One recording's entry, as its page would give it."""
        suffix = SUFFIXES.get(kind)
        name = _name_of(filename, suffix) if suffix is not None else None
        row = await self._index.get(kind, name) if name is not None else None
        if row is None:
            return no_such_recording(request)
        return json_answer(request, 200, full_entry(row))

    @app.route("/api/sessions", methods=["GET"])
    @requires(READ)
    def sessions(self, request: Request) -> bytes:
        live = self._registry.sessions if self._registry is not None else ()
        return json_answer(request, 200, {"sessions": [
            {"id": s.client_id, "recording": s.name, "frames": s.frames, "bytes": s.bytes,
             "since": iso_utc(s.started), "peer": s.peer, "video": s.media.video,
             "audio": s.media.audio, "codec": s.video_codec,
             "playlist": live_playlist(s.name)}
            for s in sorted(live, key=lambda s: (s.started, s.name))
        ]})  # fmt: skip

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: Request) -> bytes:
        """Open without a token: probes do not carry one, and it tells nothing about recordings."""
        status, checks = self._health.status()
        document = {"status": status, "checks": checks}
        return json_answer(request, 503 if status == FAIL else 200, document)

    @app.route("/metrics", methods=["GET"])
    @requires(METRICS)
    def metrics(self, request: Request) -> bytes:
        if self._metrics is None:
            return error_answer(request, 404, "not_found", "no metrics here")
        request.setHeader("content-type", METRICS_CONTENT_TYPE)
        request.setHeader("cache-control", "no-store")
        return self._metrics.render()
