"""The kernel's unread buffer per client is capped, also under a wrapping (TLS) transport."""

from __future__ import annotations

import socket
from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from livestream.web.protocol import RECEIVE_BUFFER, _cap_receive_buffer


class ReceiveBufferTests(SynchronousTestCase):
    def connected_socket(self) -> socket.socket:
        server = socket.socket()
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        self.addCleanup(client.close)
        accepted, _ = server.accept()
        self.addCleanup(accepted.close)
        return accepted

    def test_tcp_and_wrapped(self) -> None:
        for wrap in (lambda s: SimpleNamespace(socket=s),
                     lambda s: SimpleNamespace(transport=SimpleNamespace(socket=s))):  # fmt: skip
            sock = self.connected_socket()
            _cap_receive_buffer(wrap(sock))
            # Linux reports twice what was set (it counts its bookkeeping too).
            self.assertIn(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                (RECEIVE_BUFFER, 2 * RECEIVE_BUFFER),
            )

    def test_no_socket_is_left_alone(self) -> None:
        _cap_receive_buffer(SimpleNamespace(transport=None))
