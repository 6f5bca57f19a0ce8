"""The live sessions of the daemon, and how they all end when it stops."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from livestream.auth import Grant
from livestream.messages import ProtocolError
from livestream.recording.video import EncoderSettings
from livestream.session import SHUTDOWN, ErrorSink, Session
from livestream.store import MediaStore

_log = Logger()

# After its recordings are finished, how long a client may take to complete the close handshake
# before the daemon stops anyway.
CLOSE_WAIT = 5.0


class SessionRegistry(Service):
    """Opens sessions while running; on stop, finalizes every one and waits for its client."""

    def __init__(self, reactor, settings: EncoderSettings, store: MediaStore) -> None:
        self._reactor = reactor
        self._settings = settings
        self._store = store
        self._live: set[Session] = set()

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
    ) -> Session:
        if not self.running:
            raise ProtocolError(
                "shutting_down", "the server is restarting; connect again", close_code=1012
            )
        name = self._store.reserve(client_id, int(self._reactor.seconds() * 1000))
        session = Session(
            self._reactor, self._settings, self._store, client_id, name, peer, producer,
            report_error, grant=grant,
        )  # fmt: skip
        self._live.add(session)
        ended = DeferredList([session.finished(), session.gone()], consumeErrors=True)
        ended.addBoth(lambda _: self._live.discard(session))
        _log.info(
            "session {id!r} from {peer} records as {name}{by}", id=client_id, peer=peer, name=name,
            by=f" (token of {grant.subject!r})" if grant is not None and grant.subject else "",
        )  # fmt: skip
        return session

    def stopService(self) -> Deferred[None]:
        super().stopService()
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
