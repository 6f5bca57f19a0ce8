"""Delivering a webhook: one POST with a timeout, and when to try again after a failure.

Anything but a 2xx answer in time is a failure: the next try waits 1 s, 2 s, 4 s ... at most
``MAX_RETRY``, until the event is ``MAX_AGE`` old and is given up.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError
from twisted.web.http_headers import Headers

FIRST_RETRY = 1.0
MAX_RETRY = 600.0
MAX_AGE = 3 * 86400.0
TIMEOUT = 10.0


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones."""
    return min(MAX_RETRY, FIRST_RETRY * 2 ** min(attempts - 1, 30))


async def post_once(
    http: HTTPClient, reactor, url: str, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[bool, str]:
    """One attempt: whether the receiver answered 2xx within ``timeout`` seconds, and what
    happened, for the log. Cancelling it (at stop) raises CancelledError."""
    try:
        request = http.post(url, data=body, headers=Headers({k: [v] for k, v in headers.items()}))
        response = await request.addTimeout(timeout, reactor)
        await response.content()
    except CancelledError:
        raise
    except Exception as e:
        return False, f"{type(e).__name__}: {e}"
    return 200 <= response.code < 300, f"HTTP {response.code}"


def where(url: str) -> str:
    """A URL for the log, without user info or query (either may hold a credential)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
