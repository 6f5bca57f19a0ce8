"""``twistd livestream`` options, checked once and frozen into a :class:`Config`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twisted.python import usage

from livestream.access import OPEN, Access, AccessOptions
from livestream.recording import ffmpeg

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
)  # fmt: skip
DEFAULT_LISTEN = "tcp:8080"
MiB = 1 << 20


@dataclass(frozen=True)
class Config:
    listen: tuple[str, ...]
    media: Path
    fps: int
    ffmpeg: str
    preset: str
    max_message_size: int
    access: Access = OPEN


def _whole_number(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None


class Options(AccessOptions):
    synopsis = "[options]"
    longdesc = (
        "Record live audio/video sent over WebSocket (ws://host:8080/) into MP4 and WAV files, "
        "listed at http://host:8080/recordings."
    )
    optParameters = [
        ["media", "m", "media", "Directory of the recordings (audio/, video/, temp/ are made)."],
        ["fps", None, 15, "Frame rate of recorded video: one output frame per received frame.",
         _whole_number],
        ["ffmpeg", None, None,
         "ffmpeg executable (default: ffmpeg on PATH if it has libx264, else imageio-ffmpeg's)."],
        ["preset", None, "veryfast", "x264 preset: " + ", ".join(X264_PRESETS) + "."],
        ["max-message-size", None, 16 * MiB,
         "Largest WebSocket message (and frame) accepted, in bytes.", _whole_number],
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """Twisted endpoint to listen on, repeatable (default tcp:8080); e.g. tcp:8080:interface=127.0.0.1, ssl:8443:privateKey=key.pem:certKey=cert.pem, systemd:domain=INET:index=0"""  # noqa: E501
        self["listen"].append(description)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Refuse bad options with one line: twistd would print the whole usage text first."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(f"livestream: {e} (see: twistd livestream --help)") from None

    def postOptions(self) -> None:
        if not 1 <= self["fps"] <= 120:
            raise usage.UsageError(f"--fps must be between 1 and 120, not {self['fps']}")
        if self["preset"] not in X264_PRESETS:
            raise usage.UsageError(
                f"--preset {self['preset']!r} is not an x264 preset; one of "
                + ", ".join(X264_PRESETS)
            )
        if self["max-message-size"] < 1024:
            raise usage.UsageError("--max-message-size must be at least 1024 bytes")
        try:
            self["ffmpeg"] = ffmpeg.find(self["ffmpeg"])
        except ffmpeg.FFmpegUnusable as e:
            raise usage.UsageError(str(e)) from None
        self["access"] = self.access()

    def config(self) -> Config:
        return Config(
            listen=tuple(self["listen"] or [DEFAULT_LISTEN]),
            media=Path(self["media"]).absolute(),
            fps=self["fps"],
            ffmpeg=self["ffmpeg"],
            preset=self["preset"],
            max_message_size=self["max-message-size"],
            access=self["access"],
        )
