"""Demo data for the workflows on top of the archive: a signed report and a draft in the document registry, a
STAT teleradiology request from a site without a radiologist, and a patient access code for the patient portal.

Each step is idempotent: running ``archipel demo`` again adds nothing twice (the access code excepted: a code is
shown only once, so a new one is issued on every run, and the earlier ones stay valid).
"""

from __future__ import annotations

from datetime import timedelta

from rich.console import Console
from sqlalchemy import select

from archipel.platform import patient_access
from archipel.platform.authn import Principal
from archipel.platform.db import utcnow
from archipel.platform.runtime import Runtime
from archipel.radiology import documents, telerad
from archipel.radiology.documents_models import Document
from archipel.radiology.models import Patient, Study
from archipel.radiology.samples import SyntheticPatient
from archipel.radiology.telerad_models import ReadingRequest

#: LOINC 18748-4: Diagnostic imaging study (a radiology report).
REPORT_TYPE = ("18748-4", "Diagnostic imaging study")
DEMO_ORDER = "DEMO-TELERAD-1"


def _ct_study(rt: Runtime, patient: SyntheticPatient) -> Study | None:
    with rt.db.sessions() as s:
        return s.execute(
            select(Study)
            .join(Patient, Study.patient_pk == Patient.id)
            .where(Patient.issuer == patient.issuer, Patient.patient_id == patient.patient_id)
            .where(Study.modalities.contains("CT"))
        ).scalar_one_or_none()


def _reports(rt: Runtime, patient: SyntheticPatient, study: Study) -> int:
    """A signed CT report and the draft of the MR report, by the demo radiologist."""
    with rt.db.sessions() as s:
        known = s.execute(select(Document.id).where(Document.source == "demo")).first()
    if known is not None:
        return 0
    radiologist = Principal("radiologue", "radiologist", patient.issuer)
    common = dict(
        issuer=patient.issuer,
        patient_id=patient.patient_id,
        type_code=REPORT_TYPE[0],
        type_display=REPORT_TYPE[1],
        content_type="text/plain",
        author="radiologue",
        organisation=patient.issuer,
        site=patient.issuer,
        source="demo",
    )
    signed = documents.register(
        rt.db,
        rt.blobs,
        radiologist,
        title="Scanner thoracique : compte rendu",
        content=(
            "Indication : toux persistante.\nRésultat : pas de nodule pulmonaire, pas d'épanchement.\n"
            "Conclusion : examen normal."
        ).encode(),
        study_uids=[study.study_uid],
        **common,  # type: ignore[arg-type]
    )
    documents.sign(rt.db, radiologist, signed.id)
    documents.register(
        rt.db,
        rt.blobs,
        radiologist,
        title="IRM : compte rendu (brouillon)",
        content=b"Brouillon en cours de relecture.",
        **common,  # type: ignore[arg-type]
    )
    return 2


def _telerad_request(rt: Runtime, patient: SyntheticPatient, study: Study) -> bool:
    """A STAT reading request from the RIS of a site without a radiologist."""
    with rt.db.sessions() as s:
        if s.execute(select(ReadingRequest.id).where(ReadingRequest.placer_order == DEMO_ORDER)).first():
            return False
    ris = Principal("ris-demo", "", patient.issuer, kind="node")
    telerad.create_request(
        rt.db,
        ris,
        issuer=patient.issuer,
        patient_id=patient.patient_id,
        accession_number=study.accession_number or DEMO_ORDER,
        study_uid=study.study_uid,
        requesting_site=patient.issuer,
        physician={"name": "Dr Urgences", "email": "urgences@example.org", "username": "medecin"},
        clinical_info="Chute, douleur thoracique.",
        justification="Recherche de fracture costale ou de pneumothorax.",
        priority="stat",
        placer_order=DEMO_ORDER,
        source="demo",
    )
    return True


def load_workflows(rt: Runtime, out: Console, reported: SyntheticPatient, urgent: SyntheticPatient) -> None:
    """Load the workflows' demo data and print how to see it."""
    base = f"http://{rt.settings.http_host}:{rt.settings.http_port}"
    study = _ct_study(rt, reported)
    if study is not None:
        added = _reports(rt, reported, study)
        if added:
            out.print(f"demo reports: {added} documents for patient {reported.issuer}/{reported.patient_id}")
    urgent_study = _ct_study(rt, urgent)
    if urgent_study is not None and _telerad_request(rt, urgent, urgent_study):
        out.print(f"demo teleradiology request (STAT): {base}/app/telerad-worklist.html as radiologue")
    with rt.db.write() as s:
        code = patient_access.issue_access_code(
            s,
            f"{reported.issuer}/{reported.patient_id}",
            "email",
            "patient.demo@example.org",
            now=utcnow(),
            valid_for=timedelta(days=rt.settings.patient_code_days),
            created_by="demo",
        )
    out.print(
        f"patient portal: {base}/ (patient tab) with access code {code}; the one-time code arrives in "
        f"{rt.settings.data_dir / 'outbox'}"
    )
    out.print(f"professional home: {base}/ (professional tab), then search, timeline, worklists")
