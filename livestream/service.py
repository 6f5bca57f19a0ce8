"""``makeService``: the daemon as one MultiService, built from a :class:`Config`.

Children start in order and stop in reverse: recovery scans ``temp/`` before anything listens,
and on stop the listeners close first, then every live session is finalized.
"""

from __future__ import annotations

import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString

from livestream.options import Config, Options
from livestream.protocol import RecordingFactory
from livestream.recording.video import EncoderSettings
from livestream.recovery import Recovery
from livestream.registry import SessionRegistry
from livestream.store import MediaStore
from livestream.web import make_site

__all__ = ["Options", "makeService", "build"]


def makeService(options: Options) -> MultiService:
    """twistd's entry point."""
    from twisted.internet import reactor

    return build(options.config(), reactor)


def build(config: Config, reactor) -> MultiService:
    store = MediaStore(config.media)
    try:
        store.ensure()
    except OSError as e:
        sys.exit(f"livestream: cannot use --media {config.media}: {e}")
    settings = EncoderSettings(ffmpeg=config.ffmpeg, fps=config.fps, preset=config.preset)
    registry = SessionRegistry(reactor, settings, store)
    factory = RecordingFactory(registry, config.max_message_size)
    site = make_site(store, factory)

    top = MultiService()
    Recovery(reactor, store, config.ffmpeg).setServiceParent(top)
    registry.setName("sessions")
    registry.setServiceParent(top)
    for description in config.listen:
        try:
            endpoint = serverFromString(reactor, description)
        except (ValueError, KeyError, TypeError) as e:
            sys.exit(f"livestream: bad --listen {description!r}: {e}")
        listener = StreamServerEndpointService(endpoint, site)
        listener._raiseSynchronously = True
        listener.setServiceParent(top)
    return top
