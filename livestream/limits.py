"""What one client may take from the daemon: every field is a ``twistd livestream`` option."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one client may take from the daemon; every field is an option."""

    max_message_size: int = 16 * MiB
    max_sessions: int = 64
    max_session_seconds: float = 4 * 3600.0
    max_session_bytes: int = 8 << 30
    idle_timeout: float = 30.0
    handshake_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 60.0
    min_free_bytes: int = 512 * MiB
