"""The study, series or instance a DICOMweb URL names: looked up in the index, checked by the access policy once
(site, care relationship, consent, confidentiality, break-the-glass), and handed to the routes as plain values
(no ORM objects cross into response generators).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi import HTTPException, Request, status
from sqlalchemy import select

from archipel.platform import access, audit
from archipel.platform.authn import Principal
from archipel.platform.http import guard
from archipel.platform.runtime import Runtime
from archipel.radiology.models import Instance, Series, Study
from archipel.radiology.visibility import study_owner


@dataclass(frozen=True)
class StoredInstance:
    """Where one instance's bytes are and how its pixel data is laid out in them."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    blob_key: str
    size: int
    rows: int | None
    columns: int | None
    number_of_frames: int
    pixel_data_offset: int | None
    pixel_data_length: int | None
    frame_index: str | None

    @property
    def is_encapsulated(self) -> bool:
        """Whether the pixel data is encapsulated (compressed fragments)."""
        return self.pixel_data_length == -1

    def fragments(self) -> list[list[tuple[int, int]]]:
        """Per frame, the ``(offset, length)`` spans of its fragments in the blob."""
        if not self.frame_index:
            return []
        return [[(int(o), int(n)) for o, n in frame] for frame in json.loads(self.frame_index)]

    def path(self) -> str:
        """The instance's path under ``/dicom-web``."""
        return f"/studies/{self.study_uid}/series/{self.series_uid}/instances/{self.sop_uid}"


@dataclass(frozen=True)
class Selection:
    """The instances a request is about, in series then instance number order."""

    study_uid: str
    instances: list[StoredInstance]


def dicomweb_base(request: Request) -> str:
    """Absolute URL of ``/dicom-web`` as the caller reached it, for RetrieveURL and BulkDataURI values.

    A proxy's ``X-Forwarded-Host``/``-Proto`` win. A ``Host`` header without a port gets the port the
    connection arrived on when that is not the scheme's default: dicomweb-client sends ``Host`` without the
    port, and URIs built from it alone would point at port 80.
    """
    headers = request.headers
    scheme = request.url.scheme
    forwarded = headers.get("x-forwarded-host", "").split(",")[0].strip()
    if forwarded:
        scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip() or scheme
        host = forwarded
    else:
        host = headers.get("host", "") or request.url.netloc
        server = request.scope.get("server")
        has_port = ":" in host.rsplit("]", 1)[-1]
        if not has_port and server and server[1] and server[1] != (443 if scheme == "https" else 80):
            host = f"{host}:{server[1]}"
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return f"{scheme}://{host}{root}/dicom-web"


def select_instances(
    rt: Runtime,
    principal: Principal,
    request: Request,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> Selection:
    """The instances under ``study_uid`` (narrowed to a series or one instance), after the access check.

    Raises 404 with a reason for an unknown UID or a series or instance that is not under the given parent,
    and 403 when the policy refuses. The decision is audited once for the whole request.
    """
    with rt.db.sessions() as s:
        owner = study_owner(s, study_uid)
        if owner is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no study {study_uid}")
        site, patient, codes = owner
        query = (
            select(Instance, Series.series_uid)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .where(Study.study_uid == study_uid)
            .order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
        )
        if series_uid is not None:
            if s.execute(select(Series.id).where(Series.series_uid == series_uid)).first() is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no series {series_uid}")
            query = query.where(Series.series_uid == series_uid)
        if sop_uid is not None:
            query = query.where(Instance.sop_uid == sop_uid)
        found = [stored_instance(study_uid, series, inst) for inst, series in s.execute(query)]
    if not found:
        if sop_uid is not None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no instance {sop_uid} in series {series_uid}")
        if series_uid is not None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no series {series_uid} in study {study_uid}")
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"study {study_uid} holds no instance")
    guard(
        rt,
        principal,
        access.READ,
        access.Resource(
            kind="study",
            site=site,
            patient=patient,
            ident=sop_uid or series_uid or study_uid,
            confidentiality=codes,
        ),
        event_type=audit.INSTANCES_ACCESSED,
        request=request,
    )
    return Selection(study_uid=study_uid, instances=found)


def stored_instance(study_uid: str, series_uid: str, i: Instance) -> StoredInstance:
    """What the retrieve paths need of the index row ``i`` (where its bytes are, its frames, its syntax)."""
    return StoredInstance(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=i.sop_uid,
        sop_class_uid=i.sop_class_uid,
        transfer_syntax=i.transfer_syntax,
        blob_key=i.blob_key,
        size=i.size,
        rows=i.rows,
        columns=i.columns,
        number_of_frames=i.number_of_frames,
        pixel_data_offset=i.pixel_data_offset,
        pixel_data_length=i.pixel_data_length,
        frame_index=i.frame_index,
    )
