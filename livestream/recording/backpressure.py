"""One client socket, several encoder pipes: the socket reads while every pipe can take more.

With ``--mux-audio`` a session feeds two encoders (the video's and the audio track's), each
pausing and resuming what writes into it. Passed straight to the socket, one pipe's resume
would undo the other's pause; here each pipe holds its own claim and the socket resumes only
once none is held.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


class SharedPause:
    """Pauses ``producer`` (the client's socket) while any of its holds is paused."""

    def __init__(self, producer: IPushProducer | None) -> None:
        self._producer = producer
        self._held: set[Hold] = set()

    def hold(self) -> Hold:
        """A producer for one pipe to pause and resume."""
        return Hold(self)

    def set_producer(self, producer: IPushProducer | None) -> None:
        """The client's connection changed (a resumed session): a new socket starts paused if
        any pipe is still full."""
        self._producer = producer
        if producer is not None and self._held:
            producer.pauseProducing()

    def _pause(self, hold: Hold) -> None:
        first = not self._held
        self._held.add(hold)
        if first and self._producer is not None:
            self._producer.pauseProducing()

    def _release(self, hold: Hold) -> None:
        if hold not in self._held:
            return
        self._held.discard(hold)
        if not self._held and self._producer is not None:
            self._producer.resumeProducing()


@implementer(IPushProducer)
class Hold:
    """One pipe's say. ``stopProducing`` (its encoder is gone) only lets go of its claim: a dead
    encoder never keeps the socket paused, nor drops the client."""

    def __init__(self, shared: SharedPause) -> None:
        self._shared = shared

    def pauseProducing(self) -> None:
        self._shared._pause(self)

    def resumeProducing(self) -> None:
        self._shared._release(self)

    def stopProducing(self) -> None:
        self._shared._release(self)
