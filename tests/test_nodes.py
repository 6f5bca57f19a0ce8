"""Several daemons, one bucket, HAProxy in front on 127.0.0.1: what an operator deploys.

Clients spread across the nodes through the balancer; every recording ends up in the one
library, each object naming the node that made it; a node killed with SIGKILL mid-session has
its recovered recording uploaded when it starts again.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.daemon import Daemon, ended, stop
from tests.support.http import get_json
from tests.support.media import jpeg_frames, pcm, video_facts
from tests.support.ports import free_port
from tests.support.processes import children, kill, wait_gone
from tests.support.s3 import S3Server
from tests.support.waiting import sleep
from tests.support.websocket import record, stream_without_close

FPS = 15
HAPROXY_CONFIG = """\
global
    maxconn 256
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend recordings
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    balance roundrobin
{servers}
"""


def haproxy() -> str | None:
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


class _Quiet(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason) -> None:
        self.ended.callback(None)


async def start_haproxy(testcase: TestCase, workdir: Path, ports: list[int]) -> int:
    """HAProxy (``-db``: in the foreground) balancing ``ports``, round robin; its port."""
    exe = haproxy()
    port = free_port()
    servers = "\n".join(f"    server n{i} 127.0.0.1:{p}" for i, p in enumerate(ports))
    config = workdir / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
    proto = _Quiet()
    reactor.spawnProcess(proto, exe, [exe, "-db", "-f", os.fspath(config)], env=os.environ)

    async def halt() -> None:
        if not proto.ended.called:
            proto.transport.signalProcess("TERM")
        await proto.ended

    testcase.addCleanup(lambda: ensureDeferred(halt()))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return port
        except OSError:
            await sleep(0.05)
    raise AssertionError("haproxy did not listen")


async def until(condition, timeout: float, what: str) -> None:
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await sleep(0.2)


class NodesTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        if haproxy() is None:
            raise SkipTest("haproxy is not installed (./manage test installs it with apt-get)")
        self.s3 = S3Server(self)
        self.root = Path(self.mktemp()).absolute()

    def node(self, name: str, port: int | None = None) -> Daemon:
        workdir = self.root / name
        workdir.mkdir(parents=True, exist_ok=True)
        daemon = Daemon(
            workdir, workdir / "media", port or free_port(), "--fps", str(FPS),
            "--store", f"s3://{self.s3.bucket}/lib", "--s3-endpoint", self.s3.endpoint,
            "--node", name, "--upload-retry-max", "2",
        )  # fmt: skip
        daemon.start()
        self.addCleanup(stop, daemon)
        return daemon

    def nodes_of(self, prefix: str) -> dict[str, str]:
        return {key: self.s3.client.head_object(Bucket=self.s3.bucket, Key=key)["Metadata"]["node"]
                for key in self.s3.keys(prefix)}  # fmt: skip

    async def lists(self, port: int, files: dict[str, set[str]]) -> None:
        """``GET /recordings`` on ``port`` names exactly ``files`` within 5 s."""
        deadline = reactor.seconds() + 5
        while True:
            listing = await get_json(port, "/recordings")
            got = {kind: set(names) for kind, names in listing.items()}
            if got == files or reactor.seconds() > deadline:
                break
            await sleep(0.5)
        self.assertEqual(got, files, f"the listing of port {port}")

    def test_two_nodes_one_library(self):
        return ensureDeferred(self._two_nodes_one_library())

    async def _two_nodes_one_library(self) -> None:
        await self.s3.start()
        a, b = self.node("node-a"), self.node("node-b")
        await a.listening()
        await b.listening()
        port = await start_haproxy(self, self.root, [a.port, b.port])

        frames = jpeg_frames(15)
        sessions = [
            ensureDeferred(record(port, f"cam-{i}", frames, [pcm(2940, seed=i)] * 5))
            for i in range(4)
        ]
        names = []
        for d in sessions:
            _, connected, closed = await d
            names.append(connected["recording"])
            self.assertEqual(closed["recordings"]["audio"], f"{connected['recording']}.wav")
        want = sorted([f"lib/audio/{n}.wav" for n in names] + [f"lib/video/{n}.mp4" for n in names])

        def recordings() -> list[str]:
            return self.s3.keys("lib/audio/") + self.s3.keys("lib/video/")

        await until(lambda: recordings() == want, 30, f"{want} in the bucket")
        posters = sorted(f"lib/posters/{n}.jpg" for n in names)
        self.assertEqual(self.s3.keys("lib/posters/"), posters)
        # Round robin: each node recorded two of the four sessions.
        made_by = sorted(self.nodes_of("lib/video/").values())
        self.assertEqual(made_by, ["node-a", "node-a", "node-b", "node-b"])
        for daemon in (a, b):
            self.assertEqual(list((daemon.media / "video").iterdir()), [])
        # Every node answers with the whole library (a listing is at most 2 s old).
        files = {"video": {f"{n}.mp4" for n in names}, "audio": {f"{n}.wav" for n in names}}
        for p in (a.port, b.port, port):
            await self.lists(p, files)
            details = (await get_json(p, "/api/recordings"))["recordings"]
            self.assertEqual({d["name"] for d in details}, files["video"] | files["audio"])
            self.assertEqual({d["frames"] for d in details if d["kind"] == "video"}, {15})

        # node-a dies mid-session (SIGKILL of the daemon alone: its encoder finishes the file).
        chunks = [pcm(2940, seed=100 + i) for i in range(30)]
        client, name = await stream_without_close(a.port, "crashy", jpeg_frames(30), chunks)
        await sleep(1.0)
        encoders = children(a.pid)
        kill(a.pid)
        await ended(a, 30)
        await client.closed.addTimeout(30, reactor)
        for pid in await wait_gone(encoders, 30):
            kill(pid)

        restarted = self.node("node-a", port=a.port)
        await restarted.listening()
        key = f"lib/video/{name}.mp4"
        await until(lambda: key in self.s3.keys(), 40, f"{key} after the restart")
        await until(lambda: f"lib/audio/{name}.wav" in self.s3.keys(), 10, "the audio")
        self.assertEqual(self.nodes_of(key)[key], "node-a")
        video = self.root / "crashy.mp4"
        video.write_bytes(self.s3.get(key)[0])
        self.assertEqual(video_facts(video).frames, 30)
        audio, _ = self.s3.get(f"lib/audio/{name}.wav")
        self.assertEqual(audio[44:], b"".join(chunks))
        self.assertEqual(list((restarted.media / "uploads").iterdir()), [])

        # The balancer sends new sessions to the restarted node again.
        after = []
        for i in range(2):
            _, connected, _ = await record(port, f"after-{i}", frames)
            after.append(f"lib/video/{connected['recording']}.mp4")
        await until(lambda: set(after) <= set(self.s3.keys()), 30, "the sessions after")
        made_by = self.nodes_of("lib/video/")
        self.assertEqual(sorted(made_by[k] for k in after), ["node-a", "node-b"])
        everything = {kind: {key.rpartition("/")[2] for key in self.s3.keys(f"lib/{kind}/")}
                      for kind in ("video", "audio")}  # fmt: skip
        for p in (restarted.port, b.port):
            await self.lists(p, everything)
