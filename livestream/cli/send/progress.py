"""The progress line of ``livestream-send`` on stderr: rewritten in place on a terminal, a line
every few seconds otherwise (a log file or a CI job gets a readable trail, not carriage
returns)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

TTY_INTERVAL = 0.5
LOG_INTERVAL = 5.0


class Progress:
    def __init__(
        self,
        clock: IReactorTime,
        out: TextIO,
        counts: Callable[[], tuple[int, float, int]],
        note: Callable[[], str] = lambda: "",
    ) -> None:
        """``counts`` gives (frames, audio seconds, bytes) sent so far; ``note``, when not
        empty, ends the line ("reconnecting")."""
        self._clock = clock
        self._out = out
        self._counts = counts
        self._note = note
        self._tty = out.isatty()
        self._start = clock.seconds()
        self._loop = LoopingCall(self.show)
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(TTY_INTERVAL if self._tty else LOG_INTERVAL, now=False)

    def stop(self) -> None:
        """Show the final figures, and leave the cursor on a fresh line."""
        if self._loop.running:
            self._loop.stop()
        self.show()
        if self._tty:
            self._out.write("\n")
            self._out.flush()

    def line(self) -> str:
        frames, audio, sent = self._counts()
        elapsed = max(self._clock.seconds() - self._start, 1e-6)
        note = self._note()
        return (
            f"{frames} frames, {audio:.1f} s audio, {sent / 1e6:.1f} MB sent in {elapsed:.1f} s "
            f"({sent * 8 / 1e6 / elapsed:.2f} Mbit/s){', ' + note if note else ''}"
        )

    def show(self) -> None:
        """Write the line now (also between the periodic ones, when something changed)."""
        if self._tty:
            self._out.write("\r" + self.line() + "\x1b[K")
        else:
            self._out.write(self.line() + "\n")
        self._out.flush()
