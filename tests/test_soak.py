"""The soak's short form (bench.soak): a minute of clients and faults against a real daemon.

Five clients record one session after another for 60 s (every kind of session the soak
plans) while the harness kills and stops encoders, fills the disk and kills the daemon; then
every recording is decoded and every frame and sample accounted for against the bounds of
``bench.soak.BOUNDS``. About 75 s, a core and a half of a 2-core machine.

As root the media tree is a tmpfs of its own and every fault runs. Without root it is a plain
directory and only the disk fill is left out (mounting the small file system to fill is the
one thing that needs root); the test says so in its output, it does not skip.
"""

from __future__ import annotations

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from bench import soak

DURATION = 60.0
CLIENTS = 5
SEED = 14
ENCODER_FAULTS = (soak.ENCODER_KILL, soak.ENCODER_STOP)

_runs: dict[str, soak.Report] = {}


async def short_form() -> soak.Report:
    """The one run the tests of this module judge (made by the first that asks)."""
    if "report" not in _runs:
        settings = soak.Settings(DURATION, CLIENTS, seed=SEED, resume_grace=6.0)
        _runs["report"] = await deferToThread(soak.soak, settings)
    return _runs["report"]


class SoakTests(TestCase):
    timeout = 200

    async def test_a_minute_of_faults_loses_nothing_beyond_the_bounds(self) -> None:
        """Every fault struck, sessions of every ending were judged, and nothing but the
        encoder faults' pass their bound: no frame or sample lost beyond it, none twice, no
        ERROR without its fault, temp/ empty, the listing exact, the memory flat."""
        report = await short_form()
        print(soak.table(report))
        expected = set(soak.FAULTS) - (set() if report.media == "tmpfs" else {soak.DISK_FILL})
        self.assertEqual(set(report.injected), expected, report.skipped)
        self.assertGreater(report.judged, 15)
        self.assertGreater(report.resumes, 0)
        self.assertEqual(report.restarts, report.injected[soak.DAEMON_KILL])
        self.assertEqual(report.final.get("temp_after_stop"), [])
        others = report.violations_but(ENCODER_FAULTS)
        self.assertEqual(others, [], "\n".join(f"{v.what}: {v.detail}" for v in others))

    async def test_encoder_faults_lose_at_most_the_frames_in_flight(self) -> None:
        """A killed or stopped encoder costs a session at most ENCODER_FAULT_FRAMES frames."""
        report = await short_form()
        found = report.violations_of(ENCODER_FAULTS)
        details = "\n".join(f"{v.what}: {v.detail}" for v in found)
        self.assertEqual(found, [], details)
