"""The HTTP side of the one port: the recordings API, and the WebSocket upgrade at ``/``."""

from __future__ import annotations

import errno
import functools
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote_to_bytes

from autobahn.twisted.resource import WebSocketResource
from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import CACHED, combinedLogFormatter
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site
from twisted.web.static import File
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from livestream.auth.access import OPEN, Access, Refused
from livestream.auth.tokens import DELETE, METRICS, READ
from livestream.bucket.objectstore import ObjectStore
from livestream.library.catalog import iso_utc
from livestream.library.local import Found, Library, LocalFile, LocalLibrary, StoreUnavailable
from livestream.library.tree import POSTER_SUFFIX, POSTER_TYPE, MediaStore, is_recording_name
from livestream.ops.health import FAIL, Health
from livestream.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from livestream.ops.metrics import Metrics
from livestream.sessions.registry import SessionRegistry
from livestream.web.bodies import BoundedRequest
from livestream.web.deadline import HeaderDeadlineChannel
from livestream.web.objectfile import ObjectFile
from livestream.web.page import Page, wants_html
from livestream.wire.kinds import AUDIO, VIDEO, MediaKind

_log = Logger()

# How Twisted splits a query into parameters (twisted.web.http.parse_qs).
_QUERY_SEPARATORS = re.compile(rb"([&;])")


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
    # As bytes: HTTP lets a header hold any octet, and a str would be decoded as UTF-8 (a 500).
    raw = request.getHeader(b"authorization")
    if raw is not None:
        scheme, _, value = raw.decode("latin-1").partition(" ")
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


def _json(request: Request, status: int, document: object) -> bytes:
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json")
    request.setHeader("cache-control", "no-store")
    return json.dumps(document).encode("utf-8")


def _error(request: Request, status: int, code: str, message: str) -> bytes:
    return _json(request, status, {"error": code, "message": message})


def _not_found(request: Request) -> bytes:
    return _error(request, 404, "not_found", "no such recording")


def _unavailable(request: Request, error: StoreUnavailable) -> bytes:
    return _error(request, 503, "store_unavailable", str(error))


class MediaFile(File):
    """One finished file, served by :class:`File` (Range, HEAD, Last-Modified) with a fixed
    content type, an ETag, and never through a symlink: the route checked the name and that the
    path is a regular file, and opening with ``O_NOFOLLOW`` keeps a symlink swapped in since
    from being followed out of the media tree."""

    isLeaf = True

    def __init__(self, path: Path, content_type: str, st: os.stat_result) -> None:
        super().__init__(os.fspath(path), defaultType=content_type)
        self.type, self.encoding = content_type, None
        self._etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'.encode("ascii")

    def render_GET(self, request: Request) -> bytes | int:
        if request.setETag(self._etag) is CACHED:
            return b""
        return super().render_GET(request)

    render_HEAD = render_GET

    def openForReading(self):
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise PermissionError(errno.EACCES, "not a regular file", self.path) from None
            raise
        return os.fdopen(fd, "rb")


def _name_of(filename: str, suffix: str, bare: bool = False) -> str | None:
    """The recording name in a URL's file name, or None for anything this store could not have
    made (``..``, separators, NUL, another suffix). ``bare`` also accepts the name alone."""
    if filename.endswith(suffix):
        name = filename[: -len(suffix)]
    elif bare:
        name = filename
    else:
        return None
    return name if is_recording_name(name) else None


class WebApp:
    app = Klein()

    def __init__(
        self,
        store: MediaStore,
        websocket: IResource,
        page: Page,
        access: Access = OPEN,
        *,
        registry: SessionRegistry | None = None,
        health: Health,
        metrics: Metrics | None = None,
        library: Library | None = None,
        objects: ObjectStore | None = None,
        presign: int = 0,
    ) -> None:
        """``library`` is what the recordings routes act on (default: the media tree);
        ``objects`` the bucket its stored objects are read from, and ``presign`` the seconds
        a presigned URL lasts when downloads are redirected to the store (0: streamed here)."""
        self._store = store
        self._websocket = websocket
        self._page = page
        self._access = access
        self._registry = registry
        self._health = health
        self._library = library if library is not None else LocalLibrary(store)
        self._objects = objects
        self._presign = presign
        self._metrics = metrics

    @app.handle_errors(NotFound)
    def not_found(self, request: Request, failure: Failure) -> bytes:
        return _error(request, 404, "not_found", "no such resource")

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(self, request: Request, failure: Failure) -> bytes:
        allowed = sorted(failure.value.valid_methods or [])
        request.setHeader("allow", ", ".join(allowed))
        return _error(request, 405, "method_not_allowed", "allowed: " + ", ".join(allowed))

    @app.handle_errors
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
        return _error(request, 500, "internal_error", "the server could not answer this request")

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

    @app.route("/recordings", methods=["GET"])
    @requires(READ)
    async def recordings(self, request: Request) -> bytes:
        try:
            listing = await self._library.listing()
        except StoreUnavailable as e:
            return _unavailable(request, e)
        request.setHeader("content-type", "application/json")
        request.setHeader("cache-control", "no-store")
        return json.dumps(listing).encode("utf-8")

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
            return _not_found(request)
        try:
            found = await self._library.find(kind, name)
        except StoreUnavailable as e:
            return _unavailable(request, e)
        if found is None:
            return _not_found(request)
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
        try:
            found = await self._library.find_poster(name) if name else None
        except StoreUnavailable as e:
            return _unavailable(request, e)
        if found is None:
            return _error(request, 404, "not_found", "no such poster")
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
            return _not_found(request)
        try:
            deleted = await self._library.delete(kind, name)
        except StoreUnavailable as e:
            return _unavailable(request, e)
        if not deleted:
            return _not_found(request)
        _log.info(
            "deleted {kind} {name} for {peer}", kind=kind, name=name,
            peer=getattr(request.getClientAddress(), "host", "?"),
        )  # fmt: skip
        request.setResponseCode(204)
        return b""

    @app.route("/api/recordings", methods=["GET"])
    @requires(READ)
    async def details(self, request: Request) -> bytes:
        try:
            recordings = await self._library.details()
        except StoreUnavailable as e:
            return _unavailable(request, e)
        return _json(request, 200, {"recordings": recordings})

    @app.route("/api/sessions", methods=["GET"])
    @requires(READ)
    def sessions(self, request: Request) -> bytes:
        live = self._registry.sessions if self._registry is not None else ()
        return _json(request, 200, {"sessions": [
            {"id": s.client_id, "recording": s.name, "frames": s.frames, "bytes": s.bytes,
             "since": iso_utc(s.started), "peer": s.peer}
            for s in sorted(live, key=lambda s: (s.started, s.name))
        ]})  # fmt: skip

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: Request) -> bytes:
        """Open without a token: probes do not carry one, and it tells nothing about recordings."""
        status, checks = self._health.status()
        document = {"status": status, "checks": checks}
        return _json(request, 503 if status == FAIL else 200, document)

    @app.route("/metrics", methods=["GET"])
    @requires(METRICS)
    def metrics(self, request: Request) -> bytes:
        if self._metrics is None:
            return _error(request, 404, "not_found", "no metrics here")
        request.setHeader("content-type", METRICS_CONTENT_TYPE)
        request.setHeader("cache-control", "no-store")
        return self._metrics.render()


def _without_token(url: bytes) -> bytes:
    """``url`` with the value of every query parameter Twisted reads as ``token`` (its name
    percent-decoded: ``%74oken`` is one) blanked."""
    path, mark, rest = url.partition(b"?")
    if not mark:
        return url
    query, hash_mark, fragment = rest.partition(b"#")
    parts = _QUERY_SEPARATORS.split(query)
    for i in range(0, len(parts), 2):
        name, equals, _ = parts[i].partition(b"=")
        if equals and unquote_to_bytes(name.replace(b"+", b" ")) == b"token":
            parts[i] = name + b"=-"
    return path + mark + b"".join(parts) + hash_mark + fragment


class _WithoutToken:
    """A request as the access log sees it: a ``token`` parameter in the URI, and in the Referer
    (a page opened as ``/?token=`` loads its assets with that Referer), is blanked, since a log is
    no place for a credential."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.uri = _without_token(request.uri)

    def getHeader(self, name: bytes | str) -> bytes | str | None:
        value = self._request.getHeader(name)
        if isinstance(value, bytes) and name in (b"referer", "referer"):
            return _without_token(value)
        return value

    def __getattr__(self, name: str) -> object:
        return getattr(self._request, name)


class _Utf8Only(Resource):
    """Klein decodes the host and the path as UTF-8 before it routes, and answers what does not
    decode in plain text, with a traceback in the log. No route could match such a URL: it is
    answered here, as any other bad request, before Klein sees it."""

    isLeaf = True

    def __init__(self, app: Resource) -> None:
        super().__init__()
        self._app = app

    def render(self, request: Request) -> bytes | int:
        try:
            request.getRequestHostname().decode("utf-8")
            b"/".join(request.prepath + request.postpath).decode("utf-8")
        except UnicodeDecodeError:
            return _error(request, 400, "bad_url", "the host or path of the URL is not UTF-8")
        return self._app.render(request)


def _access_log_line(timestamp: str, request: Request) -> str:
    return combinedLogFormatter(timestamp, _WithoutToken(request))


def make_site(
    store: MediaStore,
    factory,
    page: Page,
    access: Access = OPEN,
    header_timeout: float = 10.0,
    *,
    registry: SessionRegistry | None = None,
    health: Health | None = None,
    metrics: Metrics | None = None,
    library: Library | None = None,
    objects: ObjectStore | None = None,
    presign: int = 0,
) -> Site:
    """``registry`` is where ``/api/sessions`` finds live sessions (none without one);
    ``health`` what ``/healthz`` checks (by default the media tree and an ``ffmpeg`` on PATH);
    ``library``, ``objects`` and ``presign`` as for :class:`WebApp`."""
    app = WebApp(
        store,
        WebSocketResource(factory),
        page,
        access,
        registry=registry,
        health=health if health is not None else Health(store, "ffmpeg"),
        metrics=metrics,
        library=library,
        objects=objects,
        presign=presign,
    )
    site = Site(
        _Utf8Only(app.app.resource()), requestFactory=BoundedRequest, logFormatter=_access_log_line
    )
    site.displayTracebacks = False
    # Plain HTTP/1.1 (a WebSocket upgrade needs no HTTP/2) with a deadline on request headers.
    site.protocol = HeaderDeadlineChannel
    site.header_timeout = header_timeout
    return site
