"""How a session ended: the reason, and what it left in the media tree.

Its own module so that events (which carry outcomes) and the session (which emits events) do
not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from livestream.wire.kinds import BLOCK_BYTES

# Why a session ended; the protocol picks its close code from it.
CLOSE = "close"
DISCONNECT = "disconnect"
SHUTDOWN = "shutdown"
LIMIT = "limit"
IDLE = "idle"
STORAGE = "storage"


@dataclass(frozen=True)
class Outcome:
    """How a session ended and what it left in the media tree."""

    reason: str
    video: str | None
    audio: str | None
    frames: int
    audio_bytes: int
    failed: bool
    # Everything the client streamed that was accepted, video and audio.
    bytes: int = 0
    # An encoder stopped mid-session (the client was told then); what it wrote is kept.
    encoder_failed: bool = False

    @property
    def samples(self) -> int:
        """The audio samples accepted (the WAV's count)."""
        return self.audio_bytes // BLOCK_BYTES

    @property
    def result(self) -> str:
        """In one word, for the log line that ends the session and the webhook that tells of it."""
        if self.failed:
            return "finalize_failed"
        return "encoder_failed" if self.encoder_failed else "ok"
