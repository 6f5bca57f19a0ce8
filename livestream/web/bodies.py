"""A bound on HTTP request bodies: no route of the daemon reads one, so none is kept.

Twisted Web stores a body before any route (or token check) sees the request: in memory up to
100 kB, beyond that in a temporary file, without limit. One client without a token could fill the
disk under ``/tmp`` (the media tree's disk, under systemd's PrivateTmp) with one ``POST``. Here a
body is kept in memory and may be at most :data:`MAX_BODY` bytes: a larger one is answered 413,
as soon as its ``Content-Length`` or the chunks received say so, and the connection is closed.
"""

from __future__ import annotations

import json
from io import BytesIO

from twisted.logger import Logger
from twisted.web.server import Request

_log = Logger()

MAX_BODY = 64 * 1024


class BoundedRequest(Request):
    """Twisted Web's request with the body bound; the site's ``requestFactory``."""

    _received = 0
    _refused = False

    def gotLength(self, length: int | None) -> None:
        # Twisted's Request declares ``content = None`` unannotated, so mypy types it as None
        # only; Twisted's own gotLength puts a file there too (a BinaryIO, its docs say).
        self.content = BytesIO()  # type: ignore[assignment]
        if length is not None and length > MAX_BODY:
            # Twisted answers "Expect: 100-continue" after this returns: the client is told
            # 413 instead, and sends nothing.
            self.requestHeaders.removeHeader(b"expect")
            self._refuse(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > MAX_BODY:
            self._refuse(self._received)
            return
        super().handleContentChunk(data)

    def _refuse(self, size: int) -> None:
        self._refused = True
        # The method and path are not known before the body is in: the peer is.
        _log.info(
            "refused a request from {peer}: a body of {size} bytes or more",
            peer=getattr(self.getClientAddress(), "host", "?"), size=size,
        )  # fmt: skip
        body = json.dumps({
            "error": "body_too_large",
            "message": f"no request here may have a body over {MAX_BODY} bytes",
        }).encode("utf-8")  # fmt: skip
        head = (
            "HTTP/1.1 413 Content Too Large\r\n"
            "Content-Type: application/json\r\n"
            "Cache-Control: no-store\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        transport = self.channel.transport
        if transport is None:
            raise RuntimeError("a request body arrived on a channel without a connection")
        transport.write(head.encode("ascii") + body)
        self.channel.loseConnection()
