"""Webhooks: a signed JSON POST to each configured URL when a recording starts, completes, fails
or is recovered.

Every event is written to ``media/webhooks/`` (one JSON file per event and URL, temp + fsync +
rename) before it is sent, and removed once the receiver answers 2xx; anything else is retried
with capped exponential backoff until the event is ``max_age`` old. Files left when the daemon
stops are sent when it starts again, so delivery is at least once: receivers deduplicate by the
event id. Hashing the recordings and writing the queue happen in a thread; the reactor only posts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool

from livestream.library.tree import MediaStore
from livestream.recording.audio import HEADER_SIZE
from livestream.sessions.events import (
    Event,
    Events,
    Recovered,
    SessionEnded,
    SessionStarted,
)
from livestream.wire.kinds import AUDIO, SAMPLE_RATE, VIDEO

_log = Logger()

SIGNATURE_HEADER = "X-Livestream-Signature"
TIMESTAMP_HEADER = "X-Livestream-Timestamp"
EVENT_HEADER = "X-Livestream-Event"
STARTED = "recording.started"
COMPLETED = "recording.completed"
FAILED = "recording.failed"
RECOVERED = "recording.recovered"

# Retry after 1 s, 2 s, 4 s ... at most every 10 minutes, for 3 days.
FIRST_RETRY = 1.0
MAX_RETRY = 600.0
MAX_AGE = 3 * 86400.0
TIMEOUT = 10.0
# On stop: how long to wait for the last sessions' events, then for deliveries due now.
STOP_WAIT = 60.0
DELIVERY_GRACE = 5.0
_POLL = 0.05
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class WebhookSettings:
    urls: tuple[str, ...] = ()
    secret: bytes = field(default=b"", repr=False)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 over ``<timestamp>.<body>``, so a captured
    request cannot be replayed later with a fresh timestamp."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones."""
    return min(MAX_RETRY, FIRST_RETRY * 2 ** min(attempts - 1, 30))


def _where(url: str) -> str:
    """A URL for the log, without user info or query (either may hold a credential)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


@dataclass
class _Pending:
    path: Path
    id: str
    type: str
    url: str
    body: bytes
    created: float
    attempts: int = 0
    call: IDelayedCall | None = None
    request: Deferred[None] | None = None


@dataclass
class _FileRef:
    kind: str
    path: Path
    frames: int | None = None
    samples: int | None = None


@dataclass
class _Draft:
    """An event whose recordings are still to be hashed (in a thread)."""

    type: str
    fields: dict[str, Any]
    files: list[_FileRef] = field(default_factory=list)


class Webhooks(Service):
    """Subscribes to the hub, queues events on disk, delivers them; counts for /metrics."""

    def __init__(
        self,
        reactor,
        events: Events,
        store: MediaStore,
        settings: WebhookSettings,
        fps: int,
        *,
        timeout: float = TIMEOUT,
        max_age: float = MAX_AGE,
    ) -> None:
        self._reactor = reactor
        self._store = store
        self._settings = settings
        self._fps = fps
        self._timeout = timeout
        self._max_age = max_age
        self.directory = store.root / "webhooks"
        self._pending: dict[Path, _Pending] = {}
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
    def pending(self) -> int:
        return len(self._pending)

    def startService(self) -> None:
        super().startService()
        self._closed = False
        self.directory.mkdir(exist_ok=True)
        found = sorted(self.directory.iterdir())
        for path in found:
            if path.name.startswith("."):
                path.unlink()  # a write the daemon did not finish; its event was never sent
                continue
            try:
                entry = _load(path)
            except (OSError, ValueError, KeyError) as e:
                _log.error("left alone in webhooks/: {path} ({error})", path=path, error=e)
                continue
            self._pending[path] = entry
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
        draft = self._draft(event)
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

    def _draft(self, event: Event) -> _Draft | None:
        match event:
            case SessionStarted():
                self._live.add(event.name)
                return _Draft(STARTED, _session_fields(event))
            case SessionEnded(outcome=outcome):
                self._live.discard(event.name)
                fields = {
                    **_session_fields(event),
                    "reason": outcome.reason,
                    "duration": round(event.seconds, 3),
                    "bytes": outcome.bytes,
                }
                kind = COMPLETED
                if outcome.result != "ok":
                    kind = FAILED
                    fields["error"] = outcome.result
                draft = _Draft(kind, fields)
                if outcome.video:
                    draft.files.append(_FileRef(VIDEO, self._store.dir(VIDEO) / outcome.video,
                                                frames=outcome.frames))  # fmt: skip
                if outcome.audio:
                    draft.files.append(_FileRef(AUDIO, self._store.dir(AUDIO) / outcome.audio,
                                                samples=outcome.audio_bytes // 2))  # fmt: skip
                return draft
            case Recovered(files=files):
                draft = _Draft(RECOVERED, {"recording": event.name})
                for kind, published in files.items():
                    if published:
                        draft.files.append(_FileRef(kind, self._store.dir(kind) / published))
                return draft
        return None

    def _write(self, draft: _Draft, created: float) -> list[_Pending]:
        """In a thread: hash the files, then write one queue file per URL."""
        event_id = uuid.uuid4().hex
        body = {
            "id": event_id,
            "type": draft.type,
            "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            **draft.fields,
            "files": [self._describe(ref) for ref in draft.files],
        }
        raw = json.dumps(body, separators=(",", ":")).encode("utf-8")
        entries = []
        for index, url in enumerate(self._settings.urls):
            path = self.directory / f"{int(created * 1000):013d}-{event_id}-{index}.json"
            record = {"id": event_id, "type": draft.type, "url": url, "created": created,
                      "body": raw.decode("utf-8")}  # fmt: skip
            _write_durably(path, json.dumps(record).encode("utf-8"))
            entries.append(_Pending(path, event_id, draft.type, url, raw, created))
        return entries

    def _describe(self, ref: _FileRef) -> dict[str, Any]:
        facts: dict[str, Any] = {"kind": ref.kind, "name": ref.path.name,
                                 "url": f"/recordings/{ref.kind}/{ref.path.name}"}  # fmt: skip
        try:
            size, digest = _hash(ref.path)
        except OSError as e:
            _log.warn("webhook: cannot read {path}: {error}", path=ref.path, error=e)
            size, digest = None, None
        facts["size"] = size
        facts["sha256"] = digest
        if ref.kind == VIDEO:
            facts["frames"] = ref.frames
            facts["duration"] = None if ref.frames is None else round(ref.frames / self._fps, 3)
        else:
            samples = ref.samples
            if samples is None and size is not None:
                samples = max(0, size - HEADER_SIZE) // 2
            facts["samples"] = samples
            facts["duration"] = None if samples is None else round(samples / SAMPLE_RATE, 3)
        return facts

    def _queued(self, entries: list[_Pending]) -> None:
        for entry in entries:
            self._pending[entry.path] = entry
            if not self._closed:
                self._schedule(entry, 0)

    # --- delivery ---------------------------------------------------------------------------

    def _schedule(self, entry: _Pending, delay: float) -> None:
        entry.call = self._reactor.callLater(delay, self._attempt, entry)

    def _attempt(self, entry: _Pending) -> None:
        entry.call = None
        entry.request = ensureDeferred(self._post(entry))
        entry.request.addErrback(lambda f: f.trap(CancelledError))

    async def _post(self, entry: _Pending) -> None:
        timestamp = int(self._reactor.seconds())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "livestream-webhook",
            EVENT_HEADER: entry.id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self._settings.secret, timestamp, entry.body),
        }
        try:
            request = self._http.post(entry.url, data=entry.body, headers=headers)
            response = await request.addTimeout(self._timeout, self._reactor)
            await response.content()
            why = f"HTTP {response.code}"
            ok = 200 <= response.code < 300
        except CancelledError:
            entry.request = None
            raise
        except Exception as e:
            why, ok = f"{type(e).__name__}: {e}", False
        entry.request = None
        entry.attempts += 1
        if ok:
            self.delivered += 1
            self._forget(entry)
            _log.info("webhook {type} {id} delivered to {url} ({why}, attempt {attempts})",
                      type=entry.type, id=entry.id, url=_where(entry.url), why=why,
                      attempts=entry.attempts)  # fmt: skip
            return
        self.failed += 1
        age = self._reactor.seconds() - entry.created
        if age >= self._max_age:
            self.dropped += 1
            self._forget(entry)
            _log.error("webhook {type} {id} to {url} dropped after {attempts} attempts over "
                       "{hours:.1f} h; last: {why}", type=entry.type, id=entry.id,
                       url=_where(entry.url), attempts=entry.attempts, hours=age / 3600,
                       why=why)  # fmt: skip
            return
        delay = retry_delay(entry.attempts)
        _log.warn("webhook {type} {id} to {url} failed ({why}); attempt {attempts}, next in "
                  "{delay:.0f}s", type=entry.type, id=entry.id, url=_where(entry.url), why=why,
                  attempts=entry.attempts, delay=delay)  # fmt: skip
        if not self._closed:
            self._schedule(entry, delay)

    def _forget(self, entry: _Pending) -> None:
        self._pending.pop(entry.path, None)
        entry.path.unlink(missing_ok=True)


def _session_fields(event: SessionStarted | SessionEnded) -> dict[str, Any]:
    return {"recording": event.name, "client_id": event.client_id, "peer": event.peer}


def _hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _write_durably(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename, fsync of the directory: after a crash the event is whole or
    absent, never half-written."""
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(temp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load(path: Path) -> _Pending:
    record = json.loads(path.read_bytes())
    return _Pending(path, record["id"], record["type"], record["url"],
                    record["body"].encode("utf-8"), float(record["created"]))  # fmt: skip
