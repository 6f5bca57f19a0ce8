"""A real S3-protocol server for the tests: moto's standalone server, on 127.0.0.1.

moto keeps its buckets in memory, so a restarted server is empty; ``start`` makes the bucket
again. ``LIVESTREAM_TEST_S3_ENDPOINT`` (with the ``AWS_*`` variables of that store) runs the same
tests against another store, such as MinIO; the tests that stop the server are skipped there.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import boto3
from botocore.config import Config as BotoConfig

from tests.support.ports import free_port
from tests.support.waiting import sleep

ENDPOINT_VARIABLE = "LIVESTREAM_TEST_S3_ENDPOINT"
# The key prefix of the tests' Locations in the bucket.
PREFIX = "lib"
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class S3Server:
    """moto's server in a child process (or the store named by LIVESTREAM_TEST_S3_ENDPOINT),
    with one bucket of a fresh name, versioned so a test can count what was put."""

    def __init__(self, testcase) -> None:
        self.external = os.environ.get(ENDPOINT_VARIABLE)
        self.port = free_port()
        self.endpoint = self.external or f"http://127.0.0.1:{self.port}"
        self.bucket = f"rec-{uuid.uuid4().hex[:12]}"
        self.process: subprocess.Popen | None = None
        if not self.external:
            testcase.patch(os, "environ", {**os.environ, **_CREDENTIALS})
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint,
            config=BotoConfig(retries={"mode": "standard", "max_attempts": 1}),
        )  # fmt: skip
        testcase.addCleanup(self.stop)

    @property
    def stoppable(self) -> bool:
        return not self.external

    async def start(self) -> None:
        """Start the server (unless external), wait for it, and make the bucket."""
        if not self.external:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    break
                except OSError:
                    await sleep(0.05)
            else:
                raise AssertionError("moto's server did not start")
        self.client.create_bucket(Bucket=self.bucket)
        self.client.put_bucket_versioning(
            Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"}
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def keys(self, prefix: str = "") -> list[str]:
        answer = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in answer.get("Contents", []))

    def versions(self, key: str) -> int:
        answer = self.client.list_object_versions(Bucket=self.bucket, Prefix=key)
        return sum(1 for v in answer.get("Versions", []) if v["Key"] == key)

    def get(self, key: str) -> tuple[bytes, dict[str, str]]:
        answer = self.client.get_object(Bucket=self.bucket, Key=key)
        return answer["Body"].read(), answer["Metadata"]
