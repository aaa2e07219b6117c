"""Demo data: three sites, their patients and CT / MR / MG studies, a patient seen at two sites (one master in
the MPI), care relationships, a slide to convert, demo accounts and a demo DICOM node; then the workflows' data
(reports, a teleradiology request, a patient access code: ``demo_workflows``).

Passwords and TOTP secrets are generated on the first run, printed, and kept in ``DATA/demo-credentials.txt``
(mode 0600).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from rich.console import Console
from sqlalchemy import select

from archipel.demo_workflows import load_workflows
from archipel.platform import care, mfa
from archipel.platform.authn import User, create_user, find_user
from archipel.platform.identity.service import master_of
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.models import DicomNode
from archipel.radiology.samples import (
    SyntheticPatient,
    ct_series,
    demo_patients,
    mammo_study,
    mr_series,
    to_bytes,
)
from archipel.wsi.intake import SlideMetadata
from archipel.wsi.models import Slide
from archipel.wsi.slides import hash_file, register_slide
from archipel.wsi.synthetic import write_svs

SITES = ("CHU-NORD", "CLINIQUE-SUD", "CH-OUEST")
ACCOUNTS = (
    ("radiologue", "radiologist", "CHU-NORD"),
    ("pathologiste", "pathologist", "CHU-NORD"),
    ("lecteur2", "screening-reader", "CLINIQUE-SUD"),
    ("medecin", "treating-doctor", "CH-OUEST"),
    ("officier", "identity-officer", ""),
    ("auditeur", "auditor", ""),
    ("admin", "admin", ""),
)
#: The demo's slide: a small synthetic Aperio SVS, converted by ``archipel serve`` when it starts.
SLIDE_ACCESSION = "CHU-PATH-1"


def load_demo(rt: Runtime, out: Console) -> None:
    """Load the demo data set into ``rt`` (idempotent) and print how to log in."""
    archive = Archive(rt.db, rt.blobs, rt.settings.duplicate_policy)
    stored = 0
    patients = [p for n, site in enumerate(SITES) for p in demo_patients(site, 3, start=1 + n * 10)]
    # The first patient of the first site was also seen at the third, under that site's own patient ID.
    traveller = dataclasses.replace(patients[0], patient_id="CHO009001", issuer=SITES[2])
    for patient in [*patients, traveller]:
        acc = f"{patient.issuer[:3]}{patient.patient_id[-4:]}"
        key = f"demo/{patient.issuer}/{patient.patient_id}"
        study = (
            ct_series(patient, 12, accession=acc + "1", rows=128, cols=128, key=key + "/1")
            + mr_series(patient, 6, accession=acc + "2", key=key + "/2")
            + (mammo_study(patient, accession=acc + "3", key=key + "/3") if patient.sex == "F" else [])
        )
        for ds in study:
            result = archive.store(to_bytes(ds), source_ae="DEMO", default_issuer=patient.issuer)
            stored += result.status == "stored"
    creds_path = rt.settings.data_dir / "demo-credentials.txt"
    lines: list[str] = []
    with rt.db.write() as s:
        for name, role, site in ACCOUNTS:
            if s.execute(select(User).where(User.username == name)).scalar_one_or_none() is None:
                password = create_user(s, name, role, None, site)
                user = find_user(s, name)
                assert user is not None
                uri = mfa.enrol(user, rt.settings.signing_key(), rt.settings.totp_issuer).uri
                lines.append(f"{name}\t{role}\t{password}\t{uri}")
        if s.execute(select(DicomNode).where(DicomNode.ae_title == "DEMO_MODALITY")).first() is None:
            s.add(DicomNode(ae_title="DEMO_MODALITY", host="127.0.0.1", port=11113, site=SITES[0]))
    _care_relationships(rt, patients)
    slide_id = _slide(rt, patients[0])
    if lines:
        fd = os.open(creds_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write("\n".join(lines) + "\n")
    out.print(f"demo data loaded: {stored} new instances across sites {', '.join(SITES)}")
    out.print(f"demo accounts (user, role, password, TOTP otpauth URI) are in {creds_path}:")
    if creds_path.exists():
        out.print(creds_path.read_text())
    out.print(f"demo slide (as pathologiste): /tiles/{slide_id}.dzi and /iiif/{slide_id}/info.json")
    out.print(
        f"web viewer: http://{rt.settings.http_host}:{rt.settings.http_port}/app/viewer.html?slide={slide_id}"
    )
    load_workflows(rt, out, reported=patients[0], urgent=patients[6])
    out.print(
        f"log in: POST http://{rt.settings.http_host}:{rt.settings.http_port}/api/auth/token "
        "with username, password and totp (a code from the otpauth URI); DICOM: AE DEMO_MODALITY from 127.0.0.1 "
        f"to {rt.settings.ae_title}@{rt.settings.dicom_port}"
    )


def _care_relationships(rt: Runtime, patients: list[SyntheticPatient]) -> None:
    """The treating doctor follows the patient seen at two sites; the second reader reads the women's screening."""
    wanted: list[tuple[str, int, str, str]] = []
    first = master_of(rt.db, patients[0].issuer, patients[0].patient_id)
    if first is not None:
        wanted.append(("medecin", first, "treating", "demo: follows this patient across sites"))
    for p in patients:
        master = master_of(rt.db, p.issuer, p.patient_id)
        if master is not None and p.sex == "F" and p.issuer != "CLINIQUE-SUD":
            wanted.append(("lecteur2", master, "reading-assignment", "demo: screening second reading"))
    with rt.db.write() as s:
        known = {
            (r.professional, r.master_id, r.kind) for r in s.execute(select(care.CareRelationship)).scalars()
        }
        for professional, master, kind, context in wanted:
            if (professional, master, kind) not in known:
                care.record(s, professional, master, kind, recorded_by="demo", context=context)


def _slide(rt: Runtime, patient: SyntheticPatient) -> str:
    """Register one small synthetic slide for ``patient`` and return its id; ``archipel serve`` converts it when it
    starts."""
    with rt.db.sessions() as s:
        known = s.execute(select(Slide.id).where(Slide.accession == SLIDE_ACCESSION)).scalar_one_or_none()
    if known is not None:
        return known
    with tempfile.TemporaryDirectory(dir=rt.settings.data_dir) as tmp:
        path = write_svs(Path(tmp) / "demo.svs", 4000, 3000, seed=7)
        sha256, size = hash_file(path)
        meta = SlideMetadata(
            patient_id=patient.patient_id,
            issuer=patient.issuer,
            accession=SLIDE_ACCESSION,
            container_id="CHU-PATH-1-A1",
            stain="HE",
        )
        return register_slide(
            rt,
            path,
            sha256,
            size,
            meta,
            filename="demo.svs",
            origin="demo",
            created_by="pathologiste",
            role="pathologist",
        ).slide_id
