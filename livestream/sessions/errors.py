"""What a session or the registry refuses, in the session's own terms.

A code and a message, which the client hears in an ``ERROR`` reply; whether the connection then
closes, and how, is the protocol's business (:mod:`livestream.wire.codes`), not the session's.
"""

from __future__ import annotations

from livestream.wire.codes import Refusal


class SessionError(Refusal):
    """A chunk, a session or a resume refused: ``code`` is snake_case (``session_closed``,
    ``invalid_jpeg``, ``too_many_sessions``, ``resume_failed``...), ``message`` says why."""
