"""The event hub: every observer hears every event, whatever another observer does."""

from __future__ import annotations

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from livestream.sessions.events import ErrorSent, Events, SessionStarted


class EventsTests(SynchronousTestCase):
    def test_a_failing_observer_does_not_silence_the_others(self) -> None:
        events = Events()
        heard: list[object] = []
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)

        def broken(event: object) -> None:
            raise RuntimeError("observer bug")

        events.subscribe(broken)
        events.subscribe(heard.append)
        started = SessionStarted("a_1", "a", "127.0.0.1")
        events.emit(started)
        events.emit(ErrorSent("invalid_jpeg", "127.0.0.1"))
        self.assertEqual(heard, [started, ErrorSent("invalid_jpeg", "127.0.0.1")])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertTrue(any("observer" in e.get("log_format", "") for e in logged))
