"""The webhook queue on disk, ``media/webhooks/``: one JSON file per event and URL.

A file is written durably before its first attempt and removed once it is delivered or given
up, so what a stopped or killed daemon still owed is found at its next start. Names begin with
the event's time in milliseconds, so a sorted directory is oldest first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from livestream.library.durable import write_durably

_log = Logger()


@dataclass
class Pending:
    """One event owed to one URL; ``call`` and ``request`` are its next and current attempt."""

    path: Path
    id: str
    type: str
    url: str
    body: bytes
    created: float
    attempts: int = 0
    call: IDelayedCall | None = None
    request: Deferred[None] | None = None


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def recover(self) -> list[Pending]:
        """What an earlier run left to deliver, oldest first. A write it did not finish (a
        dot-name) is removed, its event was never sent; a file that cannot be read is logged
        and left alone."""
        self.directory.mkdir(exist_ok=True)
        found = []
        for path in sorted(self.directory.iterdir()):
            if path.name.startswith("."):
                path.unlink()
                continue
            try:
                found.append(_load(path))
            except (OSError, ValueError, KeyError) as e:
                _log.error("left alone in webhooks/: {path} ({error})", path=path, error=e)
        return found

    def write(
        self, event_id: str, type: str, body: bytes, created: float, urls: Iterable[str]
    ) -> list[Pending]:
        """Queue the event for each URL, durably; in a thread (each write is synced)."""
        entries = []
        for index, url in enumerate(urls):
            path = self.directory / f"{int(created * 1000):013d}-{event_id}-{index}.json"
            record = {"id": event_id, "type": type, "url": url, "created": created,
                      "body": body.decode("utf-8")}  # fmt: skip
            write_durably(path, json.dumps(record).encode("utf-8"))
            entries.append(Pending(path, event_id, type, url, body, created))
        return entries

    def remove(self, entry: Pending) -> None:
        entry.path.unlink(missing_ok=True)


def _load(path: Path) -> Pending:
    record = json.loads(path.read_bytes())
    return Pending(path, record["id"], record["type"], record["url"],
                   record["body"].encode("utf-8"), float(record["created"]))  # fmt: skip
