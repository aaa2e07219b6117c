"""What every blob store promises (the ``BlobStore`` protocol), on the filesystem and on an S3-compatible server,
and what the S3 store does of its own: ranged GETs, multipart uploads, aborted leftovers, errors naming the key."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from archipel.platform.settings import Settings
from archipel.platform.storage import BlobNotFound, BlobStore, BlobStoreError, FileBlobStore, open_blob_store
from archipel.platform.storage_s3 import S3BlobStore
from tests.support import free_port

if TYPE_CHECKING:
    from tests.s3_support import RequestLog, S3Bucket

# The fixtures, registered as a plugin (an import would shadow them as parameters) before the module is read.
pytest_plugins = ["tests.s3_support"]


def key_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "file":
        yield FileBlobStore(tmp_path / "blobs")
        return
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    yield bucket.store()


def test_a_stored_blob_reads_back_whole_in_ranges_and_through_a_seekable_file(store: BlobStore) -> None:
    data = bytes(range(256)) * 400
    key = key_of(data)
    store.put(key, data)
    assert store.exists(key) and store.size(key) == len(data)
    assert store.get(key) == data
    assert store.read_range(key, 1000, 300) == data[1000:1300]
    assert store.read_range(key, len(data) - 10, 100) == data[-10:]  # short at the end, as a file read
    assert store.read_range(key, len(data) + 5, 10) == b""
    with store.open(key) as f:
        f.seek(50_000)
        assert f.read(16) == data[50_000:50_016]
        f.seek(10)
        assert f.read(4) == data[10:14]


def test_the_same_bytes_stored_twice_are_one_blob(store: BlobStore) -> None:
    data = b"sent twice"
    store.put(key_of(data), data)
    store.put(key_of(data), data)
    assert store.get(key_of(data)) == data
    assert list(store.keys()) == [key_of(data)]


def test_a_stored_file_is_consumed_and_an_existing_key_is_left_alone(
    store: BlobStore, tmp_path: Path
) -> None:
    source = tmp_path / "upload.part"
    source.write_bytes(b"slide bytes" * 1000)
    store.put_file("slide", source)
    assert not source.exists()
    assert store.get("slide") == b"slide bytes" * 1000
    again = tmp_path / "again.part"
    again.write_bytes(b"other")
    store.put_file("slide", again)
    assert not again.exists() and store.get("slide") == b"slide bytes" * 1000


def test_a_missing_blob_is_blob_not_found_and_its_delete_is_a_no_op(store: BlobStore) -> None:
    assert not store.exists("absent")
    for read in (store.get, store.size, store.open, lambda k: store.read_range(k, 0, 10)):
        with pytest.raises(BlobNotFound):
            read("absent")
    store.delete("absent")
    store.put("present", b"x")
    store.delete("present")
    assert not store.exists("present") and list(store.keys()) == []


def test_keys_lists_every_blob_and_only_the_older_ones_when_asked(store: BlobStore) -> None:
    store.put("old", b"1")
    cutoff = time.time() + 1  # S3 keeps LastModified to the second
    assert set(store.keys()) == {"old"}
    assert set(store.keys(older_than=cutoff)) == {"old"}
    assert list(store.keys(older_than=time.time() - 3600)) == []


def test_a_key_that_could_leave_the_store_is_refused(store: BlobStore) -> None:
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            store.put(bad, b"x")


def test_an_s3_range_read_sends_one_ranged_get_and_transfers_only_the_range(
    s3_bucket: S3Bucket, s3_request_log: RequestLog
) -> None:
    store = s3_bucket.store()
    data = os.urandom(300_000)
    store.put("big", data)
    recorder = s3_request_log
    with recorder.recording():
        assert store.read_range("big", 200_000, 1000) == data[200_000:201_000]
    seen = recorder.requests(s3_bucket.name)
    assert [r["method"] for r in seen] == ["GET"]  # one round trip: no HEAD for the size first
    headers = {k.lower(): v for k, v in seen[0]["headers"].items()}
    assert headers["range"] == "bytes=200000-200999"


def test_an_s3_file_opened_reads_blocks_by_range_not_the_whole_object(
    s3_bucket: S3Bucket, s3_request_log: RequestLog
) -> None:
    store = s3_bucket.store()
    part = store.part_bytes  # 5 MiB, S3's smallest
    data = os.urandom(3 * part)
    store.put("wsi", data)
    recorder = s3_request_log
    with recorder.recording(), store.open("wsi") as f:
        f.seek(2 * part + 5)
        assert f.read(100) == data[2 * part + 5 : 2 * part + 105]
    gets = [r for r in recorder.requests(s3_bucket.name) if r["method"] == "GET"]
    ranges = [{k.lower(): v for k, v in r["headers"].items()}.get("range", "") for r in gets]
    assert ranges and all(r.startswith("bytes=") for r in ranges), ranges
    first, last = (int(x) for x in ranges[0].removeprefix("bytes=").split("-"))
    assert first >= 2 * part and last - first < 2 * part


def test_a_large_file_goes_to_s3_in_parts(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    source = tmp_path / "slide.part"
    store = s3_bucket.store(part_bytes=5 << 20)
    data = os.urandom(2 * store.part_bytes + 1234)
    source.write_bytes(data)
    store.put_file("slide", source)
    head = s3_bucket.client().head_object(Bucket=s3_bucket.name, Key="blobs/objects/slide")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload's ETag counts its parts
    assert store.get("slide") == data


def test_the_sweep_aborts_stale_multipart_uploads_and_leaves_recent_ones(s3_bucket: S3Bucket) -> None:
    client = s3_bucket.client()
    upload = client.create_multipart_upload(Bucket=s3_bucket.name, Key="blobs/objects/half-written")
    # moto dates every upload's Initiated to 2010: a grace reaching back past it stands for "started recently".
    recent = s3_bucket.store(multipart_grace_seconds=time.time() - 1e9)
    assert recent.sweep_temporary() == 0  # another process may still be uploading
    assert s3_bucket.store(multipart_grace_seconds=0).sweep_temporary() == 1
    assert client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", []) == []
    assert upload["UploadId"]


def test_an_unreachable_s3_service_is_a_clear_error_naming_the_key() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = S3BlobStore("archive", "blobs", endpoint_url=endpoint, region="us-east-1", attempts=1)
    with pytest.raises(BlobStoreError) as caught:
        store.size("abc123")  # one request: s3fs waits up to a second after each failure
    assert "abc123" in str(caught.value) and "s3://archive/blobs" in str(caught.value)
    assert isinstance(caught.value.__cause__, Exception)


def test_a_missing_bucket_is_a_clear_error_naming_the_key(s3_endpoint: str) -> None:
    store = S3BlobStore("no-such-bucket-here", "blobs", endpoint_url=s3_endpoint, region="us-east-1")
    with pytest.raises((BlobStoreError, BlobNotFound)) as caught:
        store.put("k", b"x")
    assert "'k'" in str(caught.value)


def test_an_s3_url_opens_an_s3_store_on_the_configured_endpoint(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, s3_endpoint_url=s3_bucket.endpoint, s3_region="us-east-1")
    store = open_blob_store(s3_bucket.url("archive/blobs"), settings)
    assert isinstance(store, S3BlobStore)
    store.put("k", b"bytes")
    assert s3_bucket.object_keys() == ["archive/blobs/objects/k"]
    assert store.sibling_url("zarr/s.zarr") == f"s3://{s3_bucket.name}/archive/blobs/zarr/s.zarr"
    assert base64.b64encode(store.get("k")) == base64.b64encode(b"bytes")
