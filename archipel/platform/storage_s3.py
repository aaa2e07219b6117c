"""The S3 blob store: blobs as objects of an S3-compatible bucket (AWS S3, MinIO, Ceph radosgw), through s3fs.

A URL ``s3://BUCKET/PREFIX`` names the store. Blobs live flat under ``PREFIX/objects/KEY``: S3 has no
directories to keep small, and the keys (SHA-256 digests) already spread evenly over the key space, so the
filesystem store's ``ab/cd`` fan-out would buy nothing and cost a longer listing. Other things may share the
bucket beside ``objects/`` (OME-Zarr pyramids under ``PREFIX/zarr/``: :meth:`S3BlobStore.sibling_url`).

The endpoint and region come from the settings (``ARCHIPEL_S3_ENDPOINT_URL``, ``ARCHIPEL_S3_REGION``); the
credentials from botocore's own chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a profile, or an
instance role), so that none is ever written in a config file of ours.

A PUT that S3 acknowledged is durable (S3's own contract), and an object is either whole or absent, so ``put``
needs neither a temporary name nor a flush. Every S3 failure reaches callers as :class:`BlobNotFound` or
:class:`~archipel.platform.storage.BlobStoreError` naming the key, never as a botocore exception.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from archipel.platform.storage import BlobNotFound, BlobStoreError, check_key

log = logging.getLogger("archipel.storage")

T = TypeVar("T")

#: Part size of multipart uploads and read-ahead block of :meth:`S3BlobStore.open`: memory per upload or open
#: blob stays a few of these whatever the blob's size.
PART_BYTES = 8 << 20
_MAX_PARTS = 10_000  # S3's limit on the parts of one upload
_UPLOAD_CONCURRENCY = 4
#: Multipart uploads started longer ago than this are taken for abandoned by :meth:`S3BlobStore.sweep_temporary`.
#: One day, the usual ``AbortIncompleteMultipartUpload`` lifecycle rule: long enough for any slide upload still
#: running in another process of the cluster.
MULTIPART_GRACE_SECONDS = 24 * 3600


class S3BlobStore:
    """Blobs as objects ``BUCKET/PREFIX/objects/KEY`` of an S3-compatible store."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str = "",
        region: str = "",
        multipart_grace_seconds: float = MULTIPART_GRACE_SECONDS,
        part_bytes: int = PART_BYTES,
        attempts: int = 5,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 blob store URL needs a bucket: s3://BUCKET/PREFIX")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.multipart_grace_seconds = multipart_grace_seconds
        self.part_bytes = max(part_bytes, 5 << 20)  # S3's smallest part but the last
        self.attempts = max(attempts, 1)
        base = f"{bucket}/{self.prefix}" if self.prefix else bucket
        self._objects = f"{base}/objects"
        self._base = base

    @property
    def url(self) -> str:
        """The store's own URL, ``s3://BUCKET/PREFIX``."""
        return f"s3://{self._base}"

    @property
    def fs(self) -> Any:
        """The s3fs filesystem of this process for this service (shared by the stores on it: a client costs)."""
        return _filesystem(self.endpoint_url, self.region, self.attempts, self.part_bytes)

    def storage_options(self) -> dict[str, Any]:
        """What fsspec needs to open :meth:`sibling_url` locations (zarr, for instance) on the same service."""
        options: dict[str, Any] = {"use_listings_cache": False}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        if self.region:
            options["client_kwargs"] = {"region_name": self.region}
        return options

    def sibling_url(self, name: str) -> str:
        """URL of ``name`` beside the blobs, in the same bucket and prefix (``s3://BUCKET/PREFIX/name``)."""
        return f"s3://{self._base}/{name.strip('/')}"

    def url_of(self, key: str) -> str:
        """The fsspec URL of blob ``key`` (``s3://BUCKET/PREFIX/objects/KEY``), for readers that open URLs
        themselves with :meth:`storage_options` (wsidicom, zarr): they read it by ranges, never whole."""
        return f"s3://{self._path(key)}"

    def _path(self, key: str) -> str:
        check_key(key)
        return f"{self._objects}/{key}"

    def _call(self, action: str, key: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; S3's errors become :class:`BlobNotFound` or a :class:`BlobStoreError` naming ``key``."""
        try:
            return fn()
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc
        except (BlobNotFound, BlobStoreError):
            raise
        except Exception as exc:  # botocore, aiohttp and s3fs raise many unrelated types
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning(
                "event=s3_error action=%s bucket=%s key=%s error=%s",
                action,
                self.bucket,
                key,
                type(exc).__name__,
            )
            raise BlobStoreError(f"S3 store {self.url}: could not {action} blob {key!r}: {reason}") from exc

    def _s3(self, action: str, key: str, operation: str, **kwargs: Any) -> Any:
        """One S3 API call (``list_objects_v2``...) through s3fs's client, its errors translated by :meth:`_call`."""
        return self._call(action, key, functools.partial(self.fs.call_s3, operation, **kwargs))

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if self.exists(key):
            return
        self._call("store", key, lambda: self.fs.pipe_file(path, data))

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        if self.exists(key):
            path.unlink(missing_ok=True)
            return
        size = path.stat().st_size
        chunk = max(self.part_bytes, math.ceil(size / _MAX_PARTS))
        # s3fs sends a file of up to two parts in one PUT and a larger one in parts of ``chunk`` bytes, a few at
        # a time, and aborts the multipart upload if a part fails: the memory used never grows with the file.
        self._call(
            "store",
            key,
            lambda: self.fs.put_file(str(path), target, chunksize=chunk, max_concurrency=_UPLOAD_CONCURRENCY),
        )
        path.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        return cast(bytes, self._call("read", key, lambda: self.fs.cat_file(path)))

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        path = self._path(key)
        if length <= 0:
            return b""

        def ranged_get() -> bytes:
            # One GET with ``Range: bytes=offset-(offset+length-1)``, no HEAD first: a frame costs one round trip.
            try:
                return cast(bytes, self.fs.cat_file(path, start=offset, end=offset + length))
            except OSError as exc:
                # S3 answers 416 for a range starting past the end; a file read there is empty.
                if exc.errno == errno.EINVAL and "range" in str(exc).lower():
                    return b""
                raise

        return self._call("read", key, ranged_get)

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        # A seekable file whose reads are ranged GETs of PART_BYTES blocks (read-ahead cache).
        return cast(
            BinaryIO, self._call("open", key, lambda: self.fs.open(path, "rb", block_size=PART_BYTES))
        )

    def exists(self, key: str) -> bool:
        path = self._path(key)
        return bool(self._call("look up", key, lambda: self.fs.exists(path)))

    def size(self, key: str) -> int:
        path = self._path(key)
        return int(self._call("look up", key, lambda: self.fs.info(path)["size"]))

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(BlobNotFound):  # S3 answers a DELETE of a missing key with success anyway
            self._call("delete", key, lambda: self.fs.rm_file(path))

    def keys(self, older_than: float | None = None) -> Iterator[str]:
        # Page by page (1000 keys a request), so a bucket of millions of blobs is never listed whole in memory.
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._objects_prefix()}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._s3("list", "*", "list_objects_v2", **kwargs)
            for item in page.get("Contents", []):
                if older_than is not None and _epoch(item["LastModified"]) >= older_than:
                    continue
                yield item["Key"].rsplit("/", 1)[1]
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def _objects_prefix(self) -> str:
        return self._objects.split("/", 1)[1] + "/"

    def sweep_temporary(self, older_than: float | None = None) -> int:
        """Abort the multipart uploads under ``objects/`` started over ``multipart_grace_seconds`` ago (or before
        ``older_than``, if that is earlier).

        They are what a crash in the middle of :meth:`put_file` leaves (their parts are billed but invisible).
        Younger ones may belong to another process still uploading, and are left to it.
        """
        cutoff = time.time() - self.multipart_grace_seconds
        if older_than is not None:
            cutoff = min(cutoff, older_than)
        aborted = 0
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._objects_prefix()}
        while True:
            page = self._s3("list uploads", "*", "list_multipart_uploads", **kwargs)
            for upload in page.get("Uploads", []):
                if _epoch(upload["Initiated"]) > cutoff:
                    continue
                key = upload["Key"]
                self._s3(
                    "abort the upload of",
                    key,
                    "abort_multipart_upload",
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload["UploadId"],
                )
                aborted += 1
            if not page.get("IsTruncated"):
                break
            kwargs["KeyMarker"] = page.get("NextKeyMarker", "")
            kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker", "")
        if aborted:
            log.info("event=s3_uploads_aborted bucket=%s count=%d", self.bucket, aborted)
        return aborted


_clients_lock = threading.Lock()
_clients: dict[tuple[int, str, str, int, int], Any] = {}


def _filesystem(endpoint_url: str, region: str, attempts: int, part_bytes: int) -> Any:
    """One s3fs filesystem per process and configuration: a forked worker makes its own (the parent's event loop
    and connections are not its)."""
    key = (os.getpid(), endpoint_url, region, attempts, part_bytes)
    with _clients_lock:
        fs = _clients.get(key)
        if fs is None:
            import s3fs  # only a process on S3 pays for importing aiobotocore

            fs = s3fs.S3FileSystem(
                endpoint_url=endpoint_url or None,
                client_kwargs={"region_name": region} if region else {},
                # Other processes write the bucket too: a cached listing would hide their objects.
                use_listings_cache=False,
                skip_instance_cache=True,
                default_block_size=part_bytes,
                config_kwargs={"retries": {"max_attempts": attempts, "mode": "standard"}},
            )
            fs.retries = attempts
            _clients[key] = fs
        return fs


def _epoch(when: datetime) -> float:
    return when.timestamp()
