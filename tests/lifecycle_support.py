"""Shared pieces of the storage lifecycle tests: a runtime with hot, archive and replica stores (three folders),
studies made old, and the ``archipel storage`` command run in-process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

import archipel.radiology.blob_sources
import archipel.wsi.blob_sources  # noqa: F401  (register the blob references)
from archipel.platform import settings as settings_mod
from archipel.platform.runtime import Runtime, get_runtime, reset_runtime
from archipel.platform.storage import FileBlobStore
from archipel.platform.storage_tiers import TieredBlobStore
from archipel.radiology.archive import Archive
from archipel.radiology.models import Instance, Series, Study
from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes
from tests.auth_helpers import Clock

#: The tests' clock: studies are made old relative to it (and to the real time, which the CLI uses).
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def lifecycle_runtime(
    runtime: Runtime, tmp_path: Path, *, replica: bool = True, archive: bool = True
) -> Runtime:
    """The test's runtime again, with an archive tier and a replica store in folders of their own, and a clock
    the test moves (``rt.clock``)."""
    overrides: dict[str, object] = {}
    if archive:
        overrides["archive_blob_url"] = f"file://{tmp_path / 'archive'}"
    if replica:
        overrides["replica_blob_url"] = f"file://{tmp_path / 'replica'}"
    settings_mod.configure(**{**runtime.settings.model_dump(), **overrides})
    reset_runtime()
    rt = get_runtime()
    rt.clock = Clock(NOW)
    return rt


def hot(rt: Runtime) -> FileBlobStore:
    """The hot tier of ``rt``'s store."""
    store = rt.blobs.hot if isinstance(rt.blobs, TieredBlobStore) else rt.blobs
    assert isinstance(store, FileBlobStore)
    return store


def folder_store(rt: Runtime, name: str) -> FileBlobStore:
    """The archive or replica folder of a runtime made by :func:`lifecycle_runtime`."""
    url = rt.settings.archive_blob_url if name == "archive" else rt.settings.replica_blob_url
    return FileBlobStore(Path(url.removeprefix("file://")))


def store_study(rt: Runtime, patient_id: str, count: int = 2) -> tuple[str, list[str], list[bytes]]:
    """Store a small CT study of a new SITE-A patient; return its UID, its instances' blob keys and bytes."""
    patient = SyntheticPatient(
        patient_id=patient_id, name="TESTPATIENT^Lifecycle", birth_date="19700101", sex="F", issuer="SITE-A"
    )
    datasets = ct_series(patient, count, rows=16, cols=16, key=f"lifecycle-{patient_id}")
    archive = Archive(rt.db, rt.blobs, rt.settings.duplicate_policy)
    payloads = [to_bytes(ds) for ds in datasets]
    for data in payloads:
        archive.store(data)
    study_uid = str(datasets[0].StudyInstanceUID)
    with rt.db.sessions() as s:
        keys = list(
            s.execute(
                select(Instance.blob_key)
                .join(Series, Instance.series_pk == Series.id)
                .join(Study, Series.study_pk == Study.id)
                .where(Study.study_uid == study_uid)
                .order_by(Instance.instance_number)
            ).scalars()
        )
    return study_uid, keys, payloads


def age_study(rt: Runtime, study_uid: str, days: int) -> None:
    """Make every instance of ``study_uid`` received ``days`` before the test's clock."""
    when = rt.clock() - timedelta(days=days)
    with rt.db.write() as s:
        series = (
            select(Series.id).join(Study, Series.study_pk == Study.id).where(Study.study_uid == study_uid)
        )
        s.execute(update(Instance).where(Instance.series_pk.in_(series)).values(received_at=when))


def run_storage(rt: Runtime, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """``archipel storage ARGS`` on ``rt``'s data, database and stores; returns exit code and output."""
    import archipel.cli  # noqa: F401  (registers the commands)
    from archipel.cli.common import app

    monkeypatch.setenv("ARCHIPEL_DATABASE_URL", rt.settings.effective_database_url)
    monkeypatch.setenv("ARCHIPEL_ARCHIVE_BLOB_URL", rt.settings.archive_blob_url)
    monkeypatch.setenv("ARCHIPEL_REPLICA_BLOB_URL", rt.settings.replica_blob_url)
    result = CliRunner().invoke(app, ["storage", *args, "--data", str(rt.settings.data_dir)])
    return result.exit_code, result.stdout
