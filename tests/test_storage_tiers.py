"""Storage tiers: blobs of studies older than the hot period move to the archive tier (copy, verify, record,
delete), reads find them there (whole, by WADO-RS, and by frame range) through a bounded read cache, and a move
cut short at any step is finished by the next run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select

from archipel.platform import tiering
from archipel.platform.preservation import ARCHIVE, HOT, MOVING, PreservedBlob, forget_blob
from archipel.platform.runtime import Runtime
from archipel.platform.storage_tasks import runtime_stores, tier_and_replicate
from archipel.platform.storage_tiers import TieredBlobStore
from archipel.radiology.dicomweb.frames import read_frame
from archipel.radiology.dicomweb.resources import StoredInstance, stored_instance
from archipel.radiology.models import Instance
from tests.auth_helpers import bearer, client, login, make_account
from tests.dicomweb_messages import read_multipart
from tests.lifecycle_support import age_study, folder_store, hot, lifecycle_runtime, run_storage, store_study

THREE_YEARS = 3 * 365


@pytest.fixture
def rt(runtime: Runtime, tmp_path: Path) -> Runtime:
    return lifecycle_runtime(runtime, tmp_path, replica=False)


def tiers(rt: Runtime, keys: list[str]) -> list[str]:
    with rt.db.sessions() as s:
        found = dict(
            s.execute(select(PreservedBlob.key, PreservedBlob.tier).where(PreservedBlob.key.in_(keys))).all()
        )
    return [found.get(k, "") for k in keys]


def test_tiering_moves_the_blobs_of_old_studies_and_keeps_recent_ones_hot(rt: Runtime) -> None:
    assert isinstance(rt.blobs, TieredBlobStore)
    _, old_keys, _ = store_study(rt, "LIFE001")
    _, new_keys, _ = store_study(rt, "LIFE002")
    age_study(rt, _study_of(rt, old_keys[0]), THREE_YEARS)
    age_study(rt, _study_of(rt, new_keys[0]), 700)  # inside the 730 days of the hot period

    job_id, result = tier_and_replicate(rt)

    assert result["tiering"] == {"candidates": 2, "moved": 2, "failed": 0, "bytes": _size(rt, old_keys),
                                 "dry_run": False}  # fmt: skip
    archive = folder_store(rt, "archive")
    assert all(archive.exists(k) and not hot(rt).exists(k) for k in old_keys)
    assert all(hot(rt).exists(k) and not archive.exists(k) for k in new_keys)
    assert tiers(rt, old_keys) == [ARCHIVE, ARCHIVE] and tiers(rt, new_keys) == [HOT, HOT]
    # A second run finds nothing left to move.
    assert tier_and_replicate(rt)[1]["tiering"]["candidates"] == 0
    assert job_id


def test_an_archived_study_reads_back_byte_identical_over_wado_and_by_frame_range(
    rt: Runtime, tmp_path: Path
) -> None:
    study_uid, keys, payloads = store_study(rt, "LIFE003")
    age_study(rt, study_uid, THREE_YEARS)
    tier_and_replicate(rt)
    assert not any(hot(rt).exists(k) for k in keys)

    account = make_account(rt, "dr-tilleul", "radiologist", "SITE-A")
    with client() as http:
        token = login(http, account, rt.clock()).json()["access_token"]
        r = http.get(f"/dicom-web/studies/{study_uid}", headers=bearer(token))
    assert r.status_code == 200
    got = sorted(hashlib.sha256(content).hexdigest() for _, content in read_multipart(r))
    assert got == sorted(hashlib.sha256(p).hexdigest() for p in payloads)

    inst = _stored(rt, keys[1])
    assert read_frame(rt.blobs, inst, 1) == payloads[1][inst.pixel_data_offset :][: 16 * 16 * 2]
    # The archive reads went through the read cache: the study still reads with the archive gone.
    for key in keys:
        folder_store(rt, "archive").delete(key)
    assert rt.blobs.get(keys[0]) == payloads[0]
    assert rt.blobs.read_range(keys[1], 0, 132) == payloads[1][:132]


def test_a_move_cut_short_between_its_steps_is_finished_by_the_next_run(rt: Runtime) -> None:
    study_uid, keys, payloads = store_study(rt, "LIFE004", count=3)
    age_study(rt, study_uid, THREE_YEARS)
    stores = runtime_stores(rt)
    first, second, third = tiering.tier_candidates(rt.db, rt.clock(), rt.settings.storage_hot_days)
    # Killed after the copy, before anything was recorded.
    tiering.copy_to_archive(stores, first)
    # Killed after recording "moving", before the hot copy was deleted.
    tiering.copy_to_archive(stores, second)
    tiering.set_tier(rt.db, second.key, MOVING, rt.clock())
    # Killed after the delete, before recording "archive".
    tiering.copy_to_archive(stores, third)
    tiering.set_tier(rt.db, third.key, MOVING, rt.clock())
    tiering.drop_hot_copy(stores, third.key)

    # Nothing is lost meanwhile: every blob reads back, from whichever tier holds it.
    assert [rt.blobs.get(k) for k in keys] == payloads
    assert tiers(rt, [first.key, second.key, third.key]) == [HOT, MOVING, MOVING]

    result = tier_and_replicate(rt)[1]["tiering"]

    assert (result["candidates"], result["moved"], result["failed"]) == (3, 3, 0)
    assert tiers(rt, keys) == [ARCHIVE, ARCHIVE, ARCHIVE]
    assert not any(hot(rt).exists(k) for k in keys)
    assert [folder_store(rt, "archive").get(k) for k in keys] == payloads


def test_a_blob_corrupt_in_hot_is_not_moved_and_the_run_says_so(rt: Runtime) -> None:
    study_uid, keys, payloads = store_study(rt, "LIFE005")
    age_study(rt, study_uid, THREE_YEARS)
    path = hot(rt).path(keys[0])
    path.write_bytes(b"X" + payloads[0][1:])

    result = tier_and_replicate(rt)[1]["tiering"]

    assert (result["moved"], result["failed"]) == (1, 1)
    assert tiers(rt, keys) == [HOT, ARCHIVE]
    assert not folder_store(rt, "archive").exists(keys[0])


def test_the_tier_command_shows_a_dry_run_then_moves_with_a_job_row(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_uid, keys, _ = store_study(rt, "LIFE006")
    age_study(rt, study_uid, THREE_YEARS)

    code, output = run_storage(rt, monkeypatch, "tier", "--dry-run")
    assert code == 0, output
    assert f"would move 2 blobs ({_size(rt, keys)} bytes)" in output
    assert all(hot(rt).exists(k) for k in keys)

    code, output = run_storage(rt, monkeypatch, "tier")
    assert code == 0, output
    assert f"moved 2 of 2 blobs ({_size(rt, keys)} bytes), 0 failed" in output
    assert not any(hot(rt).exists(k) for k in keys)


def test_a_deleted_blob_is_forgotten_in_every_tier_the_replica_the_cache_and_the_record(
    runtime: Runtime, tmp_path: Path
) -> None:
    rt = lifecycle_runtime(runtime, tmp_path / "with-replica")
    study_uid, keys, _ = store_study(rt, "LIFE007")
    age_study(rt, study_uid, THREE_YEARS)
    tier_and_replicate(rt)
    rt.blobs.get(keys[0])  # into the read cache
    stores = runtime_stores(rt)
    assert stores.cache is not None and stores.cache.lookup(keys[0]) is not None
    hot(rt).put(keys[0], folder_store(rt, "archive").get(keys[0]))  # the same bytes stored again meanwhile

    forget_blob(rt.db, stores, keys[0])

    assert not any(folder_store(rt, n).exists(keys[0]) for n in ("archive", "replica"))
    assert not hot(rt).exists(keys[0]) and stores.cache.lookup(keys[0]) is None
    assert tiers(rt, keys) == ["", ARCHIVE]
    assert folder_store(rt, "replica").exists(keys[1])


def _study_of(rt: Runtime, key: str) -> str:
    from archipel.radiology.models import Series, Study

    with rt.db.sessions() as s:
        return str(
            s.execute(
                select(Study.study_uid)
                .join(Series, Series.study_pk == Study.id)
                .join(Instance, Instance.series_pk == Series.id)
                .where(Instance.blob_key == key)
            ).scalar_one()
        )


def _size(rt: Runtime, keys: list[str]) -> int:
    with rt.db.sessions() as s:
        return sum(s.execute(select(Instance.size).where(Instance.blob_key.in_(keys))).scalars())


def _stored(rt: Runtime, key: str) -> StoredInstance:
    with rt.db.sessions() as s:
        row = s.execute(select(Instance).where(Instance.blob_key == key)).scalar_one()
    return stored_instance("", "", row)
