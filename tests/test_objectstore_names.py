"""--store, --node and --s3-endpoint: what is accepted, and one readable line for what is not."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from livestream.bucket.objectstore import Location, default_node, is_node_name, parse_location
from livestream.daemon.options import Options
from tests.support.options import parse


class LocationTests(SynchronousTestCase):
    def test_bucket_and_prefix(self) -> None:
        location = parse_location("s3://rec-library/site-a//live/")
        self.assertEqual(location, Location("rec-library", "site-a/live"))
        self.assertEqual(location.key("video", "cam_1.mp4"), "site-a/live/video/cam_1.mp4")
        self.assertEqual(str(location), "s3://rec-library/site-a/live")

    def test_bucket_alone(self) -> None:
        location = parse_location("s3://rec-library", "http://127.0.0.1:9000")
        self.assertEqual(location.key("audio", "a_1.wav"), "audio/a_1.wav")
        self.assertEqual(location.endpoint, "http://127.0.0.1:9000")

    def test_refused(self) -> None:
        refused = ["rec-library", "http://rec-library/x", "s3://Rec", "s3://ab",
                   "s3://rec-library/a/../b", "s3://rec-library/a b", "s3://a..b/x"]  # fmt: skip
        for value in refused:
            with self.assertRaises(ValueError, msg=value):
                parse_location(value)
        with self.assertRaises(ValueError):
            parse_location("s3://rec-library", "127.0.0.1:9000")


class NodeTests(SynchronousTestCase):
    def test_names(self) -> None:
        for good in ("a", "node-1", "A" * 32):
            self.assertTrue(is_node_name(good), good)
        for bad in ("", "-a", "a.b", "a_b", "a" * 33, "n\u00f6de"):
            self.assertFalse(is_node_name(bad), bad)

    def test_default_is_a_node_name(self) -> None:
        self.assertTrue(is_node_name(default_node()))


class StoreOptionTests(SynchronousTestCase):
    def test_default_is_the_media_tree(self) -> None:
        config = parse().config()
        self.assertIsNone(config.store)
        self.assertEqual(config.node, default_node())
        self.assertEqual((config.upload_retry_max, config.presign), (60.0, 0))

    def test_bucket(self) -> None:
        config = parse(
            "--store", "s3://rec-library/site-a", "--s3-endpoint", "http://127.0.0.1:9000",
            "--node", "edge-2", "--upload-retry-max", "5", "--presign", "120",
            "--retain-total", "1TB",
        ).config()  # fmt: skip
        self.assertEqual(config.store, Location("rec-library", "site-a", "http://127.0.0.1:9000"))
        self.assertEqual((config.node, config.upload_retry_max), ("edge-2", 5.0))
        self.assertEqual((config.presign, config.retention.total_bytes), (120, 10**12))

    def test_refusals_are_one_line(self) -> None:
        for argv, words in [
            (["--store", "/srv/recordings"], "--store"),
            (["--store", "s3://Bad_Bucket"], "bucket name"),
            (["--node", "edge.example.com"], "--node"),
            (["--s3-endpoint", "http://127.0.0.1:9000"], "needs --store"),
            (["--upload-retry-max", "0"], "--upload-retry-max"),
            (["--presign", "60"], "needs --store"),
            (["--store", "s3://rec-library", "--presign", "3601"], "--presign"),
            (["--store", "s3://rec-library", "--presign", "-1"], "--presign"),
            (["--store", "s3://rec-library", "--retain-free", "1GiB"], "--retain-free"),
        ]:
            with self.assertRaises(SystemExit, msg=argv) as caught:
                parse(*argv)
            message = str(caught.exception)
            self.assertIn(words, message)
            self.assertNotIn("\n", message)

    def test_in_help(self) -> None:
        text = str(Options())
        for option in ("--store=", "--s3-endpoint=", "--node=", "--upload-retry-max=",
                       "--presign="):  # fmt: skip
            self.assertIn(option, text)
