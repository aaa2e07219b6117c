"""Demo data: three sites, their patients and CT / MR / MG studies, demo accounts and a demo DICOM node.

Passwords and TOTP secrets are generated on the first run, printed, and kept in ``DATA/demo-credentials.txt``
(mode 0600).
"""

from __future__ import annotations

import os

from rich.console import Console
from sqlalchemy import select

from archipel.platform import mfa
from archipel.platform.authn import User, create_user, find_user
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.models import DicomNode
from archipel.radiology.samples import ct_series, demo_patients, mammo_study, mr_series, to_bytes

SITES = ("CHU-NORD", "CLINIQUE-SUD", "CH-OUEST")
ACCOUNTS = (
    ("radiologue", "radiologist", "CHU-NORD"),
    ("pathologiste", "pathologist", "CHU-NORD"),
    ("lecteur2", "screening-reader", "CLINIQUE-SUD"),
    ("medecin", "treating-doctor", "CH-OUEST"),
    ("admin", "admin", ""),
)


def load_demo(rt: Runtime, out: Console) -> None:
    """Load the demo data set into ``rt`` (idempotent) and print how to log in."""
    archive = Archive(rt.db, rt.blobs, rt.settings.duplicate_policy)
    stored = 0
    for n, site in enumerate(SITES):
        for i, patient in enumerate(demo_patients(site, 3, start=1 + n * 10)):
            acc = f"{site[:3]}{i:04d}"
            key = f"demo/{site}/{patient.patient_id}"
            study = (
                ct_series(patient, 12, accession=acc + "1", rows=128, cols=128, key=key + "/1")
                + mr_series(patient, 6, accession=acc + "2", key=key + "/2")
                + (mammo_study(patient, accession=acc + "3", key=key + "/3") if patient.sex == "F" else [])
            )
            for ds in study:
                result = archive.store(to_bytes(ds), source_ae="DEMO", default_issuer=site)
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
    if lines:
        fd = os.open(creds_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write("\n".join(lines) + "\n")
    out.print(f"demo data loaded: {stored} new instances across sites {', '.join(SITES)}")
    out.print(f"demo accounts (user, role, password, TOTP otpauth URI) are in {creds_path}:")
    if creds_path.exists():
        out.print(creds_path.read_text())
    out.print(
        f"log in: POST http://{rt.settings.http_host}:{rt.settings.http_port}/api/auth/token "
        "with username, password and totp (a code from the otpauth URI); DICOM: AE DEMO_MODALITY from 127.0.0.1 "
        f"to {rt.settings.ae_title}@{rt.settings.dicom_port}"
    )
