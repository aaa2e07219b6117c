"""An S3-compatible server for the tests (moto's standalone server, decision 0038), and a bucket per test.

``make test`` starts one server (``make s3-server``) and passes its URL in ``ARCHIPEL_TEST_S3_ENDPOINT``; a test
file run by hand without it starts a server process of its own for the session. A test module takes the
fixtures with ``pytest_plugins = ["tests.s3_support"]``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from archipel.platform.storage_s3 import S3BlobStore
from tests.support import free_port, wait_until

ENDPOINT_ENV = "ARCHIPEL_TEST_S3_ENDPOINT"
REGION = "us-east-1"
# moto accepts any credentials; botocore insists on having some. Invented, as every test value.
_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "archipel-test", "AWS_SECRET_ACCESS_KEY": "archipel-test-secret"}


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def _moto_server_command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    program = [str(script)] if script.exists() else [shutil.which("moto_server") or "moto_server"]
    return [*program, "-H", "127.0.0.1", "-p", str(port)]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a running S3-compatible server: ``make test``'s, else one started for this session."""
    for name, value in _TEST_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    shared = os.environ.get(ENDPOINT_ENV, "")
    if shared:
        yield shared.rstrip("/")
        return
    port = free_port()
    log_dir = tmp_path_factory.mktemp("s3-server")
    log = (log_dir / "moto.log").open("wb")
    # moto's request recorder (RequestLog) writes to this file, not to the working directory.
    env = {**os.environ, "MOTO_RECORDER_FILEPATH": str(log_dir / "recording.jsonl")}
    proc = subprocess.Popen(_moto_server_command(port), stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is None and _answers(url), timeout=30, what="moto_server")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


class S3Bucket:
    """A bucket of its own for one test, and the requests the server saw (moto's recorder)."""

    def __init__(self, endpoint: str, name: str) -> None:
        self.endpoint = endpoint
        self.name = name

    def client(self) -> Any:
        """A boto3 client of the server (for setting things up and looking behind the store's back)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION)

    def store(self, prefix: str = "blobs", **options: Any) -> S3BlobStore:
        """An S3 blob store on this bucket (in 5 MiB parts and read blocks, S3's smallest, unless told)."""
        options.setdefault("part_bytes", 5 << 20)
        return S3BlobStore(self.name, prefix, endpoint_url=self.endpoint, region=REGION, **options)

    def url(self, prefix: str) -> str:
        """``s3://BUCKET/prefix``."""
        return f"s3://{self.name}/{prefix}"

    def object_keys(self, prefix: str = "") -> list[str]:
        """Every object key of the bucket under ``prefix``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


class RequestLog:
    """The requests moto's server records while :meth:`recording` (its /moto-api/recorder).

    The recorder is server-wide and the test processes of ``make test`` share one server, so a recording holds
    a lock file (one per server) from its start to its stop: two tests never record at once, and each may reset
    the log. A test reads only the entries of its own bucket."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._lock = Path(tempfile.gettempdir()) / f"archipel-moto-recorder-{urlparse(endpoint).port}.lock"

    def _post(self, action: str) -> None:
        httpx.post(f"{self.endpoint}/moto-api/recorder/{action}", timeout=5).raise_for_status()

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record the requests made inside the block (and only those)."""
        with self._lock.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._post("reset-recording")
            self._post("start-recording")
            try:
                yield
            finally:
                self._post("stop-recording")
                self._entries = self._download()

    def _download(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.endpoint}/moto-api/recorder/download-recording", timeout=5)
        r.raise_for_status()
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]

    def requests(self, bucket: str) -> list[dict[str, Any]]:
        """Method, URL and headers of each request the last recording saw for ``bucket``."""
        entries = getattr(self, "_entries", [])
        return [e for e in entries if f"/{bucket}/" in e.get("url", "") or f"//{bucket}." in e.get("url", "")]


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[S3Bucket]:
    """An empty bucket for this test, removed with its objects afterwards."""
    bucket = S3Bucket(s3_endpoint, f"archipel-{uuid.uuid4().hex[:20]}")
    client = bucket.client()
    client.create_bucket(Bucket=bucket.name)
    try:
        yield bucket
    finally:
        for key in bucket.object_keys():
            client.delete_object(Bucket=bucket.name, Key=key)
        uploads = client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])
        for upload in uploads:
            client.abort_multipart_upload(Bucket=bucket.name, Key=upload["Key"], UploadId=upload["UploadId"])
        client.delete_bucket(Bucket=bucket.name)


@pytest.fixture
def s3_request_log(s3_endpoint: str) -> RequestLog:
    """The server's request recorder (``with s3_request_log.recording():`` around what the test looks at)."""
    return RequestLog(s3_endpoint)
