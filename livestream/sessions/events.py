"""What happens to sessions and recordings, told to whoever watches: metrics, webhooks, the page.

Sessions, recovery and the protocol only emit; observers subscribe. Data flows one way, so a
metrics or webhook module can be added or removed without touching the recording path, and an
observer that raises is logged without disturbing the recording or the other observers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twisted.logger import Logger

if TYPE_CHECKING:
    from livestream.recording.ffmpeg import FFmpegResult
    from livestream.sessions.outcome import Outcome

_log = Logger()


@dataclass(frozen=True)
class SessionStarted:
    name: str
    client_id: str
    peer: str


@dataclass(frozen=True)
class SessionEnded:
    """A session is finalized: its files (if any) are published and listed."""

    name: str
    client_id: str
    peer: str
    outcome: Outcome
    # From CONNECT to the end of finalizing, and the finalizing alone (CLOSE-to-ready).
    seconds: float
    finalize_seconds: float


@dataclass(frozen=True)
class EncoderFailed:
    """An encoder of a session stopped before its input ended; ``replaced``: a new one took
    over (livestream.recording.encoder), else the session's stream goes on without one."""

    name: str
    result: FFmpegResult
    replaced: bool = False


@dataclass(frozen=True)
class StorageFailed:
    """Writing to the media tree failed other than for a full disk (``error``: the errno name,
    ``EIO``, ``EROFS``, ``ENOENT``): a write of the session ``name`` (or the registry's check of
    the tree under it), or the check of the tree before a new session (``name`` None)."""

    name: str | None
    error: str


@dataclass(frozen=True)
class ErrorSent:
    """An ``ERROR`` reply went to a client (refusals included)."""

    code: str
    peer: str


@dataclass(frozen=True)
class Recovered:
    """A recording interrupted by a crash was published at start."""

    name: str
    files: dict[str, str | None] = field(default_factory=dict)


Event = SessionStarted | SessionEnded | EncoderFailed | StorageFailed | ErrorSent | Recovered
Observer = Callable[[Event], None]


class Events:
    """A synchronous fan-out: observers must return quickly and defer slow work themselves."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def emit(self, event: Event) -> None:
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                _log.failure("observer {observer!r} failed on {event!r}", observer=observer,
                             event=event)  # fmt: skip
