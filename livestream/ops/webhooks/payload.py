"""What a webhook says: a session event turned into the JSON body receivers get.

:func:`draft_of` runs in the reactor and only picks the fields and the files; :func:`body_of`
runs in a thread, because it reads every file it names (size, SHA-256, a WAV's samples from
its size).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from livestream.library.digest import sha256_of
from livestream.library.tree import MediaTree
from livestream.recording.audio import HEADER_SIZE
from livestream.sessions.events import Event, Recovered, SessionEnded, SessionStarted
from livestream.wire.kinds import AUDIO, BLOCK_BYTES, SAMPLE_RATE, VIDEO

_log = Logger()

STARTED = "recording.started"
COMPLETED = "recording.completed"
FAILED = "recording.failed"
RECOVERED = "recording.recovered"


@dataclass
class FileRef:
    kind: str
    path: Path
    frames: int | None = None
    samples: int | None = None


@dataclass
class Draft:
    """An event whose recordings are still to be hashed (in a thread)."""

    type: str
    fields: dict[str, Any]
    files: list[FileRef] = field(default_factory=list)


def draft_of(event: Event, tree: MediaTree) -> Draft | None:
    """The webhook event for a session event, or None for one receivers are not told of."""
    match event:
        case SessionStarted():
            return Draft(STARTED, _session_fields(event))
        case SessionEnded(outcome=outcome):
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
            found = Draft(kind, fields)
            if outcome.video:
                found.files.append(FileRef(VIDEO, tree.dir(VIDEO) / outcome.video,
                                           frames=outcome.frames))  # fmt: skip
            if outcome.audio:
                found.files.append(FileRef(AUDIO, tree.dir(AUDIO) / outcome.audio,
                                           samples=outcome.samples))  # fmt: skip
            return found
        case Recovered(files=files):
            found = Draft(RECOVERED, {"recording": event.name})
            for kind, published in files.items():
                if published:
                    found.files.append(FileRef(kind, tree.dir(kind) / published))
            return found
    return None


def body_of(draft: Draft, event_id: str, created: float, fps: int) -> bytes:
    """In a thread: the JSON body of ``draft``, its files hashed and described."""
    document = {
        "id": event_id,
        "type": draft.type,
        "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
        **draft.fields,
        "files": [_describe(ref, fps) for ref in draft.files],
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def _describe(ref: FileRef, fps: int) -> dict[str, Any]:
    facts: dict[str, Any] = {"kind": ref.kind, "name": ref.path.name,
                             "url": f"/recordings/{ref.kind}/{ref.path.name}"}  # fmt: skip
    try:
        size, digest = sha256_of(ref.path)
    except OSError as e:
        _log.warn("webhook: cannot read {path}: {error}", path=ref.path, error=e)
        size, digest = None, None
    facts["size"] = size
    facts["sha256"] = digest
    if ref.kind == VIDEO:
        facts["frames"] = ref.frames
        facts["duration"] = None if ref.frames is None else round(ref.frames / fps, 3)
    else:
        samples = ref.samples
        if samples is None and size is not None:
            samples = max(0, size - HEADER_SIZE) // BLOCK_BYTES
        facts["samples"] = samples
        facts["duration"] = None if samples is None else round(samples / SAMPLE_RATE, 3)
    return facts


def _session_fields(event: SessionStarted | SessionEnded) -> dict[str, Any]:
    return {"recording": event.name, "client_id": event.client_id, "peer": event.peer}
