"""Query and retrieve against the region's other PACS: C-FIND, then C-MOVE (to our listener) or C-GET (on the
same association), or DICOMweb QIDO-RS and WADO-RS.

Every network step is bounded by the node's timeout: the TCP connection, the association (ACSE), each DIMSE
message and the socket itself, and for DICOMweb the HTTP connect, read and write. A node that is down or that
accepts and never answers therefore fails with a :class:`RemoteError` within a few timeouts, never hangs. The
functions here do no auditing and no access control: the prefetch job does both around each call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from archipel.radiology.archive import Archive
from archipel.radiology.dimse.store import received_part10

log = logging.getLogger("archipel.prefetch")

#: Storage classes asked for on a C-GET association (a requestor may propose at most 128 contexts).
GET_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX processing
    "1.2.840.10008.5.1.4.1.1.1.2",  # MG presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # MG processing
    "1.2.840.10008.5.1.4.1.1.13.1.3",  # breast tomosynthesis
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.2.1",  # enhanced CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.4.1",  # enhanced MR
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.3.1",  # US multi-frame
    "1.2.840.10008.5.1.4.1.1.7",  # secondary capture
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.77.1.6",  # VL whole slide microscopy
    "1.2.840.10008.5.1.4.1.1.66.4",  # segmentation
    "1.2.840.10008.5.1.4.1.1.88.11",  # basic text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # comprehensive SR
    "1.2.840.10008.5.1.4.1.1.104.1",  # encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.11.1",  # grayscale softcopy presentation state
)
GET_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
)
SUCCESS, WARNING = 0x0000, 0xB000
PENDING = frozenset({0xFF00, 0xFF01})
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


class RemoteError(Exception):
    """A query or retrieve against a remote node failed; ``reason`` says why, in words an operator can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RemoteTarget:
    """A remote node as the prefetch job uses it (plain values, no database row)."""

    node_pk: int
    ae_title: str
    host: str
    port: int
    site: str
    retrieve: str
    dicomweb_url: str = ""
    timeout: float = 10.0
    attempts: int = 3

    @property
    def label(self) -> str:
        """How logs and reasons name the node."""
        return (
            self.dicomweb_url if self.retrieve == "dicomweb" else f"{self.ae_title}@{self.host}:{self.port}"
        )


@dataclass(frozen=True)
class RemoteStudy:
    """One study a remote node answered with."""

    study_uid: str
    study_date: str
    modalities: tuple[str, ...]
    description: str
    instances: int | None
    #: The PatientID the node answered with ("" when it did not return it).
    patient_id: str = ""


#: Characters that C-FIND and QIDO-RS read as wildcards: a PatientID holding one would match other patients.
WILDCARDS = frozenset("*?")


def queryable(patient_id: str) -> bool:
    """Whether ``patient_id`` can be matched exactly by C-FIND and QIDO-RS (no wildcard, no backslash)."""
    return bool(patient_id) and not (WILDCARDS & set(patient_id)) and "\\" not in patient_id


def _ae(calling_ae: str, timeout: float) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


def _associate(ae: AE, target: RemoteTarget, **kwargs: Any) -> Association:
    assoc = ae.associate(target.host, target.port, ae_title=target.ae_title, **kwargs)
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        raise RemoteError(f"association rejected by {target.label}")
    raise RemoteError(
        f"no association with {target.label} (down, unreachable or no answer in {target.timeout:g} s)"
    )


def _study_query(patient_id: str, date_from: str, date_to: str, study_uid: str = "") -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = f"{date_from}-{date_to}" if (date_from or date_to) else ""
    ds.StudyTime = ""
    ds.ModalitiesInStudy = ""
    ds.StudyDescription = ""
    ds.NumberOfStudyRelatedInstances = ""
    return ds


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value) if value is not None else ""


def _modalities(value: object) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.split("\\") if v)
    return tuple(str(v) for v in value)  # type: ignore[attr-defined]


def relevant(study: RemoteStudy, modalities: tuple[str, ...], date_from: str, date_to: str) -> bool:
    """Whether ``study`` matches the wanted modalities (any of them; none: any) and date range (inclusive).

    Applied to every answer: not every PACS honours a modality list or a date range in its query matching.
    """
    if modalities and study.modalities and not set(modalities) & set(study.modalities):
        return False
    if date_from and study.study_date and study.study_date < date_from:
        return False
    return not (date_to and study.study_date and study.study_date > date_to)


def find_studies(
    target: RemoteTarget, calling_ae: str, patient_id: str, date_from: str = "", date_to: str = ""
) -> list[RemoteStudy]:
    """The studies ``target`` holds for ``patient_id`` (its own PatientID), by C-FIND or QIDO-RS.

    Raises :class:`RemoteError` when the node cannot be reached, does not answer in time, or refuses.
    """
    if not queryable(patient_id):
        raise RemoteError(
            f"PatientID {patient_id!r} cannot be queried exactly (empty, wildcard or backslash)"
        )
    if target.retrieve == "dicomweb":
        found = _qido_studies(target, patient_id, date_from, date_to)
    else:
        found = _cfind_studies(target, calling_ae, patient_id, date_from, date_to)
    # A PACS may match loosely (case, spaces, its own fuzzy search): keep only the patient asked for.
    return [s for s in found if s.study_uid and s.patient_id in ("", patient_id)]


def _cfind_studies(
    target: RemoteTarget, calling_ae: str, patient_id: str, date_from: str, date_to: str
) -> list[RemoteStudy]:
    ae = _ae(calling_ae, target.timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = _associate(ae, target)
    found: list[RemoteStudy] = []
    try:
        final: int | None = None
        for status, identifier in assoc.send_c_find(
            _study_query(patient_id, date_from, date_to), StudyRootQueryRetrieveInformationModelFind
        ):
            if not status:
                raise RemoteError(f"C-FIND to {target.label}: no answer in {target.timeout:g} s")
            code = int(status.Status)
            if code in PENDING and identifier is not None:
                count = _text(identifier, "NumberOfStudyRelatedInstances")
                found.append(
                    RemoteStudy(
                        study_uid=_text(identifier, "StudyInstanceUID"),
                        study_date=_text(identifier, "StudyDate"),
                        modalities=_modalities(identifier.get("ModalitiesInStudy")),
                        description=_text(identifier, "StudyDescription"),
                        instances=int(count) if count.isdigit() else None,
                        patient_id=_text(identifier, "PatientID"),
                    )
                )
            elif code not in PENDING:
                final = code
        if final != SUCCESS:
            raise RemoteError(f"C-FIND to {target.label} ended with status 0x{final or 0:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return [s for s in found if s.study_uid]


def retrieve_study(target: RemoteTarget, calling_ae: str, study_uid: str, archive: Archive) -> int:
    """Retrieve one study from ``target`` into the archive; return the number of instances sent to us.

    C-MOVE asks the node to send to ``calling_ae`` (our listener, which the node must know as a destination);
    C-GET and WADO-RS store what arrives through ``archive`` with the node's site as issuer.
    """
    if target.retrieve == "dicomweb":
        return _wado_study(target, study_uid, archive)
    if target.retrieve == "get":
        return _get_study(target, calling_ae, study_uid, archive)
    return _move_study(target, calling_ae, study_uid)


def _retrieve_identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


def _sub_operations(target: RemoteTarget, kind: str, responses: Any) -> int:
    """Drain C-MOVE / C-GET responses; the number of completed sub-operations, or :class:`RemoteError`."""
    completed, failed, final, comment = 0, 0, None, ""
    for status, _identifier in responses:
        if not status:
            raise RemoteError(f"{kind} from {target.label}: no answer in {target.timeout:g} s")
        code = int(status.Status)
        completed = int(status.get("NumberOfCompletedSuboperations", completed) or completed)
        failed = int(status.get("NumberOfFailedSuboperations", failed) or failed)
        if code not in PENDING:
            final = code
            comment = f" ({_text(status, 'ErrorComment')})" if "ErrorComment" in status else ""
    if final not in (SUCCESS, WARNING):
        raise RemoteError(f"{kind} from {target.label} ended with status 0x{final or 0:04X}{comment}")
    if failed:
        raise RemoteError(f"{kind} from {target.label}: {failed} of {completed + failed} instances failed")
    return completed


def _move_study(target: RemoteTarget, calling_ae: str, study_uid: str) -> int:
    ae = _ae(calling_ae, target.timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = _associate(ae, target)
    try:
        responses = assoc.send_c_move(
            _retrieve_identifier(study_uid), calling_ae, StudyRootQueryRetrieveInformationModelMove
        )
        return _sub_operations(target, "C-MOVE", responses)
    finally:
        if assoc.is_established:
            assoc.release()


def _get_study(target: RemoteTarget, calling_ae: str, study_uid: str, archive: Archive) -> int:
    ae = _ae(calling_ae, target.timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in GET_STORAGE_CLASSES:
        ae.add_requested_context(sop_class, list(GET_TRANSFER_SYNTAXES))
    roles = [build_role(sop_class, scp_role=True) for sop_class in GET_STORAGE_CLASSES]
    refused: list[str] = []

    def on_store(event: evt.Event) -> int:
        try:
            archive.store(received_part10(event), source_ae=target.ae_title, default_issuer=target.site)
        except Exception as exc:  # the node is told, and the retrieve fails with the reason
            refused.append(str(exc))
            return 0xC000
        return SUCCESS

    handlers: list[Any] = [(evt.EVT_C_STORE, on_store)]
    assoc = _associate(ae, target, ext_neg=roles, evt_handlers=handlers)
    try:
        responses = assoc.send_c_get(
            _retrieve_identifier(study_uid), StudyRootQueryRetrieveInformationModelGet
        )
        done = _sub_operations(target, "C-GET", responses)
    finally:
        if assoc.is_established:
            assoc.release()
    if refused:
        raise RemoteError(f"C-GET from {target.label}: {len(refused)} instances refused here: {refused[0]}")
    return done


def _http(target: RemoteTarget) -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(target.timeout), follow_redirects=False)


def _http_error(target: RemoteTarget, what: str, exc: Exception) -> RemoteError:
    if isinstance(exc, httpx.TimeoutException):
        return RemoteError(f"{what} {target.label}: no answer in {target.timeout:g} s")
    if isinstance(exc, httpx.HTTPStatusError):
        return RemoteError(f"{what} {target.label}: HTTP {exc.response.status_code}")
    return RemoteError(f"{what} {target.label}: {type(exc).__name__}: {exc}")


def _tag(item: dict[str, Any], tag: str) -> list[Any]:
    return list(item.get(tag, {}).get("Value", []))


def _qido_studies(target: RemoteTarget, patient_id: str, date_from: str, date_to: str) -> list[RemoteStudy]:
    params = {"PatientID": patient_id, "includefield": "00080061,00201208,00081030,00080020,00100020"}
    if date_from or date_to:
        params["StudyDate"] = f"{date_from}-{date_to}"
    try:
        with _http(target) as client:
            r = client.get(
                f"{target.dicomweb_url.rstrip('/')}/studies",
                params=params,
                headers={"Accept": "application/dicom+json"},
            )
            r.raise_for_status()
            items = r.json() if r.content else []
    except (httpx.HTTPError, ValueError) as exc:
        raise _http_error(target, "QIDO-RS to", exc) from exc
    found = []
    for item in items:
        uid = (_tag(item, "0020000D") or [""])[0]
        count = (_tag(item, "00201208") or [None])[0]
        found.append(
            RemoteStudy(
                study_uid=str(uid),
                study_date=str((_tag(item, "00080020") or [""])[0]),
                modalities=tuple(str(m) for m in _tag(item, "00080061")),
                description=str((_tag(item, "00081030") or [""])[0]),
                instances=int(count) if count is not None else None,
                patient_id=str((_tag(item, "00100020") or [""])[0]),
            )
        )
    return [s for s in found if s.study_uid]


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The part bodies of a ``multipart/related`` response (its boundary taken from ``content_type``)."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise ValueError(f"no boundary in content type {content_type!r}")
    delimiter = b"--" + boundary.encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        _headers, sep, content = chunk.partition(b"\r\n\r\n")
        if sep:
            parts.append(content[:-2] if content.endswith(b"\r\n") else content)
    return parts


def _wado_study(target: RemoteTarget, study_uid: str, archive: Archive) -> int:
    url = f"{target.dicomweb_url.rstrip('/')}/studies/{study_uid}"
    try:
        with _http(target) as client:
            r = client.get(url, headers={"Accept": f"{DICOM_MULTIPART}; transfer-syntax=*"})
            if r.status_code == 406:  # a server that does not serve as stored: take its default syntax
                r = client.get(url, headers={"Accept": DICOM_MULTIPART})
            r.raise_for_status()
            parts = split_multipart(r.content, r.headers.get("content-type", ""))
    except (httpx.HTTPError, ValueError) as exc:
        raise _http_error(target, "WADO-RS from", exc) from exc
    for part in parts:
        try:
            archive.store(part, source_ae=target.ae_title, default_issuer=target.site)
        except Exception as exc:
            raise RemoteError(f"WADO-RS from {target.label}: an instance was refused here: {exc}") from exc
    return len(parts)
