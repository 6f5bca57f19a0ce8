"""A deadline for each HTTP request's headers, against slowloris clients.

Twisted Web's idle timeout restarts with every byte, so a client dripping its headers a byte at a
time could hold a connection for days. Here a request's headers (the WebSocket upgrade request
included) must be complete within a fixed time of the connection's start, or of the end of the
previous request on a kept-alive connection; what follows the headers is untouched.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.web.http import HTTPChannel

_log = Logger()


class HeaderDeadlineChannel(HTTPChannel):
    """Twisted Web's HTTP/1.1 channel with a deadline; the site gives ``header_timeout``."""

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

    def _expired(self) -> None:
        self._deadline = None
        _log.info(
            "dropped {peer}: no complete request within {seconds}s",
            peer=self.transport.getPeer(), seconds=self.site.header_timeout,
        )  # fmt: skip
        self.transport.abortConnection()

    def allHeadersReceived(self) -> None:
        self._disarm()
        super().allHeadersReceived()

    def requestDone(self, request) -> None:
        super().requestDone(request)
        if self.persistent and self.transport is not None:
            self._arm()

    def connectionLost(self, reason) -> None:
        self._disarm()
        super().connectionLost(reason)
