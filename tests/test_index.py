"""The recordings index: checked against the tree at start (new and vanished files, never a
header read twice), rebuilt when lost or damaged, paged and filtered through
``GET /api/recordings``, and the seed listing served from it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import quote

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from livestream.library import reconcile, store
from livestream.library.index import READY, RecordingIndex
from livestream.library.mediainfo import UNKNOWN
from livestream.library.query import Query
from livestream.library.rows import make_row
from livestream.library.store import LOCAL
from livestream.library.tree import MediaTree
from tests.support.http import get, get_json, raw
from tests.support.media import pcm, wav_bytes
from tests.support.metrics import scrape
from tests.support.server import start_server
from tests.support.waiting import sleep, until
from tests.support.websocket import record

BASE_MS = 1_700_000_000_000


def fake_rows(count: int, clients: int = 10) -> list[store.Row]:
    """``count`` recordings of ``clients`` clients, one a second, alternately video and audio."""
    rows = []
    for i in range(count):
        kind = "video" if i % 2 else "audio"
        name = f"cam-{i % clients:02d}_{BASE_MS + 1000 * i}"
        rows.append(make_row(kind, name, 100 + i, BASE_MS / 1000 + i, UNKNOWN, None, LOCAL,
                             described=False))  # fmt: skip
    return rows


class _Tree(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.tree = MediaTree(Path(self.mktemp()).absolute())
        self.tree.ensure()
        self.wav = wav_bytes(pcm(4410))

    def put(self, kind: str, name: str, content: bytes | None = None) -> Path:
        path = self.tree.final_path(kind, name)
        path.write_bytes(content if content is not None else self.wav)
        return path

    async def index(self) -> RecordingIndex:
        index = RecordingIndex(reactor, self.tree)
        index.startService()
        self.addCleanup(index.stopService)
        await until(lambda: index.state == READY, 30, "the index ready")
        return index

    async def names(self, index: RecordingIndex, **filters: object) -> list[str]:
        found = await index.page(Query(limit=1000, **filters))  # type: ignore[arg-type]
        return [row.filename for row in found.rows]


class CheckAgainstTheTreeTests(_Tree):
    async def test_files_found_at_start_are_described(self) -> None:
        self.put("audio", "mic_1700000000000")
        self.put("audio", "junk_1700000001000", b"not a wav")
        self.put("video", "cam_1700000002000", b"not an mp4")
        (self.tree.dir("posters") / "cam_1700000002000.jpg").write_bytes(b"jpeg")
        (self.tree.dir("audio") / "notes.txt").write_bytes(b"x")
        (self.tree.dir("audio") / ".hidden_1.wav").write_bytes(b"x")
        os.symlink("/etc/passwd", self.tree.dir("audio") / "link_1700000003000.wav")
        index = await self.index()
        rows = {r.filename: r for r in (await index.page(Query())).rows}
        self.assertEqual(
            set(rows), {"mic_1700000000000.wav", "junk_1700000001000.wav", "cam_1700000002000.mp4"}
        )
        mic = rows["mic_1700000000000.wav"]
        self.assertEqual((mic.duration, mic.count, mic.size), (0.1, 4410, len(self.wav)))
        video = rows["cam_1700000002000.mp4"]
        self.assertEqual(rows["junk_1700000001000.wav"].count, None)
        self.assertEqual((video.count, video.poster, video.poster_size), (None, LOCAL, 4))

    async def test_restart_reads_only_what_changed(self) -> None:
        for i in range(20):
            self.put("audio", f"mic_{BASE_MS + i}")
        index = await self.index()
        await index.stopService()
        self.put("audio", f"new_{BASE_MS + 100}")
        self.tree.final_path("audio", f"mic_{BASE_MS + 3}").unlink()
        read: list[Path] = []
        original = reconcile.read_info

        def counting(kind: str, path: Path):
            read.append(path)
            return original(kind, path)

        self.patch(reconcile, "read_info", counting)
        index = await self.index()
        names = await self.names(index)
        self.assertEqual(len(names), 20)
        self.assertIn(f"new_{BASE_MS + 100}.wav", names)
        self.assertNotIn(f"mic_{BASE_MS + 3}.wav", names)
        self.assertEqual([p.name for p in read], [f"new_{BASE_MS + 100}.wav"])

    async def test_after_a_clean_stop_an_unchanged_tree_is_not_read(self) -> None:
        for i in range(5):
            self.put("audio", f"mic_{BASE_MS + i}")
        index = await self.index()
        await index.stopService()
        walked: list[str] = []
        original = reconcile._names

        def counting(tree: MediaTree, directory: str):
            walked.append(directory)
            return original(tree, directory)

        self.patch(reconcile, "_names", counting)
        index = await self.index()
        self.assertEqual((walked, len(await self.names(index))), ([], 5))
        # Not stopped cleanly this time (as if killed): the next start reads the tree.
        index._writer.stop()
        index._readers.stop()
        index = await self.index()
        self.assertEqual(sorted(walked), ["audio", "posters", "video"])
        self.assertEqual(len(await self.names(index)), 5)

    async def test_a_damaged_index_is_rebuilt(self) -> None:
        for i in range(5):
            self.put("audio", f"mic_{BASE_MS + i}")
        index = await self.index()
        await index.stopService()
        for suffix in ("-wal", "-shm"):
            Path(f"{index.path}{suffix}").unlink(missing_ok=True)
        index.path.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
        index = await self.index()
        self.assertEqual(len(await self.names(index)), 5)
        self.assertTrue(Path(f"{index.path}.damaged").exists())

    async def test_a_lost_index_is_rebuilt(self) -> None:
        for i in range(5):
            self.put("audio", f"mic_{BASE_MS + i}")
        index = await self.index()
        await index.stopService()
        shutil.rmtree(index.path.parent)
        index = await self.index()
        self.assertEqual(len(await self.names(index)), 5)

    async def test_a_write_is_seen_by_the_next_read(self) -> None:
        index = await self.index()
        for i in range(30):
            self.put("audio", f"mic_{BASE_MS + i}")
            index.recorded("audio", f"mic_{BASE_MS + i}")
            self.assertEqual((await index.page(Query(limit=1))).total, i + 1)
        index.removed("audio", f"mic_{BASE_MS}")
        self.assertEqual((await index.page(Query())).total, 29)
        self.assertEqual(index.totals, {("audio", LOCAL): (29, 29 * len(self.wav))})


class PagingTests(_Tree):
    async def filled(self, count: int) -> RecordingIndex:
        index = await self.index()
        await index.write_task(lambda db: store.upsert(db, fake_rows(count), LOCAL))
        return index

    async def walk(self, index: RecordingIndex, query: Query) -> list[str]:
        names, cursor = [], None
        while True:
            found = await index.page(query if cursor is None else _at(query, cursor))
            names += [row.filename for row in found.rows]
            cursor = found.next
            if cursor is None:
                return names

    async def test_pages_cover_everything_once_newest_first(self) -> None:
        rows = fake_rows(2345)
        index = await self.filled(2345)
        names = await self.walk(index, Query(limit=100))
        self.assertEqual(names, [r.filename for r in reversed(rows)])
        oldest = await self.walk(index, Query(limit=333, order="oldest"))
        self.assertEqual(oldest, [r.filename for r in rows])

    async def test_filters_and_totals(self) -> None:
        rows = fake_rows(2000)
        index = await self.filled(2000)
        cases = [
            (Query(kind="video"), [r for r in rows if r.kind == "video"]),
            (Query(client="cam-03"), [r for r in rows if r.stem == "cam-03"]),
            (Query(client_prefix="cam-0"), [r for r in rows if r.stem.startswith("cam-0")]),
            (Query(client_prefix="cam"), rows),
            (Query(client_prefix="nobody"), []),
            (Query(since=BASE_MS / 1000 + 100, until=BASE_MS / 1000 + 200), rows[100:200]),
            (Query(kind="audio", client="cam-04", since=BASE_MS / 1000 + 1000),
             [r for r in rows[1000:] if r.kind == "audio" and r.stem == "cam-04"]),
        ]  # fmt: skip
        for query, want in cases:
            found = await index.page(query)
            self.assertEqual(found.total, len(want), query)
            walked = await self.walk(index, Query(**{**query.__dict__, "limit": 77}))
            self.assertEqual(walked, [r.filename for r in reversed(want)], query)

    async def test_a_recording_added_between_pages_is_not_repeated(self) -> None:
        index = await self.filled(300)
        first = await index.page(Query(limit=100))
        extra = make_row("audio", f"late_{BASE_MS + 10_000_000}", 1, BASE_MS / 1000 + 10_000,
                         UNKNOWN, None, LOCAL, described=False)  # fmt: skip
        await index.write_task(lambda db: store.upsert(db, [extra], LOCAL))
        assert first.next is not None
        second = await index.page(_at(Query(limit=100), first.next))
        self.assertEqual(second.total, 301)
        self.assertFalse({r.filename for r in first.rows} & {r.filename for r in second.rows})
        self.assertNotIn(extra.filename, [r.filename for r in second.rows])


def _at(query: Query, cursor: str) -> Query:
    from livestream.library.query import parse

    args = {b"cursor": [cursor.encode()]}
    for key, value in (("kind", query.kind), ("client", query.client),
                       ("client_prefix", query.client_prefix), ("order", query.order),
                       ("limit", str(query.limit))):  # fmt: skip
        if value is not None:
            args[key.encode()] = [value.encode()]
    for key, moment in (("since", query.since), ("until", query.until)):
        if moment is not None:
            args[key.encode()] = [str(int(moment * 1000)).encode()]
    return parse(args)


class ApiTests(TestCase):
    timeout = 60

    async def serve(self) -> tuple[Path, int]:
        media = Path(self.mktemp()).absolute()
        service, port = await start_server(self, media)
        await until(lambda: service.getServiceNamed("index").state == READY, 10, "the index")
        return media, port

    async def test_bad_queries_are_json_400s(self) -> None:
        _, port = await self.serve()
        bad = [
            "limit=0", "limit=1001", "limit=abc", "limit=-5", "limit=1&limit=2", "color=red",
            "cursor=garbage", "cursor=" + quote("e30"), "kind=poster", "order=random",
            "since=yesterday", "client=", "until=2024-13-45T00:00:00Z",
        ]  # fmt: skip
        for query in bad:
            status, headers, body = await raw(port, "GET", f"/api/recordings?{query}")
            self.assertEqual(status, 400, query)
            self.assertEqual(headers["content-type"], "application/json", query)
            document = json.loads(body)
            self.assertEqual(document["error"], "bad_query", query)
            self.assertTrue(document["message"], query)

    async def test_a_cursor_works_only_with_its_filters(self) -> None:
        _, port = await self.serve()
        for i in range(3):
            await record(port, f"mic-{i}", audio=[pcm(441)])
        page = await get_json(port, "/api/recordings?limit=1&client_prefix=mic")
        self.assertEqual(page["total"], 3)
        cursor = page["next"]
        status, _, body = await raw(port, "GET", f"/api/recordings?limit=1&cursor={cursor}")
        self.assertEqual((status, json.loads(body)["error"]), (400, "bad_query"))
        following = await get_json(
            port, f"/api/recordings?limit=1&client_prefix=mic&cursor={cursor}"
        )
        self.assertEqual(following["total"], 3)
        self.assertNotEqual(following["recordings"], page["recordings"])
        # A forged cursor that decodes is a position like any other; one that does not, a 400.
        status, _, _ = await raw(
            port, "GET", f"/api/recordings?client_prefix=mic&cursor={cursor[:-3]}"
        )
        self.assertEqual(status, 400)

    async def test_one_recording_and_the_seed_listing(self) -> None:
        media, port = await self.serve()
        _, _, closed = await record(port, "cam/1", audio=[pcm(4410)])
        filename = closed["recordings"]["audio"]
        entry = await get_json(port, f"/api/recordings/audio/{filename}")
        self.assertEqual((entry["name"], entry["samples"], entry["client"], entry["location"]),
                         (filename, 4410, "cam_1", "local"))  # fmt: skip
        found = await get_json(port, "/api/recordings?client=cam/1")
        self.assertEqual([e["name"] for e in found["recordings"]], [filename])
        for missing in ("/api/recordings/audio/nobody_1.wav", f"/api/recordings/video/{filename}",
                        "/api/recordings/posters/x_1.jpg"):  # fmt: skip
            response = await get(port, missing)
            self.assertEqual(response.code, 404, missing)
        response = await get(port, "/recordings")
        etag = response.headers.getRawHeaders("etag")[0]
        self.assertEqual(json.loads(await response.content()), {"video": [], "audio": [filename]})
        again = await get(port, "/recordings", {"If-None-Match": etag})
        self.assertEqual(again.code, 304)
        await record(port, "cam-2", audio=[pcm(441)])
        changed = await get(port, "/recordings", {"If-None-Match": etag})
        self.assertEqual(changed.code, 200)
        self.assertEqual(len(json.loads(await changed.content())["audio"]), 2)

    async def test_the_seed_listing_keeps_the_seed_order(self) -> None:
        media = Path(self.mktemp()).absolute()
        tree = MediaTree(media)
        tree.ensure()
        wav = wav_bytes(pcm(10))
        names = ["b_20", "a_20", "a-_20", "z_3", "a.node_20", "x_99999999999999999999", "c_1"]
        for name in names:
            tree.final_path("audio", name).write_bytes(wav)
        service, port = await start_server(self, media)
        await until(lambda: service.getServiceNamed("index").state == READY, 10, "the index")
        self.assertEqual(await get_json(port, "/recordings"), tree.listing())

    async def test_health_and_metrics_read_the_index(self) -> None:
        _, port = await self.serve()
        for i in range(3):
            await record(port, f"mic-{i}", audio=[pcm(441)])
        # The figures are the index's as of its last write done: the third may still be on
        # its way when CLOSED is (a listing waits for it; health and metrics do not).
        for _ in range(100):
            health = await get_json(port, "/healthz")
            if health["checks"]["index"]["recordings"] == 3:
                break
            await sleep(0.1)
        self.assertEqual(health["status"], "ok")
        self.assertEqual(health["checks"]["index"],
                         {"state": "ready", "recordings": 3, "in_memory": False})  # fmt: skip
        samples = await scrape(port)
        self.assertEqual(
            samples[("livestream_library_recordings", (("kind", "audio"), ("location", "local")))],
            3,
        )
        self.assertEqual(samples[("livestream_library_index_ready", ())], 1)
        self.assertEqual(samples[("livestream_library_index_write_errors_total", ())], 0)
