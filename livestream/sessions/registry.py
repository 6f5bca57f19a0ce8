"""The live sessions of the daemon, and how they all end when it stops."""

from __future__ import annotations

import secrets

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from livestream.auth.tokens import Grant
from livestream.library.tree import MediaTree
from livestream.recording.video import EncoderSettings
from livestream.sessions.errors import SessionError
from livestream.sessions.events import Event, Events, SessionEnded, SessionStarted, StorageFailed
from livestream.sessions.outcome import SHUTDOWN, STORAGE
from livestream.sessions.session import SEED_MEDIA, ErrorSink, Media, Session, SessionLimits
from livestream.sessions.storage import StorageState, describe, error_name, is_full

_log = Logger()

# After its recordings are finished, how long a client may take to complete the close handshake
# before the daemon stops anyway.
CLOSE_WAIT = 5.0
# How often the media tree is checked while sessions record: a file can be made, space is free.
DISK_CHECK_INTERVAL = 2.0


class SessionRegistry(Service):
    """Opens sessions while running; on stop, finalizes every one and waits for its client."""

    def __init__(
        self,
        reactor,
        settings: EncoderSettings,
        tree: MediaTree,
        *,
        max_sessions: int,
        session_limits: SessionLimits,
        min_free_bytes: int,
        events: Events | None = None,
        resume_grace: float = 0.0,
    ) -> None:
        self._reactor = reactor
        self._resume_grace = resume_grace
        # Resume tokens of the live resumable sessions.
        self._resumable: dict[str, Session] = {}
        self._settings = settings
        self._tree = tree
        self._max_sessions = max_sessions
        self._session_limits = session_limits
        self._min_free = min_free_bytes
        self.events = events if events is not None else Events()
        self._live: set[Session] = set()
        # Whether writes to the media tree fail (not for a full disk), for /healthz.
        self.storage = StorageState(reactor)
        self.events.subscribe(self._heard)
        self._disk_watch = LoopingCall(self._check_disk)
        self._disk_watch.clock = reactor

    def startService(self) -> None:
        super().startService()
        self._disk_watch.start(DISK_CHECK_INTERVAL, now=False)

    @property
    def sessions(self) -> tuple[Session, ...]:
        """The sessions whose client is still connected or whose files are still being finished."""
        return tuple(self._live)

    def open(
        self,
        client_id: str,
        peer: str,
        producer: IPushProducer | None,
        report_error: ErrorSink,
        *,
        grant: Grant | None = None,
        resumable: bool = False,
        media: Media = SEED_MEDIA,
    ) -> Session:
        """A new session; ``resumable`` (the client asked, and --resume-grace is not 0) gives
        it a resume token."""
        if not self.running:
            raise SessionError("shutting_down", "the server is restarting; connect again")
        if len(self._live) >= self._max_sessions:
            raise SessionError(
                "too_many_sessions",
                "the server records as many sessions as it may; try again later",
            )
        self._admit()
        name = self._tree.reserve(client_id, int(self._reactor.seconds() * 1000))
        session = Session(
            self._reactor, self._settings, self._tree, client_id, name, peer, producer,
            report_error, self._session_limits.within(grant), grant=grant, events=self.events,
            media=media,
        )  # fmt: skip
        self._live.add(session)
        if resumable and self._resume_grace > 0:
            token = secrets.token_urlsafe(32)
            self._resumable[token] = session
            session.allow_resume(token, self._resume_grace)
            session.finished().addBoth(lambda _: self._resumable.pop(token, None))
        self.events.emit(SessionStarted(name, client_id, peer))
        # Live until finalized and its connection gone, whichever comes last.
        session.finished().addBoth(lambda _: session.gone()).addBoth(
            lambda _: self._live.discard(session)
        )
        subject = grant.subject if grant is not None else None
        _log.info(
            "session {id!r} from {peer} records as {name}{by}", session_event="started",
            id=client_id, peer=peer, name=name, subject=subject,
            by=f" (token of {subject!r})" if subject else "",
        )  # fmt: skip
        return session

    def _admit(self) -> None:
        """Refuse a session the media tree cannot take now: one where no file can be made (the
        tree gone, read-only, failing: ``storage_failed``, an answer rather than a traceback),
        or with less free space than the reserve (``insufficient_storage``)."""
        try:
            self._tree.probe()
            low = bool(self._min_free) and self._tree.free_bytes() < self._min_free
        except OSError as e:
            if not is_full(e):
                self.events.emit(StorageFailed(None, error_name(e)))
                _log.warn("refusing a session: the media tree cannot be written ({error})",
                          error=describe(e))  # fmt: skip
                raise SessionError(
                    "storage_failed",
                    f"the server's storage failed ({describe(e)}); try again later",
                ) from None
            low = True
        if low:
            _log.warn("refusing a session: the disk is full or has less than the {mib} MiB "
                      "reserve free", mib=self._min_free >> 20)  # fmt: skip
            raise SessionError(
                "insufficient_storage", "the server is low on storage; try again later"
            )

    def _heard(self, event: Event) -> None:
        """Keep :attr:`storage`: a failed write marks the fault; a session that published its
        files with nothing failing (storage did not end it, no encoder stopped: an encoder's
        writes may have failed too) clears it."""
        if isinstance(event, StorageFailed):
            self.storage.failed(event.error)
        elif isinstance(event, SessionEnded):
            outcome = event.outcome
            if (
                (outcome.video or outcome.audio)
                and not (outcome.failed or outcome.encoder_failed)
                and outcome.reason != STORAGE
            ):
                self.storage.recovered()

    def resume(self, token: str, client_id: str) -> Session:
        """The live session of ``token`` (and ``client_id``), for a client coming back."""
        session = self._resumable.get(token)
        if session is None or session.client_id != client_id or session.ending:
            raise SessionError(
                "resume_failed",
                "no recording to resume with this token and id (finished, or its grace period "
                "is over); CONNECT without resumeToken to start a new one",
            )
        return session

    def _check_disk(self) -> None:
        """While sessions record, the tree must take a new file: one removed under them (or a
        mount gone) lets their open files be written on, into files no one will find, and one
        turned read-only cannot take their published files; they end now. Below half the
        reserve, finish them before the disk fills under them: the faststart copy at the end
        needs room too."""
        live = [s for s in self._live if not s.ending]
        if not live:
            return
        try:
            self._tree.probe()
            free = self._tree.free_bytes() if self._min_free else None
        except OSError as e:
            _log.error("the media tree cannot be written ({error}): finishing {count} sessions",
                       error=describe(e), count=len(live))  # fmt: skip
            for session in live:
                session.storage_error(e)
            return
        if free is not None and free < self._min_free // 2:
            _log.error(
                "{free} MiB free, under half the {mib} MiB reserve: finishing {count} sessions",
                free=free >> 20, mib=self._min_free >> 20, count=len(live),
            )  # fmt: skip
            for session in live:
                session.storage_full()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._disk_watch.running:
            self._disk_watch.stop()
        return ensureDeferred(self._finish_all())

    async def _finish_all(self) -> None:
        sessions = list(self._live)
        if not sessions:
            return
        _log.info("stopping: finishing {count} live sessions", count=len(sessions))
        await DeferredList([s.finish(SHUTDOWN) for s in sessions], consumeErrors=True)
        gone = DeferredList([s.gone() for s in sessions], consumeErrors=True)
        gone.addTimeout(CLOSE_WAIT, self._reactor)
        try:
            await gone
        except Exception:
            _log.warn("some clients did not close within {seconds}s", seconds=CLOSE_WAIT)
