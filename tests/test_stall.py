"""The reactor's lateness: a timer fired late is measured by how late, and shown in /metrics."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from livestream.ops.metrics import Metrics
from livestream.ops.stall import StallMonitor
from livestream.sessions.events import Events
from tests.support.metrics import parse, scrape
from tests.support.server import start_server


class StallMonitorTests(SynchronousTestCase):
    def test_a_timer_on_time_is_late_by_nothing(self) -> None:
        clock = Clock()
        monitor = StallMonitor(clock, interval=0.05)
        monitor.startService()
        for _ in range(4):
            clock.advance(0.05)
        late = monitor.lateness
        self.assertEqual(late.count, 4)
        self.assertEqual(late.maximum, 0.0)
        self.assertEqual(late.cumulative[0], 4)

    def test_a_stall_is_measured_by_how_late_the_timer_fired(self) -> None:
        """The timer is due at 0.05; nothing runs until 0.35: it fired 0.3 s late, and the
        next one, armed then, is due 0.05 s later."""
        clock = Clock()
        monitor = StallMonitor(clock, interval=0.05)
        monitor.startService()
        clock.advance(0.35)
        clock.advance(0.05)
        late = monitor.lateness
        self.assertEqual(late.count, 2)
        self.assertAlmostEqual(late.maximum, 0.3)
        self.assertAlmostEqual(late.total, 0.3)
        within = dict(zip(late.buckets, late.cumulative, strict=True))
        self.assertEqual(within[0.25], 1)  # the on-time tick only
        self.assertEqual(within[0.5], 2)

    def test_the_maximum_is_kept_and_stopping_disarms_the_timer(self) -> None:
        clock = Clock()
        monitor = StallMonitor(clock, interval=0.05)
        monitor.startService()
        clock.advance(1.05)
        clock.advance(0.2)
        self.assertAlmostEqual(monitor.lateness.maximum, 1.0)
        monitor.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])


class StallMetricsTests(SynchronousTestCase):
    def test_the_lateness_is_a_histogram_and_a_maximum(self) -> None:
        clock = Clock()
        monitor = StallMonitor(clock, interval=0.05)
        monitor.startService()
        clock.advance(0.05)
        clock.advance(0.15)  # due at 0.1, fired at 0.2
        samples = parse(Metrics(Events(), lambda: (), stalls=monitor).render().decode())
        self.assertAlmostEqual(samples[("livestream_reactor_lateness_max_seconds", ())], 0.1)
        name = "livestream_reactor_lateness_seconds"
        self.assertEqual(samples[(f"{name}_count", ())], 2)
        self.assertAlmostEqual(samples[(f"{name}_sum", ())], 0.1)
        self.assertEqual(samples[(f"{name}_bucket", (("le", "0.05"),))], 1)
        self.assertEqual(samples[(f"{name}_bucket", (("le", "0.1"),))], 2)
        self.assertEqual(samples[(f"{name}_bucket", (("le", "+Inf"),))], 2)


class StallMonitorInTheDaemonTests(TestCase):
    timeout = 30

    async def test_a_running_daemon_reports_its_lateness(self) -> None:
        _, port = await start_server(self, Path(self.mktemp()))
        samples = await scrape(port)
        self.assertIn(("livestream_reactor_lateness_max_seconds", ()), samples)
        self.assertIn(("livestream_reactor_lateness_seconds_count", ()), samples)
