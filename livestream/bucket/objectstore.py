"""A bucket of S3-compatible object storage holding the recordings library of many daemons.

boto3 blocks, so every call runs in a small thread pool of our own (started and stopped with the
daemon) and comes back as a Deferred: the reactor never waits on the network. Credentials,
region and (unless ``--s3-endpoint`` is given) the endpoint come from boto3's usual sources
(``AWS_*`` environment variables, ``~/.aws/config``, instance roles), never from the command line.

Every upload is a conditional put (``If-None-Match: *``): the store refuses to replace an object
that exists, so two daemons can never overwrite each other's recording, and a retried upload of
an object already stored is answered by the store instead of written twice.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from livestream.library.tree import POSTER_SUFFIX, POSTER_TYPE, POSTERS
from livestream.wire import kinds
from livestream.wire.kinds import MediaKind

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

T = TypeVar("T")

# Bucket names as S3 allows them (3-63 characters, lower case, digits, dots, hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9._-]+$")
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
# What the bucket holds under <prefix>/<kind>/: recordings, and the posters of videos.
SUFFIXES = {**kinds.SUFFIXES, POSTERS: POSTER_SUFFIX}
CONTENT_TYPES: dict[str, str] = {
    **{kind: kind.content_type for kind in MediaKind},
    POSTERS: POSTER_TYPE,
}
MiB = 1 << 20
# Files above MULTIPART_THRESHOLD go up in parts of PART_SIZE, each checked by the store against
# the SHA-256 sent with it; a part that fails is retried alone.
MULTIPART_THRESHOLD = 16 * MiB
PART_SIZE = 16 * MiB
THREADS = 4


class StoreError(Exception):
    """The object store could not be used for what was asked (its own message says why)."""


class KeyTaken(StoreError):
    """A conditional put was refused: an object already has this key."""


class UploadCancelled(StoreError):
    """An upload was abandoned because the daemon is stopping."""


@dataclass(frozen=True)
class Location:
    """Where the library lives: ``s3://bucket/prefix``, and an endpoint for non-AWS stores."""

    bucket: str
    prefix: str
    endpoint: str | None = None

    def key(self, kind: str, filename: str) -> str:
        """``<prefix>/video/<name>.mp4``: the object a listed file name is stored under."""
        path = f"{kind}/{filename}"
        return f"{self.prefix}/{path}" if self.prefix else path

    def kind_prefix(self, kind: str) -> str:
        return self.key(kind, "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_location(value: str, endpoint: str | None = None) -> Location:
    """``s3://bucket[/prefix]`` -> a Location; ValueError with what is wrong otherwise."""
    scheme, sep, rest = value.partition("://")
    if not sep or scheme != "s3":
        raise ValueError(f"{value!r} is neither 'local' nor s3://bucket/prefix")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not a bucket name (3-63 of a-z 0-9 . -)")
    parts = [p for p in prefix.split("/") if p]
    if any(not _PREFIX_PART.match(p) or p in (".", "..") for p in parts):
        raise ValueError(f"prefix {prefix!r} may hold only A-Z a-z 0-9 . _ - between slashes")
    if endpoint is not None and not re.match(r"^https?://[^/\s]+/?$", endpoint):
        raise ValueError(f"--s3-endpoint {endpoint!r} is not http(s)://host[:port]")
    return Location(bucket, "/".join(parts), endpoint)


def is_node_name(name: str) -> bool:
    """A node name fits in object metadata and, on a collision, in a recording's stem."""
    return _NODE.match(name) is not None


def default_node() -> str:
    """This host's name (its first label), made into a node name."""
    label = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:32].strip("-")
    return label if is_node_name(label) else "node"


@dataclass(frozen=True)
class ObjectInfo:
    kind: str
    filename: str
    size: int
    modified: float  # Unix seconds
    metadata: dict[str, str]

    def holds(self, sha256: str, size: int) -> bool:
        """True when this object is the upload of a file with this content."""
        return self.size == size and self.metadata.get("sha256") == sha256


@dataclass(frozen=True)
class Download:
    """An open GET: ``length`` bytes of ``total`` from ``first``, read with ``ObjectStore.read``."""

    body: Any
    first: int
    length: int
    total: int
    content_type: str


class ObjectStore(Service):
    """The bucket, and the thread pool its blocking calls run in."""

    def __init__(
        self, reactor: IReactorFromThreads, location: Location, threads: int = THREADS
    ) -> None:
        self.location = location
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=threads, name="objectstore")
        # Imported here: boto3 costs the daemon ~10 MB, which a daemon without a bucket need
        # not pay.
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config as BotoConfig

        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=location.endpoint,
            config=BotoConfig(
                connect_timeout=5,
                read_timeout=30,
                retries={"mode": "standard", "max_attempts": 3},
                max_pool_connections=threads * 4,
            ),
        )
        for operation in ("PutObject", "CompleteMultipartUpload"):
            self._client.meta.events.register(
                f"before-parameter-build.s3.{operation}", _if_none_match
            )
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=PART_SIZE,
            max_concurrency=threads,
        )

    def startService(self) -> None:
        super().startService()
        self._pool.start()

    def stopService(self) -> None:
        super().stopService()
        self._pool.stop()

    def _run(self, call: Callable[..., T], *args: object, **kwargs: object) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, call, *args, **kwargs)

    def upload(
        self,
        path: Path,
        kind: str,
        filename: str,
        metadata: dict[str, str],
        cancelled: threading.Event | None = None,
    ) -> Deferred[None]:
        """Store a file under a key no object has yet; :class:`KeyTaken` if one has.

        Setting ``cancelled`` abandons the transfer at its next chunk (the store discards the
        parts of an unfinished multipart upload when it is aborted)."""
        return self._run(self._upload, path, kind, filename, metadata, cancelled)

    def _upload(
        self,
        path: Path,
        kind: str,
        filename: str,
        metadata: dict[str, str],
        cancelled: threading.Event | None,
    ) -> None:
        from boto3.exceptions import S3UploadFailedError

        def progress(_: int) -> None:
            if cancelled is not None and cancelled.is_set():
                raise UploadCancelled(f"upload of {filename} abandoned")

        try:
            self._client.upload_file(
                str(path),
                self.location.bucket,
                self.location.key(kind, filename),
                ExtraArgs={
                    "ChecksumAlgorithm": "SHA256",
                    "ContentType": CONTENT_TYPES[kind],
                    "Metadata": metadata,
                },
                Config=self._transfer,
                Callback=progress,
            )
        except S3UploadFailedError as e:
            cause = e.__context__
            if isinstance(cause, self._client.exceptions.ClientError) and _code(cause) in (
                "PreconditionFailed",
                "412",
            ):
                raise KeyTaken(self.location.key(kind, filename)) from None
            raise StoreError(str(e)) from None

    def head(self, kind: str, filename: str) -> Deferred[ObjectInfo | None]:
        """What the store holds under this name, or None."""
        return self._run(self._head, kind, filename)

    def _head(self, kind: str, filename: str) -> ObjectInfo | None:
        try:
            answer = self._client.head_object(
                Bucket=self.location.bucket, Key=self.location.key(kind, filename)
            )
        except self._client.exceptions.ClientError as e:
            if _code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(
            kind,
            filename,
            answer["ContentLength"],
            answer["LastModified"].timestamp(),
            dict(answer.get("Metadata", {})),
        )

    def listing(self) -> Deferred[list[ObjectInfo]]:
        """Every recording in the library, and the posters (kind ``posters``), page by page
        (1000 keys a request)."""
        return self._run(self._listing)

    def _listing(self) -> list[ObjectInfo]:
        found = []
        pages = self._client.get_paginator("list_objects_v2")
        for kind, suffix in SUFFIXES.items():
            start = self.location.kind_prefix(kind)
            for page in pages.paginate(Bucket=self.location.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    filename = item["Key"][len(start) :]
                    if "/" in filename or not filename.endswith(suffix):
                        continue
                    found.append(
                        ObjectInfo(
                            kind, filename, item["Size"], item["LastModified"].timestamp(), {}
                        )
                    )
        return found

    def open(self, kind: str, filename: str, first: int = 0, last: int | None = None
             ) -> Deferred[Download | None]:  # fmt: skip
        """Start a GET of bytes ``first..last`` (inclusive; ``last`` None: to the end), or None
        when there is no such object. Ranges are checked by the caller against the size."""
        return self._run(self._open, kind, filename, first, last)

    def _open(self, kind: str, filename: str, first: int, last: int | None) -> Download | None:
        byte_range = f"bytes={first}-{'' if last is None else last}"
        try:
            answer = self._client.get_object(
                Bucket=self.location.bucket,
                Key=self.location.key(kind, filename),
                Range=byte_range,
            )
        except self._client.exceptions.ClientError as e:
            if _code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        total = int(answer["ContentRange"].rpartition("/")[2]) if "ContentRange" in answer else (
            answer["ContentLength"]
        )  # fmt: skip
        return Download(answer["Body"], first, answer["ContentLength"], total, CONTENT_TYPES[kind])

    def read(self, download: Download, size: int) -> Deferred[bytes]:
        """The next at most ``size`` bytes of an open GET (b"" at its end)."""
        return self._run(download.body.read, size)

    def close(self, download: Download) -> None:
        download.body.close()

    def delete(self, kind: str, filename: str) -> Deferred[None]:
        return self._run(
            self._client.delete_object,
            Bucket=self.location.bucket,
            Key=self.location.key(kind, filename),
        ).addCallback(lambda _: None)

    def presigned_url(self, kind: str, filename: str, seconds: int) -> Deferred[str]:
        """A URL any HTTP client may GET (Range included) for ``seconds``, without credentials."""
        return self._run(
            self._client.generate_presigned_url,
            "get_object",
            Params={"Bucket": self.location.bucket, "Key": self.location.key(kind, filename)},
            ExpiresIn=seconds,
        )

    def reachable(self) -> Deferred[bool]:
        """True when the bucket answers with our credentials (for health checks)."""
        return self._run(self._reachable)

    def _reachable(self) -> bool:
        try:
            self._client.head_bucket(Bucket=self.location.bucket)
        except Exception:
            return False
        return True


def _if_none_match(params: dict[str, Any], **_: object) -> None:
    params.setdefault("IfNoneMatch", "*")


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
