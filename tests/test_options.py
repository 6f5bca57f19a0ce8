"""``twistd livestream`` options: defaults, repeatable --listen, and refusals with a fix."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from livestream.daemon.options import DEFAULT_LISTEN, Options
from livestream.ops.retention import RetentionPolicy
from livestream.ops.webhooks.settings import WebhookSettings
from livestream.recording import ffmpeg
from livestream.sessions.limits import Limits
from tests.support.options import parse


class DefaultsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """With no options the daemon records like the seed: port 8080, ./media, 15 fps."""
        config = parse().config()
        self.assertEqual(config.listen, (DEFAULT_LISTEN,))
        self.assertEqual(DEFAULT_LISTEN, "tcp:8080")
        self.assertEqual(config.media, Path(os.getcwd(), "media"))
        self.assertEqual((config.fps, config.preset), (15, "ultrafast"))
        self.assertEqual(config.limits, Limits(min_free_bytes=512 << 20))

    def test_ffmpeg_resolved(self) -> None:
        """The config carries the ffmpeg found at start, as an executable path."""
        config = parse().config()
        self.assertEqual(config.ffmpeg, ffmpeg.find(None))
        self.assertTrue(os.access(config.ffmpeg, os.X_OK))

    def test_media_made_absolute(self) -> None:
        """A relative --media is fixed at start, before anything changes directory."""
        config = parse("--media", "some/where").config()
        self.assertTrue(config.media.is_absolute())
        self.assertEqual(config.media, Path(os.getcwd(), "some", "where"))

    def test_listen_repeatable_in_order(self) -> None:
        """Several endpoints may be given; their order is kept (and the default then unused)."""
        config = parse(
            "--listen",
            "tcp:9000",
            "--listen",
            "unix:/tmp/ls.sock",
            "--listen",
            "tcp:9001:interface=127.0.0.1",
        ).config()
        self.assertEqual(
            config.listen, ("tcp:9000", "unix:/tmp/ls.sock", "tcp:9001:interface=127.0.0.1")
        )

    def test_listen_not_shared_between_instances(self) -> None:
        """--listen of one Options must not leak into another (a shared mutable default)."""
        parse("--listen", "tcp:9000")
        self.assertEqual(parse().config().listen, (DEFAULT_LISTEN,))

    def test_values(self) -> None:
        """Explicit values reach the config with their types."""
        config = parse(
            "--fps", "30", "--preset", "ultrafast", "--max-message-size", "1024", "-m", "rec"
        ).config()
        self.assertEqual(
            (config.fps, config.preset, config.limits.max_message_size), (30, "ultrafast", 1024)
        )
        self.assertEqual(config.media.name, "rec")

    def test_fps_bounds_inclusive(self) -> None:
        """1 and 120 fps are both allowed."""
        self.assertEqual(parse("--fps", "1").config().fps, 1)
        self.assertEqual(parse("--fps", "120").config().fps, 120)


class RefusalTests(SynchronousTestCase):
    def assertUsageError(self, *argv: str) -> str:
        """A refusal is one line for twistd to print: SystemExit with the reason."""
        return str(self.assertRaises(SystemExit, parse, *argv))

    def test_bad_fps(self) -> None:
        """A rate of 0, a silly rate, or not a number is refused before anything starts."""
        for value in ("0", "121", "-5", "abc", "15.5"):
            self.assertUsageError("--fps", value)

    def test_bad_preset(self) -> None:
        """An unknown preset would only fail at the first recording; it fails at start and the
        message lists the valid ones."""
        message = self.assertUsageError("--preset", "warpspeed")
        self.assertIn("veryfast", message)
        self.assertUsageError("--preset", "VERYFAST")

    def test_bad_max_message_size(self) -> None:
        """A limit too small for any frame would refuse every video chunk."""
        self.assertUsageError("--max-message-size", "10")
        self.assertUsageError("--max-message-size", "big")

    def test_missing_ffmpeg_names_path(self) -> None:
        """A wrong --ffmpeg is refused at start and the message names the path and the option."""
        message = self.assertUsageError("--ffmpeg", "/nonexistent/ffmpeg")
        self.assertIn("/nonexistent/ffmpeg", message)
        self.assertIn("--ffmpeg", message)

    def test_missing_ffmpeg_says_how_to_fix(self) -> None:
        """FFmpegUnusable promises a message that says how to fix it: for a wrong --ffmpeg, that
        means pointing at the alternatives (omit the option to use the bundled ffmpeg, or
        install one with libx264), not only stating that the path does not exist."""
        message = self.assertUsageError("--ffmpeg", "/nonexistent/ffmpeg").lower()
        self.assertTrue(any(hint in message for hint in ("leave --ffmpeg out", "install")), message)

    def test_unknown_option(self) -> None:
        """Typos in option names are errors, not ignored."""
        self.assertUsageError("--fsp", "15")


class OperationsOptionsTests(SynchronousTestCase):
    """Webhooks and retention: off by default, sizes in any unit, a bad value stops the start."""

    def refused(self, *argv: str) -> str:
        return str(self.assertRaises(SystemExit, parse, *argv).code)

    def test_off_by_default(self) -> None:
        config = parse().config()
        self.assertEqual(config.webhooks, WebhookSettings())
        self.assertFalse(config.retention.on)

    def test_retention_sizes_and_days(self) -> None:
        config = parse("--retain-days", "30", "--retain-total", "50GiB", "--retain-free", "500MB")
        self.assertEqual(
            config.config().retention,
            RetentionPolicy(days=30, total_bytes=50 << 30, free_bytes=500 * 10**6),
        )
        self.assertIn("not a size", self.refused("--retain-total", "lots"))
        self.assertIn("--retain-days", self.refused("--retain-days", "-1"))

    def test_webhooks_need_a_secret_file(self) -> None:
        secret = Path(self.mktemp())
        secret.write_bytes(b"whsec_" + base64.b64encode(b"s" * 32) + b"\n")
        config = parse("--webhook", "https://a.example/h", "--webhook", "http://b:81/",
                       "--webhook-secret-file", str(secret)).config()  # fmt: skip
        self.assertEqual(config.webhooks.urls, ("https://a.example/h", "http://b:81/"))
        self.assertEqual(config.webhooks.secret, b"s" * 32)
        self.assertNotIn("sss", repr(config))
        self.assertIn("--webhook-secret-file", self.refused("--webhook", "http://a/"))
        self.assertIn("not an http", self.refused("--webhook", "ftp://a/"))

    def test_the_webhook_secret_is_a_standard_webhooks_one(self) -> None:
        """``whsec_`` and the key in base64 (padding optional), as a receiver's library reads
        it; a key of raw text, as the file once held, or a short key stops the start."""
        secret = Path(self.mktemp())

        def key(content: bytes) -> bytes | str:
            secret.write_bytes(content)
            argv = ("--webhook", "http://a/", "--webhook-secret-file", str(secret))
            try:
                return parse(*argv).config().webhooks.secret
            except SystemExit as e:
                return str(e.code)

        raw = bytes(range(33))
        self.assertEqual(key(b"whsec_" + base64.b64encode(raw)), raw)
        self.assertEqual(key(b"whsec_" + base64.b64encode(raw).rstrip(b"=")), raw)
        self.assertIn("does not start with whsec_", key(base64.b64encode(raw)))
        self.assertIn("does not start with whsec_", key(b"s" * 32))
        self.assertIn("no base64", key(b"whsec_not base64, this"))
        self.assertIn("at least 32", key(b"whsec_" + base64.b64encode(b"s" * 31)))

    def test_in_help(self) -> None:
        text = str(Options())
        for name in ("--webhook=", "--webhook-secret-file=", "--retain-days=", "--retain-total=",
                     "--retain-free="):  # fmt: skip
            self.assertIn(name, text)
