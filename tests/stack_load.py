"""Load for the scaled-out stack (:mod:`tests.stack`): DICOM instances sent by dcmtk ``storescu`` whose success
responses are read back from its output, and synthetic slides uploaded through the API and converted by workers."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes, uid
from archipel.wsi.synthetic import write_svs
from tests.dimse_peers import DCMTK_ENV, dataset_part
from tests.stack import SENDER_AET, SITE, Stack

PATIENT = SyntheticPatient(
    patient_id="SCALE0001", name="SCALEPATIENT^Alpha", birth_date="19700101", sex="F", issuer=SITE
)


def write_instances(
    folder: Path, count: int, per_study: int = 50, key: str = "scale"
) -> dict[str, list[Path]]:
    """``count`` small CT instances as Part-10 files, ``per_study`` to a study; returns the files by study UID.

    ``key`` makes the UIDs reproducible; give each batch of a run its own key."""
    folder.mkdir(parents=True, exist_ok=True)
    studies: dict[str, list[Path]] = {}
    for k in range(-(-count // per_study)):
        study_uid = uid(f"{key}/study/{k}")
        size = min(per_study, count - k * per_study)
        for ds in ct_series(
            PATIENT, size, study_uid=study_uid, accession=f"SC{k:05d}", rows=32, cols=32, key=f"{key}/{k}"
        ):
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            path.write_bytes(to_bytes(ds))
            studies.setdefault(study_uid, []).append(path)
    return studies


@dataclass
class StoreRun:
    """One ``storescu`` association sending ``files`` to one listener, its output kept in ``out``."""

    files: list[Path]
    port: int
    out: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreRun:
        with self.out.open("wb") as f:
            self.proc = subprocess.Popen(
                ["storescu", "-v", "-aet", SENDER_AET, "-aec", "ARCHIPEL", "127.0.0.1", str(self.port)]
                + [str(p) for p in self.files],
                stdout=f,
                stderr=subprocess.STDOUT,
                env=DCMTK_ENV,
            )
        return self

    def wait(self, timeout: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def acknowledged(self) -> list[Path]:
        """The files whose C-STORE got a success (or warning) response: what the archive promised to keep."""
        text = self.out.read_text(errors="replace") if self.out.exists() else ""
        done: list[Path] = []
        sending: Path | None = None
        for line in text.splitlines():
            if line.startswith("I: Sending file: "):
                sending = Path(line.removeprefix("I: Sending file: ").strip())
            elif line.startswith(
                ("I: Received Store Response (Success", "I: Received Store Response (Warning")
            ):
                if sending is not None:
                    done.append(sending)
                sending = None
        return done


def upload_slide(stack: Stack, api: int, path: Path, accession: str) -> str:
    """Upload a slide through API process ``api``; returns the slide id (its conversion job is queued)."""
    meta = {"patient_id": PATIENT.patient_id, "issuer": SITE, "accession": accession}
    with path.open("rb") as f:
        r = httpx.post(
            stack.api_url(api) + "/api/slides",
            headers=stack.headers("pathologist"),
            data={"metadata": json.dumps(meta)},
            files={"file": (path.name, f, "application/octet-stream")},
            timeout=60,
        )
    assert r.status_code in (200, 201, 202), r.text
    return str(r.json()["slide_id"])


def slide_state(stack: Stack, api: int, slide_id: str) -> dict[str, Any]:
    r = httpx.get(
        f"{stack.api_url(api)}/api/slides/{slide_id}", headers=stack.headers("pathologist"), timeout=10
    )
    r.raise_for_status()
    return dict(r.json())


def settled(state: dict[str, Any]) -> bool:
    """Whether a slide and its job are both finished (the job ends its bookkeeping after the slide is ready)."""
    job = state.get("job") or {}
    return state["status"] in ("ready", "failed") and job.get("state") in ("succeeded", "failed")


def write_slides(
    folder: Path, count: int, width: int = 1800, height: int = 1300, first_seed: int = 1
) -> list[Path]:
    """``count`` distinct synthetic SVS slides (240 px JPEG tiles), seeded from ``first_seed`` on."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds = range(first_seed, first_seed + count)
    return [write_svs(folder / f"slide{seed}.svs", width, height, tile=240, seed=seed) for seed in seeds]


@dataclass
class ArchiveCheck:
    """What the archive returns for the sent studies, through one API process."""

    missing: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    checked: int = 0


def check_retrievable(stack: Stack, api: int, expected: dict[str, list[Path]]) -> ArchiveCheck:
    """QIDO each study's instances and WADO the whole study; compare every expected file's data set bytes.

    ``expected`` maps study UIDs to the files that must be there (the DIMSE file meta is the archive's own)."""
    from tests.dicomweb_messages import read_multipart

    result = ArchiveCheck()
    headers = stack.headers("radiologist")
    base = stack.api_url(api) + "/dicom-web"
    for study_uid, files in expected.items():
        if not files:
            continue
        r = httpx.get(f"{base}/studies/{study_uid}/instances", headers=headers, timeout=30)
        assert r.status_code in (200, 204), r.text
        found = {i["00080018"]["Value"][0] for i in r.json()} if r.status_code == 200 else set()
        r = httpx.get(f"{base}/studies/{study_uid}", headers=headers, timeout=60)
        parts = {dataset_part(body) for _, body in read_multipart(r)} if r.status_code == 200 else set()
        for path in files:
            result.checked += 1
            sop = path.name.removesuffix(".dcm")
            if sop not in found:
                result.missing.append(sop)
            elif dataset_part(path.read_bytes()) not in parts:
                result.different.append(sop)
    return result
