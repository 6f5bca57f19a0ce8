"""A deadline for each HTTP request's headers, against slowloris clients.

Twisted Web's idle timeout restarts with every byte, so a client dripping its headers a byte at a
time could hold a connection for days. Here a request's headers (the WebSocket upgrade request
included) must be complete within a fixed time of the connection's start, or of the end of the
previous request on a kept-alive connection; what follows the headers is untouched.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.interfaces import IDelayedCall, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.resource import IResource
from twisted.web.server import Site

_log = Logger()


class HeaderDeadlineChannel(HTTPChannel):
    """Twisted Web's HTTP/1.1 channel with a deadline; its :class:`HeaderDeadlineSite` gives
    ``header_timeout``."""

    # Set by Site.buildProtocol, which HTTPChannel does not declare.
    site: HeaderDeadlineSite
    _deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def _arm(self) -> None:
        self._deadline = self.callLater(self.site.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _connection(self) -> ITCPTransport:
        """The connection under this channel, once it is made."""
        if self.transport is None:
            raise RuntimeError("the HTTP channel has no connection yet")
        # Protocol types its transport as a bare ITransport; a site's channel runs on a TCP
        # connection (or TLS over one, an ITLSTransport), which is an ITCPTransport.
        return cast(ITCPTransport, self.transport)

    def _expired(self) -> None:
        self._deadline = None
        connection = self._connection()
        _log.info(
            "dropped {peer}: no complete request within {seconds}s",
            peer=connection.getPeer(), seconds=self.site.header_timeout,
        )  # fmt: skip
        connection.abortConnection()

    def allHeadersReceived(self) -> None:
        self._disarm()
        super().allHeadersReceived()

    def requestDone(self, request: Request) -> None:
        super().requestDone(request)
        if self.persistent and self.transport is not None:
            self._arm()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        super().connectionLost(reason)


class HeaderDeadlineSite(Site):
    """A Twisted Web site whose channels are :class:`HeaderDeadlineChannel`: plain HTTP/1.1 (a
    WebSocket upgrade needs no HTTP/2), each request's headers due within ``header_timeout``
    seconds."""

    # Twisted's HTTPFactory types ``protocol`` as its own function that builds the channel which
    # negotiates HTTP/2, not as a Factory's protocol class: a channel class, called the same way
    # by buildProtocol, cannot match that type.
    protocol = HeaderDeadlineChannel  # type: ignore[assignment]

    def __init__(self, resource: IResource, header_timeout: float, **kwargs: Any) -> None:
        """``kwargs`` as for Twisted's :class:`~twisted.web.server.Site`."""
        super().__init__(resource, **kwargs)
        self.header_timeout = header_timeout
