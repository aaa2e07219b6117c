"""QIDO-RS latency on a large index: fill the index directly, then time queries through HTTP.

The blobs need not exist for QIDO, so the index is filled with SQLAlchemy Core bulk inserts (seconds for 100k
instances) rather than by sending objects.
"""

from __future__ import annotations

import random
import shutil
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert

from archipel.radiology.models import Instance, Patient, Series, Study
from archipel.radiology.samples import CT_IMAGE, uid
from tests.support import ArchipelServer

SITE = "BENCH"
FAMILIES = [
    "MARTIN",
    "BERNARD",
    "DUBOIS",
    "THOMAS",
    "ROBERT",
    "RICHARD",
    "PETIT",
    "DURAND",
    "LEROY",
    "MOREAU",
]
GIVENS = ["Claire", "Louis", "Anne", "Paul", "Marie", "Jean", "Sophie", "Luc", "Julie", "Marc"]
MODALITIES = ["CT", "MR", "CR", "US", "MG", "PT"]
INSTANCES_PER_SERIES = 10
SERIES_PER_STUDY = 2
STUDIES_PER_PATIENT = 2.5


@dataclass
class IndexShape:
    """What :func:`fill_index` wrote, for building queries that hit real rows."""

    patient_ids: list[str] = field(default_factory=list)
    study_uids: list[str] = field(default_factory=list)
    instances: int = 0


@dataclass
class QidoResult:
    """Latencies of one QIDO run, in milliseconds, overall and per kind of query."""

    instances: int
    queries: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    per_kind: dict[str, tuple[float, float]]
    #: Mean number of matches per query of each kind (a query that matches nothing proves little).
    matches: dict[str, float] = field(default_factory=dict)
    skipped: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "instances": self.instances,
            "queries": self.queries,
            "p50_ms": round(self.p50_ms, 2),
            "p95_ms": round(self.p95_ms, 2),
            "max_ms": round(self.max_ms, 2),
            "per_kind": {
                k: {
                    "p50_ms": round(a, 2),
                    "p95_ms": round(b, 2),
                    "mean_matches": round(self.matches.get(k, 0), 1),
                }
                for k, (a, b) in self.per_kind.items()
            },
            "skipped": self.skipped,
        }


def fill_index(index_file: Path, instances: int, seed: int = 7) -> IndexShape:
    """Insert patients, studies, series and ``instances`` instance rows into a migrated SQLite index."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    series_count = max(1, instances // INSTANCES_PER_SERIES)
    study_count = max(1, series_count // SERIES_PER_STUDY)
    patient_count = max(1, int(study_count / STUDIES_PER_PATIENT))
    shape = IndexShape(instances=instances)
    patients: list[dict[str, Any]] = []
    studies: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for p in range(1, patient_count + 1):
        pid = f"BEN{p:07d}"
        shape.patient_ids.append(pid)
        patients.append(
            {
                "id": p,
                "issuer": SITE,
                "patient_id": pid,
                "patient_name": f"{FAMILIES[p % 10]}{p % 97:02d}^{GIVENS[(p * 7) % 10]}",
                "birth_date": f"{1930 + p % 80}0{1 + p % 9}1{p % 10}",
                "sex": "F" if p % 2 else "M",
                "created_at": now,
            }
        )
    for s in range(1, study_count + 1):
        study_uid = uid(f"bench-qido/study/{s}")
        shape.study_uids.append(study_uid)
        first, second = rng.sample(MODALITIES, 2)
        day = datetime(2020, 1, 1, tzinfo=UTC).toordinal() + rng.randrange(6 * 365)
        studies.append(
            {
                "id": s,
                "study_uid": study_uid,
                "patient_pk": 1 + (s - 1) % patient_count,
                "study_date": datetime.fromordinal(day).strftime("%Y%m%d"),
                "study_time": "101500",
                "accession_number": f"ACC{s:08d}",
                "study_id": f"{s:08d}",
                "referring_physician": "REFERRER^Bench",
                "description": "BENCH STUDY",
                "modalities": "\\".join(sorted({first, second})),
                "site": SITE,
                "created_at": now,
                "updated_at": now,
                "_modalities": [first, second],
            }
        )
    for k in range(1, series_count + 1):
        study = studies[(k - 1) % study_count]
        series.append(
            {
                "id": k,
                "series_uid": uid(f"bench-qido/series/{k}"),
                "study_pk": study["id"],
                "modality": study["_modalities"][(k - 1) // study_count % 2],
                "series_number": 1 + (k - 1) // study_count,
                "description": "BENCH SERIES",
                "body_part": "CHEST",
                "performed_start_date": study["study_date"],
                "performed_start_time": "101500",
                "created_at": now,
            }
        )
    for i in range(1, instances + 1):
        rows.append(
            {
                "id": i,
                "sop_uid": uid(f"bench-qido/instance/{i}"),
                "series_pk": 1 + (i - 1) % series_count,
                "sop_class_uid": CT_IMAGE,
                "instance_number": 1 + (i - 1) // series_count,
                "transfer_syntax": "1.2.840.10008.1.2.1",
                "size": 524_288,
                "sha256": f"{i:064x}",
                "blob_key": f"{i:064x}",
                "rows": 512,
                "columns": 512,
                "number_of_frames": 1,
                "pixel_data_offset": 1024,
                "pixel_data_length": 524_288,
                "frame_index": None,
                "source_ae": "BENCH",
                "received_at": now,
            }
        )
    for study in studies:
        del study["_modalities"]
    engine = create_engine(f"sqlite:///{index_file}")
    with engine.begin() as c:
        c.execute(insert(Patient.__table__), patients)  # type: ignore[arg-type]
        c.execute(insert(Study.__table__), studies)  # type: ignore[arg-type]
        c.execute(insert(Series.__table__), series)  # type: ignore[arg-type]
        for start in range(0, len(rows), 10_000):
            c.execute(insert(Instance.__table__), rows[start : start + 10_000])  # type: ignore[arg-type]
    engine.dispose()
    return shape


def build_queries(shape: IndexShape, count: int, seed: int = 11) -> list[tuple[str, str]]:
    """``count`` (kind, path-and-query) pairs: study- and series-level, on keys a viewer or a PACS uses."""
    rng = random.Random(seed)
    studies = len(shape.study_uids)

    def study_date_range() -> str:
        start = datetime(2020, 1, 1).toordinal() + rng.randrange(6 * 365 - 31)
        a, b = datetime.fromordinal(start), datetime.fromordinal(start + 30)
        return f"{a:%Y%m%d}-{b:%Y%m%d}"

    makers = [
        ("study PatientID", lambda: f"/dicom-web/studies?PatientID={rng.choice(shape.patient_ids)}"),
        (
            "study PatientName*",
            lambda: f"/dicom-web/studies?PatientName={rng.choice(FAMILIES)}{rng.randrange(97):02d}*&limit=50",
        ),
        ("study StudyDate range", lambda: f"/dicom-web/studies?StudyDate={study_date_range()}&limit=100"),
        (
            "study ModalitiesInStudy",
            lambda: (
                f"/dicom-web/studies?ModalitiesInStudy={rng.choice(MODALITIES)}&limit=100"
                f"&offset={rng.randrange(0, max(1, studies // 4))}"
            ),
        ),
        (
            "study limit/offset",
            lambda: f"/dicom-web/studies?limit=100&offset={rng.randrange(max(1, studies))}",
        ),
        ("series of a study", lambda: f"/dicom-web/studies/{rng.choice(shape.study_uids)}/series"),
        (
            "series Modality",
            lambda: (
                f"/dicom-web/series?Modality={rng.choice(MODALITIES)}&limit=100"
                f"&offset={rng.randrange(0, max(1, studies // 4))}"
            ),
        ),
        ("series PatientID", lambda: f"/dicom-web/series?PatientID={rng.choice(shape.patient_ids)}"),
    ]
    return [(kind, make()) for kind, make in (makers[i % len(makers)] for i in range(count))]


def _percentiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94]


def run_qido(root: Path, instances: int, queries: int) -> QidoResult:
    """Fill a fresh index with ``instances`` rows, serve it, and time ``queries`` QIDO-RS requests."""
    data = root / "qido"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    server = ArchipelServer(data, env={"ARCHIPEL_DICOM_HOST": "127.0.0.1"})
    server.cli("db", "upgrade")
    started = time.perf_counter()
    shape = fill_index(data / "index.sqlite", instances)
    print(f"event=qido_index_filled instances={instances} seconds={time.perf_counter() - started:.1f}")
    server.add_user("bench-reader", "radiologist", SITE)
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers=server.headers("bench-reader"), timeout=30) as client:
            probe = client.get("/dicom-web/studies", params={"limit": "1"})
            if probe.status_code in (404, 405, 501):
                return QidoResult(
                    instances,
                    0,
                    0,
                    0,
                    0,
                    {},
                    skipped=f"QIDO-RS routes not available yet (GET /dicom-web/studies -> {probe.status_code})",
                )
            probe.raise_for_status()
            plan = build_queries(shape, queries)
            for _kind, path in plan[:10]:  # warm caches and connections; not measured
                client.get(path)
            latencies: dict[str, list[float]] = {}
            found: dict[str, list[int]] = {}
            for kind, path in plan:
                t0 = time.perf_counter()
                r = client.get(path)
                elapsed = (time.perf_counter() - t0) * 1000
                if r.status_code not in (200, 204):
                    raise RuntimeError(f"QIDO {path} answered {r.status_code}: {r.text[:200]}")
                latencies.setdefault(kind, []).append(elapsed)
                found.setdefault(kind, []).append(len(r.json()) if r.status_code == 200 else 0)
    finally:
        server.stop()
    every = [v for values in latencies.values() for v in values]
    p50, p95 = _percentiles(every)
    return QidoResult(
        instances=instances,
        queries=len(every),
        p50_ms=p50,
        p95_ms=p95,
        max_ms=max(every),
        per_kind={kind: _percentiles(values) for kind, values in latencies.items()},
        matches={kind: statistics.fmean(values) for kind, values in found.items()},
    )
