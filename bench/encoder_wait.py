"""How long a healthy encoder leaves its input full: the figure ``--encoder-timeout`` is set
against.

An encoder is taken for stuck when its stdin stays full, not read at all, for
``--encoder-timeout`` seconds (:mod:`livestream.recording.encoder`). A healthy one leaves it full
too, whenever frames come faster than it encodes; the longer the machine is overloaded, the
longer each wait between two of its reads. This runs N sessions' real encoders (the daemon's
own recorders, 640x480 mandelbrot JPEGs, ``--preset ultrafast``), each fed as fast as its pipe
takes frames, so every pipe is full nearly all the time and the 2 cores are shared by N x264s,
and records every span from a pipe filling to its next read.

Per N: frames encoded per second (all sessions), the spans' count, median, 99th percentile and
longest. N beyond the real-time capacity (about 24 here) is overload on purpose: the longest span
there is the slowest legitimate stall, which the timeout must stay well above.

    .venv/bin/python -m bench.encoder_wait                      # N = 1, 24, 48, 96; 20 s each
    .venv/bin/python -m bench.encoder_wait --sessions 8 --seconds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from bench.load import make_jpegs
from livestream.library.tree import MediaTree
from livestream.recording import ffmpeg
from livestream.recording.feed import Feed
from livestream.recording.video import EncoderSettings, VideoRecorder

SIZE = (640, 480)

_spans: list[float] = []
_full_since: dict[int, float] = {}
_pause, _resume = Feed.pauseProducing, Feed.resumeProducing


def _timed_pause(feed: Feed) -> None:
    _full_since.setdefault(id(feed), time.monotonic())
    _pause(feed)


def _timed_resume(feed: Feed) -> None:
    since = _full_since.pop(id(feed), None)
    if since is not None:
        _spans.append(time.monotonic() - since)
    _resume(feed)


@implementer(IPushProducer)
class Pump:
    """One session's client, sending frames as fast as its encoder's pipe takes them."""

    def __init__(self, reactor, frames: list[bytes]) -> None:
        self._reactor = reactor
        self._frames = frames
        self._paused = False
        self._stopped = False
        self.recorder: VideoRecorder | None = None
        self.sent = 0

    def start(self) -> None:
        self._reactor.callLater(0, self._send)

    def _send(self) -> None:
        while not self._paused and not self._stopped and self.recorder is not None:
            self.recorder.write(self._frames[self.sent % len(self._frames)], SIZE)
            self.sent += 1
            if self.sent % 4 == 0:  # let the reactor read the pipes too
                self._reactor.callLater(0, self._send)
                return

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if self._paused:
            self._paused = False
            self._reactor.callLater(0, self._send)

    def stopProducing(self) -> None:
        self._stopped = True


async def step(reactor, executable: str, count: int, seconds: float, frames: list[bytes]) -> dict:
    _spans.clear()
    _full_since.clear()
    with tempfile.TemporaryDirectory(prefix="bench-wait-") as tmp:
        tree = MediaTree(Path(tmp))
        tree.ensure()
        settings = EncoderSettings(executable, 15, "ultrafast", stall_timeout=1e9)
        pumps = []
        for i in range(count):
            pump = Pump(reactor, frames)
            name = tree.reserve(f"wait{i}", 1700000000000)
            pump.recorder = VideoRecorder(reactor, settings, tree, name, pump, lambda r, s: None)
            pumps.append(pump)
            pump.start()
        started = time.monotonic()
        await task.deferLater(reactor, seconds)
        for pump in pumps:
            pump.stopProducing()
        spans = sorted(_spans)
        sent = sum(p.sent for p in pumps)
        elapsed = time.monotonic() - started
        await defer.gatherResults(
            [defer.ensureDeferred(p.recorder.end()) for p in pumps if p.recorder is not None]
        )
    return {
        "sessions": count,
        "frames_per_s": sent / elapsed,
        "spans": len(spans),
        "median_s": statistics.median(spans) if spans else 0.0,
        "p99_s": spans[int(len(spans) * 0.99)] if spans else 0.0,
        "longest_s": spans[-1] if spans else 0.0,
    }


async def main(reactor, args: argparse.Namespace) -> None:
    Feed.pauseProducing = _timed_pause  # type: ignore[method-assign,assignment]
    Feed.resumeProducing = _timed_resume  # type: ignore[method-assign,assignment]
    executable = ffmpeg.find(None)
    frames = list(make_jpegs(executable, 30, f"{SIZE[0]}x{SIZE[1]}", "mandelbrot", 3))
    print(f"{'sessions':>8} {'frames/s':>9} {'spans':>7} {'median':>8} {'p99':>8} {'longest':>8}")
    for count in args.sessions:
        r = await step(reactor, executable, count, args.seconds, frames)
        print(
            f"{r['sessions']:>8} {r['frames_per_s']:>9.1f} {r['spans']:>7} "
            f"{r['median_s']:>7.3f}s {r['p99_s']:>7.3f}s {r['longest_s']:>7.3f}s",
            flush=True,
        )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sessions",
        type=lambda s: [int(n) for n in s.split(",")],
        default=[1, 24, 48, 96],
        help="comma-separated session counts (default 1,24,48,96)",
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, parse())))
