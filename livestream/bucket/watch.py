"""What health and metrics say about the bucket: is it reachable, and how the uploads are going.

Reachability is asked in the background every ``interval`` seconds (a HEAD of the bucket in the
object store's thread pool) and the last answer kept, so a probe of ``/healthz`` never waits on
the network; upload figures are read from the uploader when asked.
"""

from __future__ import annotations

from typing import Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from livestream.bucket.objectstore import ObjectStore

_log = Logger()

INTERVAL = 10.0


class UploadFigures(Protocol):
    failures: int
    uploaded: int

    @property
    def backlog(self) -> int: ...


class StoreWatch(Service):
    def __init__(
        self,
        reactor: IReactorTime,
        objects: ObjectStore,
        uploads: UploadFigures,
        interval: float = INTERVAL,
    ) -> None:
        self._objects = objects
        self._uploads = uploads
        self._interval = interval
        # None until the first answer.
        self.reachable: bool | None = None
        self._loop = LoopingCall(self.check)
        self._loop.clock = reactor

    @property
    def backlog(self) -> int:
        return self._uploads.backlog

    @property
    def failures(self) -> int:
        return self._uploads.failures

    @property
    def uploaded(self) -> int:
        return self._uploads.uploaded

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._interval, now=True).addErrback(
            lambda f: _log.failure("the object store's health check stopped", f)
        )

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def check(self) -> Deferred[bool]:
        """Ask the store now; the answer is kept for the probes until the next check."""
        return self._objects.reachable().addCallback(self._answered)

    def _answered(self, reachable: bool) -> bool:
        if reachable != self.reachable and self.reachable is not None:
            if reachable:
                _log.info("the object store {bucket} is reachable again",
                          bucket=str(self._objects.location))  # fmt: skip
            else:
                _log.warn("the object store {bucket} is not reachable",
                          bucket=str(self._objects.location))  # fmt: skip
        self.reachable = reachable
        return reachable
