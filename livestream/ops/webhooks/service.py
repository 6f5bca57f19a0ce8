"""The webhooks as a service: it hears the session events, queues them, and delivers them.

Each event is drafted in the reactor, then hashed and spooled in a thread, then posted to each
URL until delivered or given up. At stop it waits for the last sessions' events to be queued
and gives deliveries due now a moment; the rest stays on disk for the next start.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool

from livestream.library.tree import MediaTree
from livestream.ops.webhooks.delivery import MAX_AGE, TIMEOUT, post_once, retry_delay, where
from livestream.ops.webhooks.payload import Draft, body_of, draft_of
from livestream.ops.webhooks.settings import WebhookSettings
from livestream.ops.webhooks.signing import signed_headers
from livestream.ops.webhooks.spool import Pending, Spool
from livestream.sessions.events import Event, Events, SessionEnded, SessionStarted

_log = Logger()

# On stop: how long to wait for the last sessions' events, then for deliveries due now.
STOP_WAIT = 60.0
DELIVERY_GRACE = 5.0
_POLL = 0.05


class Webhooks(Service):
    """Subscribes to the hub, queues events on disk, delivers them; counts for /metrics."""

    def __init__(
        self,
        reactor,
        events: Events,
        tree: MediaTree,
        settings: WebhookSettings,
        fps: int,
        *,
        timeout: float = TIMEOUT,
        max_age: float = MAX_AGE,
    ) -> None:
        self._reactor = reactor
        self._tree = tree
        self._settings = settings
        self._fps = fps
        self._timeout = timeout
        self._max_age = max_age
        self._spool = Spool(tree.root / "webhooks")
        self._pending: dict[Path, Pending] = {}
        self._preparing = 0
        self._live: set[str] = set()
        self._http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        # Set once stopping has given up on delivering: what is queued after waits on disk.
        self._closed = True
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        events.subscribe(self._observe)

    @property
    def directory(self) -> Path:
        return self._spool.directory

    @property
    def pending(self) -> int:
        return len(self._pending)

    def startService(self) -> None:
        super().startService()
        self._closed = False
        for entry in self._spool.recover():
            self._pending[entry.path] = entry
            self._schedule(entry, 0)
        if self._pending:
            _log.info("{count} webhook events from before the start to deliver",
                      count=len(self._pending))  # fmt: skip

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return ensureDeferred(self._drain())

    async def _drain(self) -> None:
        """Sessions still being finished emit their last events after this is called: wait for
        those to be queued, give deliveries due now a moment, then leave the rest on disk."""
        now = self._reactor.seconds
        deadline = now() + STOP_WAIT
        while (self._live or self._preparing) and now() < deadline:
            await deferLater(self._reactor, _POLL)
        grace = now() + DELIVERY_GRACE
        while now() < grace and any(
            e.request is not None or (e.call is not None and e.call.getTime() <= grace)
            for e in self._pending.values()
        ):
            await deferLater(self._reactor, _POLL)
        self._closed = True
        for entry in self._pending.values():
            if entry.call is not None and entry.call.active():
                entry.call.cancel()
            entry.call = None
            if entry.request is not None:
                entry.request.cancel()

    # --- events -> drafts -> files on disk --------------------------------------------------

    def _observe(self, event: Event) -> None:
        if isinstance(event, SessionStarted):
            self._live.add(event.name)
        elif isinstance(event, SessionEnded):
            self._live.discard(event.name)
        draft = draft_of(event, self._tree)
        if draft is None:
            return
        self._preparing += 1
        created = self._reactor.seconds()
        d = deferToThread(self._write, draft, created)
        d.addCallback(self._queued)
        d.addErrback(lambda f: _log.failure("could not queue a webhook event", f))
        d.addBoth(self._prepared)

    def _prepared(self, _: object) -> None:
        self._preparing -= 1

    def _write(self, draft: Draft, created: float) -> list[Pending]:
        """In a thread: hash the files, then write one queue file per URL."""
        event_id = uuid.uuid4().hex
        body = body_of(draft, event_id, created, self._fps)
        return self._spool.write(event_id, draft.type, body, created, self._settings.urls)

    def _queued(self, entries: list[Pending]) -> None:
        for entry in entries:
            self._pending[entry.path] = entry
            if not self._closed:
                self._schedule(entry, 0)

    # --- delivery ---------------------------------------------------------------------------

    def _schedule(self, entry: Pending, delay: float) -> None:
        entry.call = self._reactor.callLater(delay, self._attempt, entry)

    def _attempt(self, entry: Pending) -> None:
        entry.call = None
        entry.request = ensureDeferred(self._post(entry))
        entry.request.addErrback(lambda f: f.trap(CancelledError))

    async def _post(self, entry: Pending) -> None:
        timestamp = int(self._reactor.seconds())
        headers = signed_headers(self._settings.secret, entry.id, timestamp, entry.body)
        try:
            ok, why = await post_once(
                self._http, self._reactor, entry.url, entry.body, headers, self._timeout
            )
        finally:
            entry.request = None
        entry.attempts += 1
        if ok:
            self.delivered += 1
            self._forget(entry)
            _log.info("webhook {type} {id} delivered to {url} ({why}, attempt {attempts})",
                      type=entry.type, id=entry.id, url=where(entry.url), why=why,
                      attempts=entry.attempts)  # fmt: skip
            return
        self.failed += 1
        age = self._reactor.seconds() - entry.created
        if age >= self._max_age:
            self.dropped += 1
            self._forget(entry)
            _log.error("webhook {type} {id} to {url} dropped after {attempts} attempts over "
                       "{hours:.1f} h; last: {why}", type=entry.type, id=entry.id,
                       url=where(entry.url), attempts=entry.attempts, hours=age / 3600,
                       why=why)  # fmt: skip
            return
        delay = retry_delay(entry.attempts)
        _log.warn("webhook {type} {id} to {url} failed ({why}); attempt {attempts}, next in "
                  "{delay:.0f}s", type=entry.type, id=entry.id, url=where(entry.url), why=why,
                  attempts=entry.attempts, delay=delay)  # fmt: skip
        if not self._closed:
            self._schedule(entry, delay)

    def _forget(self, entry: Pending) -> None:
        self._pending.pop(entry.path, None)
        self._spool.remove(entry)
