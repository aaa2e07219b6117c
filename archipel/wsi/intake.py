"""The metadata a slide arrives with (upload form, tus ``Upload-Metadata``, drop-folder sidecar), validated.

Every way in goes through :func:`parse_metadata`, so that a slide is refused for the same reasons, with the same
words, whether it was posted, resumed or dropped.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from archipel.platform.db import Database
from archipel.platform.identity.intake import known_issuers


class SlideMetadataError(ValueError):
    """The slide's metadata is malformed or names something unknown; the message says which field and why."""


def _dicom_text(value: str, field: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit:
        raise ValueError(f"{field} has {len(value)} characters, at most {limit} are allowed")
    if "\\" in value or any(ord(c) < 32 for c in value):
        raise ValueError(f"{field} may not contain a backslash or control characters")
    return value


class SlideMetadata(BaseModel):
    """What the sender says about a slide: the patient (``issuer`` + ``patient_id``, required), the case's
    ``accession``, the slide's ``container_id`` (its barcode) and ``stain``, whether it is ``urgent``
    (a frozen section: it jumps the conversion queue), and the ``frozen_request`` it answers (then it is urgent
    whatever ``urgent`` says)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    patient_id: str = Field(min_length=1)
    issuer: str = Field(min_length=1)
    accession: str = ""
    container_id: str = ""
    stain: str = ""
    urgent: bool = False
    frozen_request: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _frozen_is_urgent(self) -> SlideMetadata:
        if self.frozen_request is not None:
            self.urgent = True
        return self

    @field_validator("patient_id")
    @classmethod
    def _patient_id(cls, v: str) -> str:
        return _dicom_text(v, "patient_id", 64)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        v = _dicom_text(v, "issuer", 64)
        if " " in v:
            raise ValueError("issuer is a site code without spaces")
        return v

    @field_validator("accession")
    @classmethod
    def _accession(cls, v: str) -> str:
        return _dicom_text(v, "accession", 16)

    @field_validator("container_id", "stain")
    @classmethod
    def _short_text(cls, v: str) -> str:
        return _dicom_text(v, "container_id / stain", 64)


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "metadata"
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "is required"
        elif err["type"] == "extra_forbidden":
            message = (
                "is not a known field (patient_id, issuer, accession, container_id, stain, urgent, "
                "frozen_request)"
            )
        parts.append(f"{where} {message}")
    return "; ".join(parts)


def parse_metadata(raw: bytes | str | dict[str, Any]) -> SlideMetadata:
    """The metadata from a JSON document (or an already decoded object); raises :class:`SlideMetadataError`."""
    if isinstance(raw, bytes | str):
        try:
            raw = json.loads(raw or b"")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SlideMetadataError(f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise SlideMetadataError("metadata must be a JSON object")
    try:
        return SlideMetadata.model_validate(raw)
    except ValidationError as exc:
        raise SlideMetadataError(_explain(exc)) from exc


def check_issuer(db: Database, meta: SlideMetadata) -> None:
    """Refuse an issuer that is not a registered site (the MPI would refuse its patient)."""
    with db.sessions() as s:
        known = known_issuers(s)
    if meta.issuer not in known:
        raise SlideMetadataError(
            f"unknown issuer {meta.issuer}: register the site with `archipel identity issuers add` first"
        )


class UnsupportedSlide(ValueError):
    """The file is not a slide format Archipel reads; the message names what it looks like."""


#: Leading bytes of the containers that slide formats use: TIFF / BigTIFF (SVS, NDPI, SCN, BIF, Philips TIFF,
#: OME-TIFF, generic pyramidal TIFF).
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def sniff_container(head: bytes) -> str:
    """The container (``tiff``, ``dicom``, ``sqlite``) from a file's first 132 bytes, else :class:`UnsupportedSlide`.

    This is only the quick refusal of what cannot be a slide (a PDF, a JPEG, a ZIP); whether a TIFF really holds
    a pyramid is the conversion's probe to say.
    """
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"SQLite format 3\x00"):
        return "sqlite"  # Sakura SVSLIDE
    what = "an empty file" if not head else f"a file starting with {head[:8]!r}"
    raise UnsupportedSlide(
        f"unsupported format: {what} is neither a TIFF-based slide (SVS, NDPI, SCN, BIF, Philips or OME-TIFF, "
        "pyramidal TIFF) nor DICOM WSI"
    )
