"""A deadline for a new connection's HTTP request headers, against slowloris clients.

Twisted Web's idle timeout restarts with every byte, so a client dripping its headers a byte at a
time could hold a connection for days. Here the headers (the WebSocket upgrade request included)
must be complete within a fixed time of the connection's start; what follows is untouched.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

_log = Logger()

END_OF_HEADERS = b"\r\n\r\n"


class _HeaderDeadline(ProtocolWrapper):
    factory: HeaderDeadlineFactory

    def __init__(self, factory: WrappingFactory, wrappedProtocol) -> None:
        super().__init__(factory, wrappedProtocol)
        self._deadline: IDelayedCall | None = None
        self._tail = b""

    def connectionMade(self) -> None:
        self._deadline = self.factory.clock.callLater(self.factory.timeout, self._expired)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is not None:
            seen = self._tail + data
            if END_OF_HEADERS in seen:
                self._cancel()
            else:
                self._tail = seen[-3:]
        super().dataReceived(data)

    def _expired(self) -> None:
        self._deadline = None
        _log.info(
            "dropped {peer}: no complete request within {seconds}s",
            peer=self.getPeer(), seconds=self.factory.timeout,
        )  # fmt: skip
        self.transport.abortConnection()

    def _cancel(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def connectionLost(self, reason) -> None:
        self._cancel()
        super().connectionLost(reason)


class HeaderDeadlineFactory(WrappingFactory):
    protocol = _HeaderDeadline

    def __init__(self, wrapped: Factory, clock: IReactorTime, timeout: float) -> None:
        super().__init__(wrapped)
        self.clock = clock
        self.timeout = timeout
