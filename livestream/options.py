"""``twistd livestream`` options, checked once and frozen into a :class:`Config`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twisted.python import usage

from livestream.access import OPEN, Access, AccessOptions
from livestream.limits import Limits, MiB
from livestream.recording import ffmpeg
from livestream.timing import FRAMES, TIMING_MODES

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
)  # fmt: skip
DEFAULT_LISTEN = "tcp:8080"


@dataclass(frozen=True)
class Config:
    listen: tuple[str, ...]
    media: Path
    fps: int
    ffmpeg: str
    preset: str
    limits: Limits = Limits()
    access: Access = OPEN
    timing: str = FRAMES
    mux_audio: bool = False
    resume_grace: float = 30.0


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
        # Measured on 2 cores (bench/): ultrafast records 16 real-time 640x480 15 fps sessions
        # where veryfast records 8, for about 28% more bits at an SSIM of 0.974 against 0.980.
        ["preset", None, "ultrafast",
         "x264 preset: " + ", ".join(X264_PRESETS) + ". Slower presets make smaller files "
         "but record fewer sessions at once (see bench/README.md)."],
        ["timing", None, FRAMES,
         "How frames become video: 'frames' (one output frame per received frame) or 'capture' "
         "(constant --fps, frames repeated or dropped by capture time; the video lasts as long "
         "as what was captured, with the audio's sample count as the clock)."],
        ["resume-grace", None, 30.0,
         "Seconds a session that asked for resume (CONNECT with resume: true) waits after its "
         "connection drops for the client to come back with its resume token (0: no resume).",
         float],
        # Limits: what one client may take.
        ["max-message-size", None, Limits.max_message_size,
         "Largest WebSocket message (and frame) accepted, in bytes; larger ones are refused as "
         "their header arrives, with close code 1009.", _whole_number],
        ["max-sessions", None, Limits.max_sessions,
         "Most recording sessions at once; CONNECT beyond it is refused (close 1013).",
         _whole_number],
        ["max-session-seconds", None, Limits.max_session_seconds,
         "Longest session; then it is finished and closed (1008).", float],
        ["max-session-bytes", None, Limits.max_session_bytes,
         "Most media bytes one session may send; then it is finished and closed (1008).",
         _whole_number],
        ["idle-timeout", None, Limits.idle_timeout,
         "Seconds without a message before a connection is closed (1008), finishing its "
         "recording.", float],
        ["handshake-timeout", None, Limits.handshake_timeout,
         "Seconds a new connection has to send its HTTP request and finish the WebSocket "
         "handshake.", float],
        ["ping-interval", None, Limits.ping_interval,
         "Seconds between WebSocket pings to idle clients (0: none).", float],
        ["ping-timeout", None, Limits.ping_timeout,
         "Seconds to wait for a pong before dropping a dead peer; longer than any encoder stall.",
         float],
        ["min-free-mb", None, Limits.min_free_bytes // MiB,
         "Free space (MiB) the media tree must keep: below it new sessions are refused, below "
         "half of it live ones are finished (0: no check).", _whole_number],
    ]  # fmt: skip
    optFlags = [
        ["mux-audio", None,
         "Also put each session's audio (AAC) into its MP4; the WAV is written as ever. In "
         "sync with the picture with --timing capture."],
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
        if self["timing"] not in TIMING_MODES:
            raise usage.UsageError(
                f"--timing {self['timing']!r} is not a timing mode; one of "
                + ", ".join(TIMING_MODES)
            )
        if self["preset"] not in X264_PRESETS:
            raise usage.UsageError(
                f"--preset {self['preset']!r} is not an x264 preset; one of "
                + ", ".join(X264_PRESETS)
            )
        if self["max-message-size"] < 1024:
            raise usage.UsageError("--max-message-size must be at least 1024 bytes")
        for name in ("max-sessions", "max-session-seconds", "max-session-bytes", "idle-timeout",
                     "handshake-timeout", "ping-timeout"):  # fmt: skip
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be more than 0")
        if self["resume-grace"] < 0:
            raise usage.UsageError("--resume-grace cannot be negative")
        if self["ping-interval"] < 0 or self["min-free-mb"] < 0:
            raise usage.UsageError("--ping-interval and --min-free-mb cannot be negative")
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
            limits=Limits(
                max_message_size=self["max-message-size"],
                max_sessions=self["max-sessions"],
                max_session_seconds=self["max-session-seconds"],
                max_session_bytes=self["max-session-bytes"],
                idle_timeout=self["idle-timeout"],
                handshake_timeout=self["handshake-timeout"],
                ping_interval=self["ping-interval"],
                ping_timeout=self["ping-timeout"],
                min_free_bytes=self["min-free-mb"] * MiB,
            ),
            access=self["access"],
            timing=self["timing"],
            mux_audio=bool(self["mux-audio"]),
            resume_grace=self["resume-grace"],
        )
