"""Retention: which finished recordings go, in what order, and what is never touched."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from livestream.library.index import READY, RecordingIndex
from livestream.library.query import Query
from livestream.library.tree import MediaTree
from livestream.ops.retention import (
    AGE,
    BATCH,
    FREE,
    TOTAL,
    Finished,
    Retention,
    RetentionPolicy,
    plan,
)
from tests.support.http import get_json
from tests.support.media import pcm
from tests.support.server import start_server
from tests.support.waiting import sleep, until
from tests.support.websocket import record

DAY = 86400
NOW = 1_800_000_000.0


def rec(name: str, size: int = 100, kind: str = "audio", mtime: float = 0) -> Finished:
    return Finished(kind, name, Path(name), size, mtime)


class PlanTests(SynchronousTestCase):
    def test_off_deletes_nothing(self) -> None:
        self.assertEqual(plan([rec("a_1")], RetentionPolicy(), NOW, 0), [])

    def test_age_by_the_time_in_the_name(self) -> None:
        old = rec(f"a_{int((NOW - 3 * DAY) * 1000)}")
        young = rec(f"b_{int((NOW - 1 * DAY) * 1000)}", mtime=0)
        got = plan([young, old], RetentionPolicy(days=2), NOW, 0)
        self.assertEqual(got, [(old, AGE)])

    def test_total_deletes_oldest_first_until_under(self) -> None:
        recs = [rec("c_3000"), rec("a_1000"), rec("b_2000"), rec("d_4000")]
        got = plan(recs, RetentionPolicy(total_bytes=250), NOW, 0)
        self.assertEqual([(r.name, why) for r, why in got], [("a_1000", TOTAL), ("b_2000", TOTAL)])

    def test_same_time_in_the_name_goes_by_mtime(self) -> None:
        late, early = rec("x_5", mtime=20), rec("y_5", mtime=10)
        got = plan([late, early], RetentionPolicy(total_bytes=150), NOW, 0)
        self.assertEqual(got, [(early, TOTAL)])

    def test_free_space_counts_what_each_deletion_frees(self) -> None:
        video = Finished("video", "v_1", Path("v_1.mp4"), 100, 0, Path("v_1.jpg"), 50)
        recs = [video, rec("a_2"), rec("a_3")]
        got = plan(recs, RetentionPolicy(free_bytes=1000), NOW, 800)
        # 800 + 150 (video and poster) + 100 is enough.
        self.assertEqual([(r.name, why) for r, why in got], [("v_1", FREE), ("a_2", FREE)])


class RetentionServiceTests(TestCase):
    """Retention reads the index (real, in its threads) and keeps time by a Clock."""

    timeout = 30

    async def setUp(self) -> None:
        self.store = MediaTree(Path(self.mktemp()))
        self.store.ensure()
        self.clock = Clock()
        self.clock.advance(NOW)
        self.logged: list[dict] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)
        self.index = RecordingIndex(reactor, self.store)

    async def indexed(self) -> None:
        """Start the index on the files made so far, and wait until it has checked the tree."""
        self.index.startService()
        self.addCleanup(self.index.stopService)
        await until(lambda: self.index.state == READY, 10, "the index")

    def make(self, kind: str, name: str, size: int = 1000) -> Path:
        path = self.store.final_path(kind, name)
        path.write_bytes(b"\0" * size)
        return path

    async def test_sweeps_at_start_and_every_interval(self) -> None:
        old_ms = int((NOW - 10 * DAY) * 1000)
        video = self.make("video", f"cam_{old_ms}")
        posters = self.store.root / "posters"
        posters.mkdir(exist_ok=True)
        poster = posters / f"cam_{old_ms}.jpg"
        poster.write_bytes(b"jpeg")
        audio = self.make("audio", f"cam_{old_ms}")
        live = self.make("audio", f"live_{old_ms}")
        temp = self.store.temp_path(f"gone_{old_ms}", ".audio.wav")
        temp.write_bytes(b"x")
        stranger = self.store.dir("video") / "notes.txt"
        stranger.write_bytes(b"x")
        await self.indexed()
        retention = Retention(self.clock, self.store, self.index, RetentionPolicy(days=7),
                              lambda: [f"live_{old_ms}"], interval=60)  # fmt: skip
        retention.startService()
        self.addCleanup(retention.stopService)
        await until(lambda: not any(p.exists() for p in (video, poster, audio)), 10, "a sweep")
        for kept in (live, temp, stranger):
            self.assertTrue(kept.exists(), kept)
        lines = [e for e in self.logged if e.get("log_format", "").startswith("retention: deleted")]
        self.assertEqual({(e["file"], e["why"]) for e in lines},
                         {(video.name, AGE), (audio.name, AGE)})  # fmt: skip
        self.assertEqual((await self.index.page(Query())).total, 1)

        later = self.make("audio", f"mic_{int((NOW - 6.99 * DAY) * 1000)}")
        await self.index.recorded("audio", later.name[:-4])
        self.clock.advance(59)
        await sleep(0.5)
        self.assertTrue(later.exists())
        self.clock.advance(2 * 3600)
        await until(lambda: not later.exists(), 10, "the next sweep")

    async def test_total_keeps_the_newest(self) -> None:
        paths = [self.make("audio", f"a_{int(NOW * 1000) - i}", 400) for i in range(4)]
        await self.indexed()
        retention = Retention(self.clock, self.store, self.index,
                              RetentionPolicy(total_bytes=1000), lambda: [])  # fmt: skip
        self.assertEqual(sorted(await retention.sweep()), sorted(paths[2:]))
        self.assertEqual([p.exists() for p in paths], [True, True, False, False])

    async def test_free_space_asks_the_disk(self) -> None:
        paths = [self.make("audio", f"a_{i}", 300) for i in range(1, 4)]
        await self.indexed()
        retention = Retention(self.clock, self.store, self.index, RetentionPolicy(free_bytes=1000),
                              lambda: [], free_bytes=lambda: 500)  # fmt: skip
        self.assertEqual(await retention.sweep(), paths[:2])

    async def test_a_sweep_reads_in_batches(self) -> None:
        """More to delete than one batch: every batch goes, oldest first, and the rest stays."""
        count = BATCH * 2 + 10
        paths = [self.make("audio", f"a_{1000 + i}", 10) for i in range(count)]
        await self.indexed()
        retention = Retention(self.clock, self.store, self.index,
                              RetentionPolicy(total_bytes=10 * 5), lambda: [])  # fmt: skip
        self.assertEqual(await retention.sweep(), paths[:-5])
        self.assertEqual([p for p in paths if p.exists()], paths[-5:])
        self.assertEqual((await self.index.page(Query())).total, 5)


class RetentionOfARunningServerTests(TestCase):
    timeout = 60

    async def test_old_recordings_go_at_start_new_ones_stay(self) -> None:
        media = Path(self.mktemp())
        store = MediaTree(media)
        store.ensure()
        old = store.final_path("audio", "old_1000000000000")
        old.write_bytes(b"RIFF")
        os.utime(old, (1e9, 1e9))
        _, port = await start_server(self, media, retention=RetentionPolicy(days=30))
        # The first sweep, once the index has found the file.
        await until(lambda: not old.exists(), 10, "the sweep at start")
        _, _, closed = await record(port, "mic", audio=[pcm(100)])
        listing = await get_json(port, "/recordings")
        self.assertEqual(listing, {"video": [], "audio": [closed["recordings"]["audio"]]})
