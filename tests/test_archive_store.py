"""The archive's write side: storing, duplicates, bad input and the orphan sweep."""

from __future__ import annotations

import errno
import hashlib
import time

import pytest
from sqlalchemy import func, select

from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive, DuplicateConflict
from archipel.radiology.dicomfile import InvalidInstance
from archipel.radiology.models import Instance, InstanceVersion, Patient, Study
from archipel.radiology.samples import SyntheticPatient, ct_series, jpeg_multiframe, to_bytes


def count(rt: Runtime, model: type) -> int:
    with rt.db.sessions() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def test_stored_bytes_are_kept_unchanged_and_hashed(
    archive: Archive, runtime: Runtime, patient: SyntheticPatient
) -> None:
    data = to_bytes(ct_series(patient, 1)[0])
    result = archive.store(data)
    assert result.status == "stored"
    with runtime.db.sessions() as s:
        row = s.execute(select(Instance)).scalar_one()
    assert row.sha256 == hashlib.sha256(data).hexdigest()
    assert runtime.blobs.get(row.blob_key) == data
    assert row.size == len(data)


def test_patient_ids_are_unique_only_within_their_issuer(archive: Archive, runtime: Runtime) -> None:
    a = SyntheticPatient("12345", "ONE^Patient", "19800101", "M", issuer="SITE-A")
    b = SyntheticPatient("12345", "OTHER^Person", "19900101", "F", issuer="SITE-B")
    archive.store(to_bytes(ct_series(a, 1)[0]))
    archive.store(to_bytes(ct_series(b, 1)[0]))
    assert count(runtime, Patient) == 2
    assert count(runtime, Study) == 2


def test_same_instance_with_same_bytes_is_a_no_op(
    archive: Archive, runtime: Runtime, patient: SyntheticPatient
) -> None:
    data = to_bytes(ct_series(patient, 1)[0])
    archive.store(data)
    assert archive.store(data).status == "already-stored"
    assert count(runtime, Instance) == 1


def test_same_uid_with_other_bytes_keeps_the_first_by_default(
    archive: Archive, runtime: Runtime, patient: SyntheticPatient
) -> None:
    ds = ct_series(patient, 1)[0]
    first = to_bytes(ds)
    archive.store(first)
    ds.SeriesDescription = "changed"
    with pytest.raises(DuplicateConflict) as err:
        archive.store(to_bytes(ds))
    assert err.value.code == 0x0111
    with runtime.db.sessions() as s:
        row = s.execute(select(Instance)).scalar_one()
    assert runtime.blobs.get(row.blob_key) == first


def test_version_policy_keeps_both_copies(runtime: Runtime, patient: SyntheticPatient) -> None:
    archive = Archive(runtime.db, runtime.blobs, "version")
    ds = ct_series(patient, 1)[0]
    first = to_bytes(ds)
    archive.store(first)
    ds.SeriesDescription = "corrected"
    second = to_bytes(ds)
    assert archive.store(second).status == "replaced"
    with runtime.db.sessions() as s:
        row = s.execute(select(Instance)).scalar_one()
        old = s.execute(select(InstanceVersion)).scalar_one()
    assert runtime.blobs.get(row.blob_key) == second
    assert runtime.blobs.get(old.blob_key) == first


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b"garbage" * 40, "not a DICOM"),
        (lambda b: b"", "not a DICOM"),
    ],
)
def test_bad_input_is_refused_with_a_reason_and_changes_nothing(
    archive: Archive, runtime: Runtime, patient: SyntheticPatient, mutate: object, reason: str
) -> None:
    good = to_bytes(ct_series(patient, 1)[0])
    archive.store(good)
    with pytest.raises(InvalidInstance) as err:
        archive.store(mutate(to_bytes(ct_series(patient, 1)[0])))  # type: ignore[operator]
    assert reason in err.value.reason
    assert count(runtime, Instance) == 1


def test_missing_uid_is_refused(archive: Archive, patient: SyntheticPatient) -> None:
    ds = ct_series(patient, 1)[0]
    del ds.SeriesInstanceUID
    with pytest.raises(InvalidInstance, match="missing SeriesInstanceUID"):
        archive.store(to_bytes(ds))


def test_unsupported_transfer_syntax_is_refused(archive: Archive, patient: SyntheticPatient) -> None:
    data = to_bytes(ct_series(patient, 1)[0])
    unknown = data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.9\x00", 1)
    with pytest.raises(InvalidInstance) as err:
        archive.store(unknown)
    assert err.value.code == 0xC122
    assert err.value.http_status == 415


def test_encapsulated_frames_are_indexed_by_fragment(
    archive: Archive, runtime: Runtime, patient: SyntheticPatient
) -> None:
    data = to_bytes(jpeg_multiframe(patient, frames=3))
    archive.store(data)
    with runtime.db.sessions() as s:
        row = s.execute(select(Instance)).scalar_one()
    assert row.number_of_frames == 3
    import json

    frames = json.loads(row.frame_index or "[]")
    assert len(frames) == 3
    for [[offset, length]] in frames:
        frame = runtime.blobs.read_range(row.blob_key, offset, length)
        assert frame[:2] == b"\xff\xd8" and frame.rstrip(b"\x00")[-2:] == b"\xff\xd9"


def test_the_row_waits_for_the_blob_flush_and_a_failed_flush_commits_nothing(
    archive: Archive, runtime: Runtime, patient: SyntheticPatient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index statements run while the blob is flushed (a lone store), but the commit waits for the flush:
    a flush that fails (a full disk) leaves no row, and the store raises it."""
    blobs = archive.blobs
    real_put = blobs.put
    seen: list[int] = []

    def slow_put(key: str, data: bytes) -> None:
        real_put(key, data)
        time.sleep(0.2)  # the flush, long enough for the row's statements to run first
        seen.append(count(runtime, Instance))  # nothing committed while the blob is not durable
        if len(seen) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(blobs, "put", slow_put)
    first, second = (to_bytes(ds) for ds in ct_series(patient, 2))
    assert archive.store(first).status == "stored"
    with pytest.raises(OSError, match="No space left"):
        archive.store(second)
    assert seen == [0, 1]
    assert count(runtime, Instance) == 1


def test_orphan_blobs_are_swept_and_indexed_ones_kept(
    archive: Archive, runtime: Runtime, patient: SyntheticPatient
) -> None:
    data = to_bytes(ct_series(patient, 1)[0])
    archive.store(data)
    runtime.blobs.put("f" * 64, b"left behind by a crash before commit")
    assert archive.sweep_orphans() == 1
    assert not runtime.blobs.exists("f" * 64)
    assert runtime.blobs.exists(hashlib.sha256(data).hexdigest())


def test_a_start_up_sweep_spares_fresh_orphans_when_other_processes_may_share_the_store(
    runtime: Runtime,
) -> None:
    from archipel.cli.services import SHARED_STORE_GRACE, _sweep_grace

    embedded = runtime.db.engine.dialect.name == "sqlite"
    assert _sweep_grace(runtime, shared=False) == (0 if embedded else SHARED_STORE_GRACE)
    assert _sweep_grace(runtime, shared=True) == SHARED_STORE_GRACE
