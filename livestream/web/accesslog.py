"""The access log's line for a request, without the credentials a URL may carry.

A browser's ``<video>`` element and a page opened as ``/?token=`` cannot send a header, so their
token rides in the query, and from there into the Referer of every asset the page loads. The
combined log format would write both to disk with every request: here they are blanked first.
"""

from __future__ import annotations

import re
from typing import overload
from urllib.parse import unquote_to_bytes

from twisted.web.http import combinedLogFormatter
from twisted.web.server import Request

# How Twisted splits a query into parameters (twisted.web.http.parse_qs).
_QUERY_SEPARATORS = re.compile(rb"([&;])")


def access_log_line(timestamp: str, request: Request) -> str:
    """The Site's ``logFormatter``: the combined log format, of the request with its tokens
    blanked."""
    return combinedLogFormatter(timestamp, _WithoutToken(request))


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

    @overload
    def getHeader(self, name: bytes) -> bytes | None: ...
    @overload
    def getHeader(self, name: str) -> str | None: ...
    def getHeader(self, name: bytes | str) -> bytes | str | None:
        """As :meth:`Request.getHeader`: the value is of the name's type. The log formatter asks
        by bytes, and a Referer asked for so has its token blanked."""
        if isinstance(name, str):
            return self._request.getHeader(name)
        value = self._request.getHeader(name)
        if value is not None and name == b"referer":
            return _without_token(value)
        return value

    def __getattr__(self, name: str) -> object:
        return getattr(self._request, name)
