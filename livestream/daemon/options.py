"""``twistd livestream`` options, checked once and frozen into a :class:`Config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from twisted.python import usage

from livestream.auth.access import OPEN, Access, AccessOptions
from livestream.auth.tokens import KeyFileError
from livestream.bucket.objectstore import Location, default_node, is_node_name, parse_location
from livestream.ops.retention import RetentionPolicy
from livestream.ops.webhooks.settings import WebhookSettings, read_signing_key
from livestream.recording import ffmpeg
from livestream.recording.encoder import STALL_TIMEOUT
from livestream.recording.timing import FRAMES, TIMING_MODES
from livestream.sessions.limits import Limits, MiB, parse_size

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
    webhooks: WebhookSettings = WebhookSettings()
    retention: RetentionPolicy = RetentionPolicy()
    # None: recordings stay in the media tree; else the bucket every node's recordings go to.
    store: Location | None = None
    node: str = field(default_factory=default_node)
    upload_retry_max: float = 60.0
    # With a bucket: seconds a presigned download URL lasts (0: downloads stream through here).
    presign: int = 0
    timing: str = FRAMES
    mux_audio: bool = False
    resume_grace: float = 30.0
    encoder_timeout: float = STALL_TIMEOUT


def _whole_number(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None


def _size_or_off(value: str) -> int:
    return 0 if value in ("0", "off") else parse_size(value)


class Options(AccessOptions):
    synopsis = "[options]"
    longdesc = (
        "Record live audio/video sent over WebSocket (ws://host:8080/) into MP4 and WAV files, "
        "listed at http://host:8080/recordings."
    )
    optParameters = [
        ["media", "m", "media",
         "Directory of the recordings (audio/, video/, posters/, temp/ are made)."],
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
        ["encoder-timeout", None, STALL_TIMEOUT,
         "Seconds an encoder may leave its input full without reading any of it before it is "
         "taken for stuck, killed and replaced (the recording goes on in a new piece).", float],
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
        # The library: the media tree, or a bucket shared by every node.
        ["store", None, "local",
         "Where finished recordings go: 'local' (the media tree) or s3://bucket/prefix (uploaded, "
         "then removed from disk); credentials and region from the AWS environment or config."],
        ["s3-endpoint", None, None,
         "URL of an S3-compatible store (MinIO, Ceph RGW); default: AWS, or AWS_ENDPOINT_URL."],
        ["node", None, None,
         "This daemon's name among those sharing a bucket (A-Z a-z 0-9 -, at most 32; default: "
         "the host name)."],
        ["upload-retry-max", None, 60.0,
         "Longest wait (s) between retries of a failed upload; waits double from 1 s.", float],
        ["presign", None, 0,
         "With a bucket: answer a download of a stored recording with a 307 redirect to a "
         "presigned URL of the store, valid this many seconds (1-3600), instead of streaming it "
         "through the daemon (0).", _whole_number],
        ["min-free-mb", None, Limits.min_free_bytes // MiB,
         "Free space (MiB) the media tree must keep: below it new sessions are refused, below "
         "half of it live ones are finished (0: no check).", _whole_number],
        # Webhooks: a signed POST per recording event (see README, Webhooks).
        ["webhook-secret-file", None, None,
         "File holding the secret that signs webhook requests, as Standard Webhooks write it: "
         "whsec_ and the HMAC-SHA256 key (at least 32 bytes) in base64; needed with --webhook."],
        # Retention: which finished recordings are deleted, oldest first (all off by default).
        ["retain-days", None, 0,
         "Delete finished recordings older than this many days (0: keep any age).", float],
        ["retain-total", None, 0,
         "Delete the oldest finished recordings while all of them take more than this, e.g. "
         "50GiB, 500GB (0: no bound).", _size_or_off],
        ["retain-free", None, 0,
         "Delete the oldest finished recordings while the disk has less than this free, e.g. "
         "10GiB (0: no bound).", _size_or_off],
    ]  # fmt: skip
    optFlags = [
        ["mux-audio", None,
         "Also put each session's audio (AAC) into its MP4; the WAV is written as ever. In "
         "sync with the picture with --timing capture."],
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["webhook"] = []

    def opt_webhook(self, url: str) -> None:
        """URL to POST recording events to (started, completed, failed, recovered), repeatable; signed with --webhook-secret-file, retried from a queue kept in the media tree"""  # noqa: E501
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise usage.UsageError(f"--webhook {url!r} is not an http:// or https:// URL")
        self["webhook"].append(url)

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
        if not 0 < self["encoder-timeout"] < self["idle-timeout"]:
            # The socket of a session whose encoder is stuck is not read: past the idle
            # timeout the session would be ended before the encoder is replaced.
            raise usage.UsageError("--encoder-timeout must be more than 0 and under --idle-timeout")
        if self["resume-grace"] < 0:
            raise usage.UsageError("--resume-grace cannot be negative")
        if self["ping-interval"] < 0 or self["min-free-mb"] < 0:
            raise usage.UsageError("--ping-interval and --min-free-mb cannot be negative")
        self._check_store()
        try:
            self["ffmpeg"] = ffmpeg.find(self["ffmpeg"])
        except ffmpeg.FFmpegUnusable as e:
            raise usage.UsageError(str(e)) from None
        self["access"] = self.access()
        if self["retain-days"] < 0:
            raise usage.UsageError("--retain-days cannot be negative")
        self["webhooks"] = self.webhooks()

    def webhooks(self) -> WebhookSettings:
        """Read the webhook secret now, so a missing or weak one stops the daemon at start."""
        if not self["webhook"]:
            return WebhookSettings()
        if not self["webhook-secret-file"]:
            raise usage.UsageError("--webhook needs --webhook-secret-file to sign its requests")
        try:
            secret = read_signing_key(self["webhook-secret-file"])
        except KeyFileError as e:
            raise usage.UsageError(str(e)) from None
        return WebhookSettings(tuple(self["webhook"]), secret)

    def _check_store(self) -> None:
        if self["node"] is None:
            self["node"] = default_node()
        elif not is_node_name(self["node"]):
            raise usage.UsageError(
                f"--node {self['node']!r}: use 1-32 of A-Z a-z 0-9 -, starting with a letter "
                "or digit"
            )
        if self["upload-retry-max"] < 1:
            raise usage.UsageError("--upload-retry-max must be at least 1 second")
        if not 0 <= self["presign"] <= 3600:
            raise usage.UsageError("--presign must be between 0 (off) and 3600 seconds")
        if self["store"] == "local":
            for name in ("s3-endpoint", "presign"):
                if self[name]:
                    raise usage.UsageError(f"--{name} needs --store s3://bucket/prefix")
            self["location"] = None
            return
        if self["retain-free"]:
            raise usage.UsageError(
                "--retain-free cannot be used with a bucket: deleting objects frees no local "
                "disk, and the local files are recordings not uploaded yet (--min-free-mb "
                "protects the disk)"
            )
        try:
            self["location"] = parse_location(self["store"], self["s3-endpoint"])
        except ValueError as e:
            raise usage.UsageError(f"--store: {e}") from None

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
            webhooks=self["webhooks"],
            retention=RetentionPolicy(
                days=self["retain-days"],
                total_bytes=self["retain-total"],
                free_bytes=self["retain-free"],
            ),
            store=self["location"],
            node=self["node"],
            upload_retry_max=self["upload-retry-max"],
            presign=self["presign"],
            timing=self["timing"],
            mux_audio=bool(self["mux-audio"]),
            resume_grace=self["resume-grace"],
            encoder_timeout=self["encoder-timeout"],
        )
