"""The filesystem blob store's write path: durable puts, fan-out directories, and files torn by a crash."""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

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


# Drafts: blobs written piece by piece as they arrive (FileBlobDraft), with O_DIRECT where the filesystem
# allows it and through the page cache elsewhere.


def write_draft(store: FileBlobStore, data: bytes, sizes: list[int]) -> tuple[str, bool]:
    """Write ``data`` into a new draft in pieces of the given sizes (cycled); return its key and whether
    placing it created the blob."""
    draft = store.draft()
    offset, k = 0, 0
    while offset < len(data):
        step = sizes[k % len(sizes)]
        draft.write(memoryview(data)[offset : offset + step])
        offset, k = offset + step, k + 1
    key = draft.close()
    return key, draft.place()


@pytest.mark.parametrize("direct", [True, False], ids=["o-direct", "page-cache"])
def test_a_draft_written_in_pieces_of_any_size_is_placed_byte_for_byte_under_its_digest(
    tmp_path: Path, direct: bool
) -> None:
    store = FileBlobStore(tmp_path)
    store.direct_io = direct
    rng = random.Random(7)
    # Empty, under one block, exactly a block, across the write threshold, and larger than the aligned buffer.
    for size in (0, 1, 4095, 4096, 65_537, 300_001, 2_500_000):
        data = rng.randbytes(size)
        key, created = write_draft(store, data, [1, 100, 4096, 65_536, 131_072, 1_500_000])
        assert (key, created) == (key_of(data), True)
        assert store.get(key) == data
        assert store.path(key).stat().st_size == size
    assert store.direct_io is direct  # this filesystem took O_DIRECT, or it was not asked for
    assert list(store.tmp.iterdir()) == []


def test_a_draft_of_bytes_stored_already_is_not_placed_again_and_leaves_nothing(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = b"stored once" * 5000
    store.put(key_of(data), data)
    before = store.path(key_of(data)).stat().st_ino
    assert write_draft(store, data, [4096]) == (key_of(data), False)
    assert store.path(key_of(data)).stat().st_ino == before
    assert list(store.tmp.iterdir()) == []


def test_a_draft_replaces_a_blob_torn_under_its_final_name(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = b"whole object" * 10_000
    path = store.path(key_of(data))
    path.parent.mkdir(parents=True)
    path.write_bytes(data[:4096])  # what a crash between a rename and its flush can leave
    assert write_draft(store, data, [65_536]) == (key_of(data), True)
    assert store.get(key_of(data)) == data


def test_a_discarded_draft_leaves_nothing_and_cannot_be_written_to(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    draft = store.draft()
    draft.write(b"part of an object that never arrives whole" * 3000)
    assert len(list(store.tmp.iterdir())) == 1
    draft.discard()
    assert list(store.tmp.iterdir()) == []
    assert list(store.keys()) == []
    with pytest.raises(ValueError, match="closed"):
        draft.write(b"more")


def test_the_sweep_spares_a_draft_still_being_written_when_given_a_grace(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    draft = store.draft()
    draft.write(b"arriving")
    stale = store.tmp / "left.by.a.crash"
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert store.sweep_temporary(older_than=time.time() - 60) == 1
    assert [p.name for p in store.tmp.iterdir()] == [draft.path.name]
    key, created = draft.close(), draft.place()
    assert created and store.get(key) == b"arriving"
    assert store.sweep_temporary() == 0
