"""HTTP requests to a daemon on the loopback, each over a fresh connection that closes after the
answer, so no pooled connection outlives a test."""

from __future__ import annotations

import treq
from twisted.internet import reactor
from twisted.internet.error import ConnectError
from twisted.web.client import HTTPConnectionPool


async def get(port: int, path: str, headers: dict[str, str] | None = None):
    """GET over a fresh connection that closes after the answer; ConnectionError if nothing
    listens."""
    try:
        return await treq.get(
            f"http://127.0.0.1:{port}{path}",
            headers=headers,
            timeout=10,
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
    except (ConnectError, ConnectionRefusedError) as e:
        raise ConnectionError(str(e)) from None


async def get_json(port: int, path: str) -> object:
    response = await get(port, path)
    assert response.code == 200, response.code
    return await response.json()
