"""The daemon's whole service tree in this process, on a free loopback port."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor

from tests.support.media import ffmpeg_exe
from tests.support.ports import free_port


async def start_server(
    testcase,
    media: Path,
    *,
    fps: int = 15,
    access=None,
    listen: str = "tcp:{port}:interface=127.0.0.1",
    store=None,
    node: str = "test-node",
    upload_retry_max: float = 60.0,
    **overrides,
):
    """The daemon's whole service tree in this process, on a free loopback port; stopped (which
    finalizes live sessions) when the test ends. Returns (service, port).

    ``access`` is the who-may-connect policy (default: open), ``listen`` the endpoint with the
    port left as ``{port}``; ``webhooks`` and ``retention`` go to the Config, ``store`` is an
    objectstore.Location to upload recordings to; the other overrides go to its Limits."""
    from livestream.auth.access import OPEN
    from livestream.daemon.options import Config
    from livestream.daemon.service import build
    from livestream.sessions.limits import Limits

    port = free_port()
    config = Config(
        listen=(listen.format(port=port),),
        access=access or OPEN,
        media=media,
        fps=fps,
        ffmpeg=overrides.pop("ffmpeg", ffmpeg_exe()),
        preset=overrides.pop("preset", "ultrafast"),
        **{
            key: overrides.pop(key)
            for key in ("webhooks", "retention", "presign")
            if key in overrides
        },  # fmt: skip
        timing=overrides.pop("timing", "frames"),
        mux_audio=overrides.pop("mux_audio", False),
        resume_grace=overrides.pop("resume_grace", 30.0),
        # The suite's temp dir may sit on a fuller disk than any user's: no reserve unless asked.
        limits=Limits(**{"min_free_bytes": 0, **overrides}),
        store=store,
        node=node,
        upload_retry_max=upload_retry_max,
    )
    service = build(config, reactor)
    service.startService()
    testcase.addCleanup(lambda: service.stopService() if service.running else None)
    return service, port
