"""The twistd dropin: ``twistd -n livestream``. Lazy, so listing plugins stays cheap."""

from twisted.application.service import ServiceMaker

livestream = ServiceMaker(
    "livestream",
    "livestream.daemon.service",
    "Record live WebSocket audio/video streams into MP4 and WAV files",
    "livestream",
)
