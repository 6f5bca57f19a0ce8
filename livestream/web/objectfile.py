"""One object of the bucket served over HTTP as :class:`twisted.web.static.File` serves a file:
Content-Length, Accept-Ranges, one ``Range`` (206, or 416 when unsatisfiable), HEAD, ETag and
Last-Modified; or, with ``--presign``, a redirect to a presigned URL of the store.

The body streams: 256 KiB at a time read in the object store's thread pool, each written when
the last was, paused while the client's connection is backed up, and abandoned (the GET to the
store closed) when the client goes away. Memory per download is one chunk, whatever the object.
"""

from __future__ import annotations

import re
from typing import Literal

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import CACHED
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from livestream.bucket.objectstore import CONTENT_TYPES, Download, ObjectStore
from livestream.library.local import StoredObject

_log = Logger()

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | Literal[False]:
    """``(first, last)`` of one satisfiable byte range; None to send the whole object (no
    header, several ranges, or one this parser does not understand: RFC 9110 lets a server
    ignore Range); False when the range cannot be satisfied (416)."""
    if header is None:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    start, end = match.groups()
    if not start and not end:
        return None
    if not start:
        suffix = int(end)
        if suffix == 0 or size == 0:
            return False
        return max(0, size - suffix), size - 1
    first = int(start)
    last = int(end) if end else size - 1
    if end and last < first:
        return None
    if first >= size:
        return False
    return first, min(last, size - 1)


class ObjectFile(Resource):
    isLeaf = True

    def __init__(self, objects: ObjectStore, found: StoredObject, presign: int = 0) -> None:
        super().__init__()
        self._objects = objects
        self._found = found
        self._presign = presign
        self._type = CONTENT_TYPES[found.kind]

    def render_HEAD(self, request: Request) -> bytes:
        self._headers(request)
        return b""

    def render_GET(self, request: Request) -> bytes | int:
        found = self._found
        if self._presign:
            signed = self._objects.presigned_url(found.kind, found.filename, self._presign)
            signed.addCallbacks(lambda url: _redirect(request, url), lambda f: _failed(request, f))
            return NOT_DONE_YET
        span = self._headers(request)
        if span is None:
            return b""
        first, last = span
        if last < first:  # an empty object: nothing to fetch
            return b""
        opened = self._objects.open(found.kind, found.filename, first, last)
        opened.addCallbacks(lambda download: self._stream(request, download),
                            lambda f: _failed(request, f))  # fmt: skip
        return NOT_DONE_YET

    def _headers(self, request: Request) -> tuple[int, int] | None:
        """Set status and headers; the span of bytes to send, or None when there is no body
        (304, 416)."""
        found = self._found
        size = found.size
        request.setHeader("accept-ranges", "bytes")
        request.setHeader("content-type", self._type)
        request.setLastModified(found.modified)
        etag = f'"{size:x}-{int(found.modified * 1000):x}"'.encode("ascii")
        if request.setETag(etag) is CACHED:
            return None
        raw = request.getHeader(b"range")  # bytes: a str is decoded as UTF-8, which may fail
        span = parse_range(raw.decode("latin-1") if raw is not None else None, size)
        if span is False:
            request.setResponseCode(416)
            request.setHeader("content-range", f"bytes */{size}")
            request.setHeader("content-length", "0")
            return None
        if span is None:
            request.setHeader("content-length", str(size))
            return 0, size - 1
        first, last = span
        request.setResponseCode(206)
        request.setHeader("content-range", f"bytes {first}-{last}/{size}")
        request.setHeader("content-length", str(last - first + 1))
        return first, last

    def _stream(self, request: Request, download: Download | None) -> None:
        if download is None:  # deleted since it was listed
            request.setResponseCode(404)
            request.setHeader("content-length", "0")
            request.finish()
            return
        _Streamer(self._objects, download, request).start()


def _redirect(request: Request, url: str) -> None:
    # 307: the client repeats the same request (its Range too) at the store.
    request.setResponseCode(307)
    request.setHeader("location", url)
    request.setHeader("cache-control", "no-store")
    request.setHeader("content-length", "0")
    request.finish()


def _failed(request: Request, failure: Failure) -> None:
    """The store failed before any of the body was sent: a 502 the client can read."""
    _log.warn("cannot read from the object store: {error}", error=failure.value)
    if request.finished or request._disconnected:
        return
    body = b'{"error": "store_unavailable", "message": "the object store cannot be read"}'
    request.setResponseCode(502)
    request.setHeader("content-type", "application/json")
    request.setHeader("content-length", str(len(body)))
    request.write(body)
    request.finish()


@implementer(IPushProducer)
class _Streamer:
    """Reads the next chunk while the client takes the last one; at most one read in flight."""

    def __init__(self, objects: ObjectStore, download: Download, request: Request) -> None:
        self._objects = objects
        self._download = download
        self._request = request
        self._paused = False
        self._reading = False
        self._done = False
        self._sent = 0

    def start(self) -> None:
        self._request.registerProducer(self, True)
        self._request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._read()

    def _read(self) -> None:
        if self._done or self._paused or self._reading:
            return
        self._reading = True
        d: Deferred[bytes] = self._objects.read(self._download, CHUNK)
        d.addCallbacks(self._got, self._broke)

    def _got(self, chunk: bytes) -> None:
        self._reading = False
        if self._done:
            self._objects.close(self._download)
            return
        if not chunk:
            self._finish(complete=self._sent == self._download.length)
            return
        self._sent += len(chunk)
        self._request.write(chunk)
        self._read()

    def _broke(self, failure: Failure) -> None:
        self._reading = False
        if self._done:
            self._objects.close(self._download)
            return
        _log.warn("download from the object store broke off: {error}", error=failure.value)
        self._finish(complete=False)

    def _finish(self, complete: bool) -> None:
        self._done = True
        self._objects.close(self._download)
        self._request.unregisterProducer()
        if complete:
            self._request.finish()
        else:
            # Fewer bytes than Content-Length said: the client must see the body as cut short.
            self._request.loseConnection()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._read()

    def stopProducing(self) -> None:
        """The client went away: close the GET now, or when the read under way returns."""
        if self._done:
            return
        self._done = True
        if not self._reading:
            self._objects.close(self._download)
