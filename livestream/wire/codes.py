"""What a refusal is on the wire: an ``ERROR {code, message}`` reply, and the close after it.

A refusal is a snake_case code and a message, nothing more; whoever refuses (the message parser,
the protocol, a session, the registry, the access policy) says only that. Which refusals also
end the connection, and with which RFC 6455 close code, is :data:`CLOSE_AFTER` here, the one
table of it; the recording protocol applies it.

Pure: no imports of livestream, so every layer may import it.
"""

from __future__ import annotations

# The RFC 6455 close codes the daemon sends.
NORMAL = 1000
INVALID_PAYLOAD = 1007
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012
TRY_AGAIN_LATER = 1013

# The refusals that end the connection, by code; every other refusal lets the client go on.
CLOSE_AFTER = {
    "invalid_utf8": INVALID_PAYLOAD,
    # No CONNECT in time.
    "idle_timeout": POLICY_VIOLATION,
    # A CONNECT the access policy turns away: one connection cannot try token after token.
    "unauthorized": POLICY_VIOLATION,
    "forbidden": POLICY_VIOLATION,
    "internal_error": INTERNAL_ERROR,
    "shutting_down": SERVICE_RESTART,
    "too_many_sessions": TRY_AGAIN_LATER,
    "insufficient_storage": TRY_AGAIN_LATER,
    # A CONNECT while no file can be made in the media tree (gone, read-only, failing): a fault
    # of the server, not a passing shortage; mid-session it ends the session (CLOSED, then 1011).
    "storage_failed": INTERNAL_ERROR,
}


class Refusal(Exception):
    """Something the server refuses: ``code`` and ``message`` go in the ``ERROR`` reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def close_code(self) -> int | None:
        """The close that follows the reply (:data:`CLOSE_AFTER`), or None: the client may go
        on."""
        return CLOSE_AFTER.get(self.code)

    @property
    def fatal(self) -> bool:
        return self.close_code is not None
