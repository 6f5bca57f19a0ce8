"""``GET /metrics``: what the daemon did and is doing, in the Prometheus text format.

Everything comes from the event hub and from the live sessions at scrape time; nothing here
reaches into the recording path. Each daemon has its own ``CollectorRegistry`` (not the module
global one), so several daemons in one process (the tests) keep separate counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from livestream.library.catalog import LOCATIONS
from livestream.library.index import READY
from livestream.ops.stall import Lateness
from livestream.sessions.events import (
    EncoderFailed,
    ErrorSent,
    Event,
    Events,
    Recovered,
    SessionEnded,
    SessionStarted,
    StorageFailed,
)

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# CLOSE-to-ready is about 0.1-0.3 s for any length (bench/); seconds mean something went slow.
FINALIZE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LiveSession(Protocol):
    name: str
    bytes: int

    @property
    def frames(self) -> int: ...


class WebhookStats(Protocol):
    delivered: int
    failed: int
    dropped: int

    @property
    def pending(self) -> int: ...


class UploadStats(Protocol):
    """The bucket's figures, read at each scrape (the store's watch keeps them)."""

    @property
    def reachable(self) -> bool | None: ...
    @property
    def failures(self) -> int: ...
    @property
    def uploaded(self) -> int: ...
    @property
    def backlog(self) -> int: ...


class StallStats(Protocol):
    """How late the reactor ran its timer (``ops.stall``), read at each scrape."""

    @property
    def lateness(self) -> Lateness: ...


class LibraryStats(Protocol):
    """What the recordings index holds (``library.index``), read at each scrape."""

    state: str
    write_errors: int
    totals: dict[tuple[str, int], tuple[int, int]]


class HlsStats(Protocol):
    """What live HLS serves (``hls.streams``), read at each scrape."""

    answered: dict[str, int]
    bytes_served: int
    timeouts: int

    def __len__(self) -> int: ...
    def waiting(self) -> int: ...


class Metrics:
    """Counts what the hub reports; ``live`` gives the sessions recording now, ``uploads`` the
    figures of the bucket (with ``--store s3://``), ``stalls`` the event loop's lateness."""

    def __init__(
        self,
        events: Events,
        live: Callable[[], Iterable[LiveSession]],
        webhooks: WebhookStats | None = None,
        uploads: UploadStats | None = None,
        stalls: StallStats | None = None,
        library: LibraryStats | None = None,
        hls: HlsStats | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._hls = hls
        self._library = library
        self._live = live
        self._webhooks = webhooks
        self._uploads = uploads
        self._stalls = stalls
        # Totals of finished sessions; live ones are added at scrape time, so the sum only grows.
        self._ended_frames = 0
        self._ended_bytes = 0
        # Sessions that ended but are still listed as live (their client has not closed yet):
        # already in the totals above, so not counted again.
        self._ended_live: set[str] = set()
        r = self.registry
        self._started = Counter(
            "livestream_sessions_started", "Recording sessions opened (CONNECT accepted).",
            registry=r,
        )  # fmt: skip
        self._recordings = Counter(
            "livestream_recordings", "Recordings finished and listed, by kind.", ["kind"],
            registry=r,
        )  # fmt: skip
        self._finalize = Histogram(
            "livestream_finalize_seconds",
            "Time from a session's end (CLOSE, disconnect, limit) to its files being listed.",
            buckets=FINALIZE_BUCKETS, registry=r,
        )  # fmt: skip
        self._errors = Counter(
            "livestream_errors", "ERROR replies sent to clients, by code.", ["code"], registry=r
        )
        self._encoder_failures = Counter(
            "livestream_encoder_failures", "ffmpeg encoders that stopped before their input ended.",
            registry=r,
        )  # fmt: skip
        self._encoder_replacements = Counter(
            "livestream_encoder_replacements",
            "Encoders that stopped or stuck mid-session and were replaced by a new one.",
            registry=r,
        )  # fmt: skip
        self._finalize_failures = Counter(
            "livestream_finalize_failures",
            "Sessions whose files could not be finished (left for recovery at the next start).",
            registry=r,
        )  # fmt: skip
        self._storage_errors = Counter(
            "livestream_storage_errors",
            "Writes to the media tree that failed other than for a full disk, by errno name "
            "(EIO, EROFS, ENOENT: the tree is gone); each ended a session or refused a CONNECT.",
            ["error"], registry=r,
        )  # fmt: skip
        self._recoveries = Counter(
            "livestream_recoveries", "Interrupted recordings published by recovery at start.",
            registry=r,
        )  # fmt: skip
        r.register(_Sampled(self))
        events.subscribe(self._observe)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _observe(self, event: Event) -> None:
        match event:
            case SessionStarted():
                self._started.inc()
            case SessionEnded(outcome=outcome):
                self._ended_frames += outcome.frames
                self._ended_bytes += outcome.bytes
                self._ended_live.add(event.name)
                self._finalize.observe(event.finalize_seconds)
                if outcome.failed:
                    self._finalize_failures.inc()
                for kind, published in (("video", outcome.video), ("audio", outcome.audio)):
                    if published:
                        self._recordings.labels(kind).inc()
            case ErrorSent(code=code):
                self._errors.labels(code).inc()
            case EncoderFailed(replaced=replaced):
                self._encoder_failures.inc()
                if replaced:
                    self._encoder_replacements.inc()
            case StorageFailed(error=error):
                self._storage_errors.labels(error).inc()
            case Recovered(files=files):
                self._recoveries.inc()
                for kind, published in files.items():
                    if published:
                        self._recordings.labels(kind).inc()

    def _sample(self) -> Iterator[Metric]:
        sessions = list(self._live())
        names = {s.name for s in sessions}
        self._ended_live &= names
        recording = [s for s in sessions if s.name not in self._ended_live]
        yield GaugeMetricFamily(
            "livestream_live_sessions", "Sessions connected or being finished now.", len(sessions)
        )
        yield CounterMetricFamily(
            "livestream_frames_received", "Video frames accepted (finished and live sessions).",
            self._ended_frames + sum(s.frames for s in recording),
        )  # fmt: skip
        yield CounterMetricFamily(
            "livestream_bytes_received", "Media bytes accepted, video and audio.",
            self._ended_bytes + sum(s.bytes for s in recording),
        )  # fmt: skip
        yield from self._sample_uploads()
        yield from self._sample_stalls()
        yield from self._sample_library()
        yield from self._sample_hls()
        hooks = self._webhooks
        if hooks is None:
            return
        yield CounterMetricFamily(
            "livestream_webhook_deliveries", "Webhook events delivered (a 2xx answer).",
            hooks.delivered,
        )  # fmt: skip
        yield CounterMetricFamily(
            "livestream_webhook_failures",
            "Webhook delivery attempts that failed (non-2xx, timeout, no connection).",
            hooks.failed,
        )  # fmt: skip
        yield CounterMetricFamily(
            "livestream_webhook_dropped", "Webhook events given up after the maximum age.",
            hooks.dropped,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "livestream_webhook_queue", "Webhook events waiting for delivery (kept on disk).",
            hooks.pending,
        )  # fmt: skip

    def _sample_hls(self) -> Iterator[Metric]:
        hls = self._hls
        if hls is None:
            return
        yield GaugeMetricFamily(
            "livestream_hls_streams", "Live sessions watched over HLS now (asked for lately).",
            len(hls),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "livestream_hls_waiting_requests",
            "Blocking playlist reloads and preload-hint parts held now.", hls.waiting(),
        )  # fmt: skip
        answered = CounterMetricFamily(
            "livestream_hls_responses", "Live HLS answers sent with their media, by kind.",
            labels=["kind"],
        )  # fmt: skip
        for kind, count in sorted(hls.answered.items()):
            answered.add_metric([kind], count)
        yield answered
        yield CounterMetricFamily(
            "livestream_hls_bytes_served", "Bytes of live HLS playlists and media sent.",
            hls.bytes_served,
        )  # fmt: skip
        yield CounterMetricFamily(
            "livestream_hls_wait_timeouts",
            "Blocking requests answered 503: what they waited for did not come in time, or too "
            "many waited.", hls.timeouts,
        )  # fmt: skip

    def _sample_stalls(self) -> Iterator[Metric]:
        if self._stalls is None:
            return
        late = self._stalls.lateness
        buckets = [(_bound(b), n) for b, n in zip(late.buckets, late.cumulative, strict=True)]
        yield HistogramMetricFamily(
            "livestream_reactor_lateness_seconds",
            "How much later than asked the event loop ran a timer armed every 50 ms.",
            buckets=[*buckets, ("+Inf", late.count)], sum_value=late.total,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "livestream_reactor_lateness_max_seconds",
            "The longest the event loop ran that timer late since the daemon started.",
            late.maximum,
        )  # fmt: skip

    def _sample_library(self) -> Iterator[Metric]:
        library = self._library
        if library is None:
            return
        count = GaugeMetricFamily(
            "livestream_library_recordings",
            "Finished recordings in the index, by kind and where they are (local, bucket, both).",
            labels=["kind", "location"],
        )  # fmt: skip
        size = GaugeMetricFamily(
            "livestream_library_bytes",
            "Bytes of the finished recordings (and posters) in the index, by kind and location.",
            labels=["kind", "location"],
        )  # fmt: skip
        for (kind, location), (n, total) in sorted(library.totals.items()):
            where = LOCATIONS.get(location, "none")
            count.add_metric([kind, where], n)
            size.add_metric([kind, where], total)
        yield count
        yield size
        yield GaugeMetricFamily(
            "livestream_library_index_ready",
            "1 once the index has been checked against the media tree since the start.",
            1 if library.state == READY else 0,
        )  # fmt: skip
        yield CounterMetricFamily(
            "livestream_library_index_write_errors",
            "Writes to the index that failed (each followed by a check against the tree).",
            library.write_errors,
        )  # fmt: skip

    def _sample_uploads(self) -> Iterator[Metric]:
        uploads = self._uploads
        if uploads is None:
            return
        yield GaugeMetricFamily(
            "livestream_upload_backlog",
            "Finished recordings on local disk still owed to the bucket.", uploads.backlog,
        )  # fmt: skip
        yield CounterMetricFamily(
            "livestream_upload_failures", "Upload attempts that failed (each is retried).",
            uploads.failures,
        )  # fmt: skip
        yield CounterMetricFamily(
            "livestream_uploads", "Recordings confirmed in the bucket and removed from local disk.",
            uploads.uploaded,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "livestream_store_reachable",
            "1 if the bucket answered the last check (every 10 s), else 0.",
            1 if uploads.reachable else 0,
        )  # fmt: skip


def _bound(seconds: float) -> str:
    """A bucket's bound as Prometheus writes it (``0.05``, ``1.0``)."""
    return repr(float(seconds))


class _Sampled(Collector):
    """What is read at scrape time rather than counted from events."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics._sample()
