"""The log lines a test's daemon writes (in this process), as text."""

from __future__ import annotations

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase


class Logged:
    """The log lines of a test, as text."""

    def __init__(self, testcase: TestCase) -> None:
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self._observe)
        testcase.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event: dict) -> None:
        self.lines.append(formatEvent(event))

    def matching(self, *parts: str) -> list[str]:
        return [line for line in self.lines if all(part in line for part in parts)]
