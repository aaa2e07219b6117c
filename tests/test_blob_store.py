"""The filesystem blob store's write path: durable puts, fan-out directories, and files torn by a crash."""

from __future__ import annotations

import hashlib
from pathlib import Path

from archipel.platform.storage import FileBlobStore


def key_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_put_creates_its_fan_out_directories_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = b"first object" * 100
    store.put(key_of(data), data)
    assert store.get(key_of(data)) == data
    assert store.path(key_of(data)).parent.parent.parent == store.objects
    assert list(store.tmp.iterdir()) == []


def test_the_same_bytes_put_twice_are_stored_once(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = b"sent twice"
    store.put(key_of(data), data)
    store.put(key_of(data), data)
    assert list(store.keys()) == [key_of(data)]
    assert store.get(key_of(data)) == data


def test_a_blob_torn_under_its_final_name_by_a_crash_is_written_again(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = b"complete bytes of an object" * 1000
    key = key_of(data)
    # What a crash between the rename and the fsync can leave: the final name, part of the bytes.
    path = store.path(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(data[:4096])
    store.put(key, data)
    assert store.get(key) == data


def test_a_blob_of_the_right_size_but_other_bytes_is_written_again(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = b"x" * 8192
    key = key_of(data)
    path = store.path(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\0" * len(data))
    store.put(key, data)
    assert store.get(key) == data
