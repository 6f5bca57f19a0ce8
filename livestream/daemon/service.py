"""``makeService``: the daemon as one MultiService, built from a :class:`Config`.

Children start in order and stop in reverse, each once the one started after it has stopped:
recovery scans ``temp/`` before anything listens, and on stop the listeners close first, then
every live session is finalized, then the uploader waits for its uploads, then the object store's
threads stop.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from OpenSSL import SSL
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web.server import Site

from livestream.bucket.library import BucketLibrary
from livestream.bucket.objectstore import ObjectStore
from livestream.bucket.sync import BucketSync
from livestream.bucket.uploader import Uploader
from livestream.bucket.watch import StoreWatch
from livestream.daemon.options import Config, Options
from livestream.hls.streams import HlsSettings, LiveStreams
from livestream.library.index import RecordingIndex
from livestream.library.tree import MediaTree
from livestream.ops import notify
from livestream.ops.health import Health
from livestream.ops.metrics import Metrics
from livestream.ops.retention import Retention
from livestream.ops.stall import StallMonitor
from livestream.ops.webhooks.service import Webhooks
from livestream.recording.video import KEYFRAME_SECONDS, EncoderSettings
from livestream.sessions.events import Events
from livestream.sessions.indexing import indexer
from livestream.sessions.recovery import Recovery
from livestream.sessions.registry import SessionRegistry
from livestream.sessions.session import SessionLimits
from livestream.web.page import Page
from livestream.web.protocol import RecordingFactory
from livestream.web.site import make_site

__all__ = ["Options", "makeService", "build"]

_log = Logger()


def makeService(options: Options) -> MultiService:
    """twistd's entry point."""
    from twisted.internet import reactor

    return build(options.config(), reactor)


def build(config: Config, reactor) -> MultiService:
    """The service tree of a daemon run with ``config``: its parts are made in the order they
    subscribe to the session events (webhooks, then the uploader, then metrics), then started in
    the order the module's docstring gives."""
    tree = _media_tree(config)
    events = Events()
    index = RecordingIndex(reactor, tree)
    events.subscribe(indexer(index))
    registry = _sessions(config, reactor, tree, events)
    webhooks = _webhooks(config, reactor, tree, events)
    bucket = _bucket(config, reactor, tree, index, events)
    stalls = StallMonitor(reactor)
    live = LiveStreams(
        reactor, lambda: registry.sessions, HlsSettings(config.fps, config.fps * KEYFRAME_SECONDS)
    )
    site = _site(config, reactor, tree, index, events, registry, webhooks, bucket, stalls, live)

    top = _InOrder()
    # First: it measures the event loop through recovery, the sessions and the stop.
    _add(top, "stalls", stalls)
    # Before everything that publishes or deletes (recovery, sessions, uploads, retention), so
    # it is stopped after them and applies what they told it last.
    _add(top, "index", index)
    if webhooks is not None:
        # Before recovery (its events are queued) and before the sessions: stopped after them,
        # it still queues the events of the sessions finished at shutdown.
        _add(top, "webhooks", webhooks)
    if bucket is not None:
        # Before recovery and the sessions: started first, stopped last, so the uploads of the
        # recordings finished at stop get their chance, and the thread pool outlives them.
        _add(top, "objectstore", bucket.objects)
        _add(top, "uploader", bucket.uploader)
        _add(top, "storewatch", bucket.watch)
        _add(top, "bucketsync", bucket.sync)
    Recovery(reactor, tree, config.ffmpeg, events, mux_audio=config.mux_audio).setServiceParent(top)
    _add(top, "retention", _retention(config, reactor, tree, index, registry, bucket))
    # Before the sessions: stopped after them, it closes the streams their end published.
    _add(top, "live", live)
    _add(top, "sessions", registry)
    for description in config.listen:
        _Listener(description, _endpoint(reactor, description), site).setServiceParent(top)
    _Announcement(config.access.describe()).setServiceParent(top)
    notifier = _notifier(reactor, registry)
    if notifier is not None:
        # Last: READY=1 once everything before it has started, the listeners above all.
        notifier.setServiceParent(top)
    return top


def _add(top: MultiService, name: str, service: Service) -> None:
    service.setName(name)
    service.setServiceParent(top)


def _media_tree(config: Config) -> MediaTree:
    """The media tree, made if need be; the daemon stops at start if it cannot be written."""
    tree = MediaTree(config.media)
    try:
        tree.ensure()
    except OSError as e:
        sys.exit(f"livestream: cannot use --media {config.media}: {e}")
    return tree


def _sessions(config: Config, reactor, tree: MediaTree, events: Events) -> SessionRegistry:
    """The live sessions, with the encoder settings and limits every session gets."""
    settings = EncoderSettings(
        ffmpeg=config.ffmpeg,
        fps=config.fps,
        preset=config.preset,
        timing=config.timing,
        mux_audio=config.mux_audio,
        stall_timeout=config.encoder_timeout,
    )
    limits = config.limits
    return SessionRegistry(
        reactor,
        settings,
        tree,
        max_sessions=limits.max_sessions,
        session_limits=SessionLimits(limits.max_session_seconds, limits.max_session_bytes),
        min_free_bytes=limits.min_free_bytes,
        events=events,
        resume_grace=config.resume_grace,
    )


def _webhooks(config: Config, reactor, tree: MediaTree, events: Events) -> Webhooks | None:
    """The webhooks, if any ``--webhook`` was given."""
    if not config.webhooks.urls:
        return None
    return Webhooks(reactor, events, tree, config.webhooks, config.fps)


@dataclass(frozen=True)
class _Bucket:
    """What a daemon with ``--store`` adds: the store's client, the uploader, the watch on the
    store's health, the listing that keeps the index up with the bucket, and the library that
    serves the bucket with this node's files."""

    objects: ObjectStore
    uploader: Uploader
    watch: StoreWatch
    sync: BucketSync
    library: BucketLibrary


def _bucket(
    config: Config, reactor, tree: MediaTree, index: RecordingIndex, events: Events
) -> _Bucket | None:
    if config.store is None:
        return None
    objects = ObjectStore(reactor, config.store)
    sync = BucketSync(reactor, objects, index)
    uploader = Uploader(reactor, tree, objects, events, config.node, fps=config.fps,
                        retry_max=config.upload_retry_max, sync=sync)  # fmt: skip
    watch = StoreWatch(reactor, objects, uploader)
    library = BucketLibrary(tree, objects, uploader, index, sync)
    return _Bucket(objects, uploader, watch, sync, library)


def _site(
    config: Config,
    reactor,
    tree: MediaTree,
    index: RecordingIndex,
    events: Events,
    registry: SessionRegistry,
    webhooks: Webhooks | None,
    bucket: _Bucket | None,
    stalls: StallMonitor,
    live: LiveStreams,
) -> Site:
    """The one Site every listener serves: the recording WebSocket, the page, the recordings,
    health and metrics."""
    limits = config.limits
    watch = bucket.watch if bucket is not None else None
    metrics = Metrics(events, lambda: registry.sessions, webhooks, watch, stalls, index)
    factory = RecordingFactory(reactor, registry, limits, config.access)
    health = Health(tree, config.ffmpeg, limits.min_free_bytes, watch, index, registry.storage)
    page = Page(lambda: registry.sessions, config.access, config.fps, config.resume_grace)
    return make_site(
        tree, factory, page, config.access, limits.handshake_timeout, index=index,
        registry=registry,
        health=health, metrics=metrics, library=bucket.library if bucket is not None else None,
        objects=bucket.objects if bucket is not None else None, presign=config.presign,
        live=live,
    )  # fmt: skip


def _retention(
    config: Config,
    reactor,
    tree: MediaTree,
    index: RecordingIndex,
    registry: SessionRegistry,
    bucket: _Bucket | None,
) -> Retention:
    """Retention of the local tree, or of the bucket's objects with ``--store``; it never deletes
    a recording whose session is live."""
    return Retention(
        reactor, tree, index, config.retention, lambda: (s.name for s in registry.sessions),
        bucket=bucket.library if bucket is not None else None,
    )  # fmt: skip


def _notifier(reactor, registry: SessionRegistry) -> Service | None:
    """sd_notify's READY, watchdog and status, when systemd gave the daemon a notify socket."""
    notifier = notify.Notifier.from_environment(os.environ)
    if notifier is None:
        return None
    return notify.SystemdNotify(
        reactor,
        notifier,
        notify.watchdog_interval(os.environ, os.getpid()),
        lambda: f"{len(registry.sessions)} live sessions",
    )


def _endpoint(reactor, description: str):
    try:
        endpoint = serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError) as e:
        sys.exit(f"livestream: bad --listen {description!r}: {e}")
    except IndexError:
        # Only the systemd endpoint indexes a list: the sockets systemd passed, in LISTEN_FDS
        # (Twisted also needs LISTEN_FDNAMES, which systemd 227 and later always set).
        sys.exit(
            f"livestream: --listen {description!r}: systemd passed no socket at that index "
            "(started without livestream.socket?)"
        )
    if description.startswith("ssl:"):
        _require_tls_callbacks(description)
    return endpoint


def _require_tls_callbacks(description: str) -> None:
    """Stop at start where TLS would fail every connection: pyOpenSSL gives OpenSSL callbacks
    (Twisted sets one per context) made in memory both writable and executable, which
    systemd's MemoryDenyWriteExecute=yes forbids."""
    try:
        SSL.Context(SSL.TLS_METHOD).set_alpn_select_callback(lambda connection, offered: b"")
    except MemoryError:
        sys.exit(
            f"livestream: --listen {description!r}: TLS needs memory both writable and "
            "executable for OpenSSL's callbacks; with systemd, set MemoryDenyWriteExecute=no"
        )


class _InOrder(MultiService):
    """Stops its services one after another, the last started first.

    MultiService stops them all at once: the object store's thread pool stopped while the
    uploader still waited for an upload in it, so the reactor blocked until that upload ended and
    the uploader's next call (the HEAD that confirms it) was never answered: the stop hung."""

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return ensureDeferred(self._stop_each())

    async def _stop_each(self) -> None:
        for service in reversed(list(self)):
            try:
                await maybeDeferred(service.stopService)
            except Exception:
                _log.failure("stopping {service}", service=service)


class _Announcement(Service):
    """One line, once the daemon is up, saying who may connect: an open daemon is no surprise."""

    def __init__(self, message: str) -> None:
        self.message = message

    def startService(self) -> None:
        super().startService()
        _log.info("{message}", message=self.message)


class _Listener(StreamServerEndpointService):
    """A listener whose failure to listen stops the daemon at start with one line."""

    def __init__(self, description: str, endpoint, factory) -> None:
        super().__init__(endpoint, factory)
        self.description = description
        # Fail in startService, not later in the log, when the port cannot be had.
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or e.socketError
            raise SystemExit(f"livestream: cannot listen on {self.description}: {reason}") from None
