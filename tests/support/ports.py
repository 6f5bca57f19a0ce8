"""Loopback ports: a free one for a server the tests start, and whether anything listens on one."""

from __future__ import annotations

import errno
import socket

from twisted.internet import error, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def refuses(port: int) -> bool:
    """True if a TCP connection to ``port`` is refused: nothing listens there.

    A reset while connecting counts too: the listening socket closed with this connection still
    in its accept queue."""
    try:
        proto = await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5).connect(
            Factory.forProtocol(Protocol)
        )
    except error.ConnectionRefusedError:
        return True
    except error.ConnectError as e:
        if e.osError != errno.ECONNRESET:
            raise
        return True
    proto.transport.abortConnection()
    return False
