"""What sessions and recovery publish goes into the recordings index, as it is published.

An observer of the session events: the index is told in the same call that tells everyone a
recording is finished, before the client's ``CLOSED`` reply is sent, so a client that lists the
recordings after its reply finds its own.
"""

from __future__ import annotations

from livestream.library.index import RecordingIndex
from livestream.sessions.events import Event, Observer, Recovered, SessionEnded
from livestream.wire.kinds import AUDIO, VIDEO


def indexer(index: RecordingIndex) -> Observer:
    def observe(event: Event) -> None:
        published: dict[str, str | None]
        if isinstance(event, SessionEnded):
            published = {VIDEO: event.outcome.video, AUDIO: event.outcome.audio}
        elif isinstance(event, Recovered):
            published = event.files
        else:
            return
        for kind, filename in published.items():
            if filename:
                index.recorded(kind, event.name)

    return observe
