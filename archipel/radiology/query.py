"""The query engine shared by QIDO-RS and C-FIND: matching keys in, result rows out.

A :class:`Query` names a level (PATIENT, STUDY, SERIES, IMAGE), matching keys by keyword, the sites the caller may
see, and paging. :func:`search` turns it into one SQL statement over the index, with the caller's read scope
(sites, care relationships, consent, confidentiality: ``visibility``) inside the WHERE clause so that counts and
paging never reveal hidden studies, and then adds the related-object counts for
the whole page with one grouped query per count. Rows come back as plain dicts keyed by DICOM keyword;
:func:`to_json` and :func:`to_dataset` render them for QIDO-RS and for C-FIND.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any, TypeVarTuple

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from sqlalchemy import ColumnElement, Select, exists, func, or_, select
from sqlalchemy.orm import Session

from archipel.platform.access import ReadScope
from archipel.platform.db import Database
from archipel.radiology import matching, visibility
from archipel.radiology.matching import MatchError
from archipel.radiology.models import Instance, Patient, Series, Study

__all__ = ["ATTRIBUTES", "Attribute", "Level", "MatchError", "Query", "UnknownAttribute", "search"]


class Level(StrEnum):
    """Query/Retrieve level; IMAGE is the instance level."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        """0 for PATIENT down to 3 for IMAGE."""
        return _DEPTH[self]


_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}


@dataclass(frozen=True)
class Attribute:
    """An attribute the engine knows: its level, VR and index column (``None``: computed, return only)."""

    keyword: str
    level: Level
    column: Any = None

    @property
    def tag(self) -> int:
        """The attribute's tag as an integer."""
        return int(tag_for_keyword(self.keyword) or 0)

    @property
    def vr(self) -> str:
        """The attribute's value representation."""
        return str(dictionary_VR(self.tag))

    @property
    def matchable(self) -> bool:
        """Whether the attribute can be a matching key (not only returned)."""
        return self.column is not None or self.keyword == "ModalitiesInStudy"


class UnknownAttribute(MatchError):
    """A name that is neither a DICOM keyword nor a tag."""


_P, _ST, _SE, _IM = Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE
ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("PatientName", _P, Patient.patient_name),
    Attribute("PatientID", _P, Patient.patient_id),
    Attribute("IssuerOfPatientID", _P, Patient.issuer),
    Attribute("PatientBirthDate", _P, Patient.birth_date),
    Attribute("PatientSex", _P, Patient.sex),
    Attribute("NumberOfPatientRelatedStudies", _P),
    Attribute("NumberOfPatientRelatedSeries", _P),
    Attribute("NumberOfPatientRelatedInstances", _P),
    Attribute("StudyInstanceUID", _ST, Study.study_uid),
    Attribute("StudyDate", _ST, Study.study_date),
    Attribute("StudyTime", _ST, Study.study_time),
    Attribute("AccessionNumber", _ST, Study.accession_number),
    Attribute("StudyID", _ST, Study.study_id),
    Attribute("ReferringPhysicianName", _ST, Study.referring_physician),
    Attribute("StudyDescription", _ST, Study.description),
    Attribute("ModalitiesInStudy", _ST),
    Attribute("NumberOfStudyRelatedSeries", _ST),
    Attribute("NumberOfStudyRelatedInstances", _ST),
    Attribute("SeriesInstanceUID", _SE, Series.series_uid),
    Attribute("Modality", _SE, Series.modality),
    Attribute("SeriesNumber", _SE, Series.series_number),
    Attribute("SeriesDescription", _SE, Series.description),
    Attribute("BodyPartExamined", _SE, Series.body_part),
    Attribute("PerformedProcedureStepStartDate", _SE, Series.performed_start_date),
    Attribute("PerformedProcedureStepStartTime", _SE, Series.performed_start_time),
    Attribute("NumberOfSeriesRelatedInstances", _SE),
    Attribute("SOPInstanceUID", _IM, Instance.sop_uid),
    Attribute("SOPClassUID", _IM, Instance.sop_class_uid),
    Attribute("InstanceNumber", _IM, Instance.instance_number),
    Attribute("Rows", _IM, Instance.rows),
    Attribute("Columns", _IM, Instance.columns),
    Attribute("NumberOfFrames", _IM, Instance.number_of_frames),
    Attribute("AvailableTransferSyntaxUID", _IM, Instance.transfer_syntax),
)
BY_KEYWORD: dict[str, Attribute] = {a.keyword: a for a in ATTRIBUTES}
#: Date and time keys matched together when the date is a range (combined date-time matching).
DATE_TIME_PAIRS = (
    ("StudyDate", "StudyTime"),
    ("PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"),
)
_Row = TypeVarTuple("_Row")
_KEY_COLUMN: dict[Level, Any] = {_P: Patient.id, _ST: Study.id, _SE: Series.id, _IM: Instance.id}


def resolve(name: str) -> tuple[str, Attribute | None]:
    """The DICOM keyword a query parameter names (keyword or 8 hex digits) and the engine's attribute, if any.

    Raises :class:`UnknownAttribute` for a name that is neither.
    """
    name = name.strip()
    keyword = ""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        keyword = keyword_for_tag(int(name, 16))
    elif tag_for_keyword(name) is not None:
        keyword = name
    if not keyword:
        raise UnknownAttribute(f"{name!r} is not a DICOM attribute keyword or tag")
    return keyword, BY_KEYWORD.get(keyword)


@dataclass
class Query:
    """What to look for: level, matching keys (keyword → value as sent), visibility and paging."""

    level: Level
    keys: dict[str, str] = field(default_factory=dict)
    #: Sites whose studies may match; ``None`` means every site (see ``access.visible_sites``).
    sites: frozenset[str] | None = None
    #: What the caller may read (``access.read_scope``), applied in the SQL; ``None`` means no restriction.
    scope: ReadScope | None = None
    #: QIDO ``fuzzymatching=true``: person names match at the start of any name component.
    fuzzy: bool = False
    #: Match a date range and a time range as one date-time range (PS3.4 C.2.2.2.5.1).
    combined_datetime: bool = True
    #: Keywords whose counts or values the caller will render; counts are only computed when asked.
    returns: frozenset[str] = frozenset()
    limit: int | None = None
    offset: int = 0

    def check(self) -> None:
        """Raise :class:`MatchError` for a key the engine cannot match at this level, or a value it cannot use."""
        for keyword, value in self.keys.items():
            if matching.is_universal(value):
                continue  # a universal key only asks for the attribute to be returned
            attr = BY_KEYWORD.get(keyword)
            if attr is None:
                raise MatchError(f"{keyword}: matching on this attribute is not supported")
            if attr.level.depth > self.level.depth:
                raise MatchError(
                    f"{keyword} is a {attr.level.value}-level attribute; it cannot match at "
                    f"{self.level.value} level"
                )
            if not attr.matchable:
                raise MatchError(f"{keyword} can be returned but not used as a matching key")
        if self.limit is not None and self.limit < 0:
            raise MatchError(f"limit must not be negative ({self.limit})")
        if self.offset < 0:
            raise MatchError(f"offset must not be negative ({self.offset})")
        conditions(self)


def _modalities_condition(value: str) -> ColumnElement[bool] | None:
    """ModalitiesInStudy (values split on backslash or comma): literal values against the study's modality
    list, wildcards against its series."""
    parts = [p.strip() for p in re.split(r"[\\,]", value) if p.strip()]
    if not parts or any(matching.is_universal(p) for p in parts):
        return None
    literal_values = [p for p in parts if not matching.has_wildcard(p)]
    patterns = [p for p in parts if matching.has_wildcard(p)]
    found: list[ColumnElement[bool]] = []
    if literal_values:
        found.append(matching.list_contains(Study.modalities, literal_values))
    inner = matching.multi_value_match(
        Series.modality, "\\".join(patterns), keyword="ModalitiesInStudy", vr="CS"
    )
    if inner is not None:
        found.append(exists(select(Series.id).where(Series.study_pk == Study.id, inner)))
    return found[0] if len(found) == 1 else or_(*found)


def _condition(attr: Attribute, value: str, fuzzy: bool) -> ColumnElement[bool] | None:
    kw, vr, column = attr.keyword, attr.vr, attr.column
    if kw == "ModalitiesInStudy":
        return _modalities_condition(value)
    if vr == "PN":
        return matching.name_match(column, value, fuzzy=fuzzy)
    if vr == "UI":
        return matching.uid_match(column, value, keyword=kw)
    if vr in ("DA", "TM"):
        return matching.range_match(column, value, keyword=kw, vr=vr)
    if vr in ("IS", "US", "UL", "SL", "SS"):
        return matching.number_match(column, value, keyword=kw)
    return matching.text_match(column, value, keyword=kw, vr=vr)


def conditions(query: Query) -> list[ColumnElement[bool]]:
    """The WHERE conditions for the query's matching keys (not the site filter)."""
    keys = {k: v for k, v in query.keys.items() if not matching.is_universal(v)}
    out: list[ColumnElement[bool]] = []
    if query.combined_datetime:
        for date_kw, time_kw in DATE_TIME_PAIRS:
            if date_kw in keys and time_kw in keys and matching.is_range(keys[date_kw]):
                date_attr, time_attr = BY_KEYWORD[date_kw], BY_KEYWORD[time_kw]
                out.append(
                    matching.combined_match(
                        date_attr.column,
                        time_attr.column,
                        keys.pop(date_kw),
                        keys.pop(time_kw),
                        keyword=date_kw,
                    )
                )
    for keyword, value in keys.items():
        condition = _condition(BY_KEYWORD[keyword], value, query.fuzzy)
        if condition is not None:
            out.append(condition)
    return out


def _columns(level: Level) -> list[Any]:
    cols = [_KEY_COLUMN[lv].label(f"_pk_{lv.value}") for lv in Level if lv.depth <= level.depth]
    if level.depth >= 1:
        cols.append(Study.modalities.label("ModalitiesInStudy"))
    cols += [
        a.column.label(a.keyword) for a in ATTRIBUTES if a.column is not None and a.level.depth <= level.depth
    ]
    return cols


def statement(query: Query) -> Select[Any]:
    """The SELECT for the query's page: joined rows of the level and its parents, filtered, ordered, paged."""
    level = query.level
    stmt = select(*_columns(level))
    if level is Level.PATIENT:
        stmt = stmt.select_from(Patient)
        if query.sites is not None or query.scope is not None:
            visible = _visible(select(Study.id).where(Study.patient_pk == Patient.id), query)
            stmt = stmt.where(exists(visible))
        order: list[Any] = [Patient.patient_name, Patient.id]
    else:
        stmt = stmt.select_from(Study).join(Patient, Study.patient_pk == Patient.id)
        if level.depth >= 2:
            stmt = stmt.join(Series, Series.study_pk == Study.id)
        if level.depth >= 3:
            stmt = stmt.join(Instance, Instance.series_pk == Series.id)
        stmt = _visible(stmt, query)
        orders: dict[Level, list[Any]] = {
            Level.STUDY: [Study.study_date.desc(), Study.study_time.desc(), Study.id.desc()],
            Level.SERIES: [Series.study_pk, Series.series_number, Series.id],
            Level.IMAGE: [Instance.series_pk, Instance.instance_number, Instance.id],
        }
        order = orders[level]
    stmt = stmt.where(*conditions(query)).order_by(*order)
    if query.limit is not None:
        stmt = stmt.limit(query.limit)
    if query.offset:
        stmt = stmt.offset(query.offset)
    return stmt


def _visible(stmt: Select[*_Row], query: Query) -> Select[*_Row]:
    """``stmt`` (which has ``studies`` in its FROM) limited to the studies the query's caller may see."""
    if query.sites is not None:
        stmt = stmt.where(Study.site.in_(query.sites))
    if query.scope is not None:
        stmt = stmt.where(visibility.condition(query.scope))
    return stmt


def _count_statement(keyword: str, pks: list[int], query: Query) -> Select[int, int]:
    """One grouped query: ``(parent pk, count)`` for every parent in ``pks``."""
    if keyword == "NumberOfPatientRelatedStudies":
        stmt = select(Study.patient_pk, func.count(Study.id)).where(Study.patient_pk.in_(pks))
        return _visible(stmt, query).group_by(Study.patient_pk)
    if keyword == "NumberOfPatientRelatedSeries":
        stmt = select(Study.patient_pk, func.count(Series.id)).join(Series, Series.study_pk == Study.id)
        return _visible(stmt.where(Study.patient_pk.in_(pks)), query).group_by(Study.patient_pk)
    if keyword == "NumberOfPatientRelatedInstances":
        stmt = (
            select(Study.patient_pk, func.count(Instance.id))
            .join(Series, Series.study_pk == Study.id)
            .join(Instance, Instance.series_pk == Series.id)
        )
        return _visible(stmt.where(Study.patient_pk.in_(pks)), query).group_by(Study.patient_pk)
    if keyword == "NumberOfStudyRelatedSeries":
        return (
            select(Series.study_pk, func.count(Series.id))
            .where(Series.study_pk.in_(pks))
            .group_by(Series.study_pk)
        )
    if keyword == "NumberOfStudyRelatedInstances":
        return (
            select(Series.study_pk, func.count(Instance.id))
            .join(Instance, Instance.series_pk == Series.id)
            .where(Series.study_pk.in_(pks))
            .group_by(Series.study_pk)
        )
    return (
        select(Instance.series_pk, func.count(Instance.id))
        .where(Instance.series_pk.in_(pks))
        .group_by(Instance.series_pk)
    )


_COUNTS = {
    "NumberOfPatientRelatedStudies": Level.PATIENT,
    "NumberOfPatientRelatedSeries": Level.PATIENT,
    "NumberOfPatientRelatedInstances": Level.PATIENT,
    "NumberOfStudyRelatedSeries": Level.STUDY,
    "NumberOfStudyRelatedInstances": Level.STUDY,
    "NumberOfSeriesRelatedInstances": Level.SERIES,
}


def _add_counts(s: Session, query: Query, rows: list[dict[str, Any]]) -> None:
    """Fill the related-object counts ``query.returns`` names, one grouped query per count for all ``rows``."""
    for keyword, parent in _COUNTS.items():
        if keyword not in query.returns or parent.depth > query.level.depth or not rows:
            continue
        pk_name = f"_pk_{parent.value}"
        pks = sorted({r[pk_name] for r in rows})
        counts = {pk: n for pk, n in s.execute(_count_statement(keyword, pks, query))}
        for r in rows:
            r[keyword] = counts.get(r[pk_name], 0)


def search(db: Database, query: Query) -> list[dict[str, Any]]:
    """The matching rows of one page, as dicts keyed by DICOM keyword (parents' attributes included).

    Raises :class:`MatchError` for a key that cannot be matched. The related-object counts named in
    ``query.returns`` are computed for the whole page with one grouped query each, never one per row.
    """
    query.check()
    with db.sessions() as s:
        rows = [dict(r._mapping) for r in s.execute(statement(query))]
        _add_counts(s, query, rows)
    return rows


def iter_search(db: Database, query: Query, batch: int = 200) -> Iterator[list[dict[str, Any]]]:
    """Every match of ``query`` (its limit and offset apply), streamed from one statement in chunks of ``batch``.

    For C-FIND, whose answers may be long: one read transaction and one cursor, rather than re-running the
    query at a growing offset. Counts are added per chunk. Raises :class:`MatchError` before the first chunk.
    """
    query.check()
    with db.sessions() as s:
        result = s.execute(statement(query).execution_options(yield_per=batch))
        for chunk in result.partitions(batch):
            rows = [dict(r._mapping) for r in chunk]
            _add_counts(s, query, rows)
            yield rows


def retrieve_path(row: dict[str, Any], level: Level) -> str:
    """The DICOMweb path (under ``/dicom-web``) of the study, series or instance a row stands for."""
    path = f"/studies/{row['StudyInstanceUID']}"
    if level.depth >= 2:
        path += f"/series/{row['SeriesInstanceUID']}"
    if level.depth >= 3:
        path += f"/instances/{row['SOPInstanceUID']}"
    return path


def _values(keyword: str, vr: str, value: Any) -> list[Any]:
    """The value list of an attribute as DICOM holds it: empty when absent."""
    if value is None or value == "":
        return []
    if keyword == "ModalitiesInStudy":
        return [m for m in str(value).split("\\") if m]
    if keyword == "NumberOfFrames" and not value:
        return []
    if vr in ("IS", "US", "UL", "SL", "SS"):
        return [int(value)]
    return [value]


@lru_cache(maxsize=256)
def _layout(keywords: frozenset[str]) -> tuple[tuple[str, int, str], ...]:
    """``(keyword, tag, VR)`` of each known keyword, in tag order; computed once per set of keywords."""
    found = [(int(t), k) for k in keywords if (t := tag_for_keyword(k)) is not None]
    return tuple((k, t, str(dictionary_VR(t))) for t, k in sorted(found))


def to_json(row: dict[str, Any], keywords: Iterable[str]) -> dict[str, Any]:
    """One result in the DICOM JSON model (PS3.18 F.2), with the named attributes in tag order."""
    out: dict[str, Any] = {}
    for keyword, tag, vr in _layout(frozenset(keywords)):
        values = _values(keyword, vr, row.get(keyword))
        element: dict[str, Any] = {"vr": vr}
        if values:
            element["Value"] = [{"Alphabetic": v} for v in values] if vr == "PN" else values
        out[f"{tag:08X}"] = element
    return out


def to_dataset(row: dict[str, Any], keywords: Iterable[str]) -> Dataset:
    """One result as a pydicom Dataset holding the named attributes (zero length where there is no value)."""
    ds = Dataset()
    for keyword, tag, vr in _layout(frozenset(keywords)):
        values = _values(keyword, vr, row.get(keyword))
        if not values:
            ds.add_new(tag, vr, None)
        else:
            ds.add_new(tag, vr, values if len(values) > 1 else values[0])
    if any(isinstance(v, str) and not v.isascii() for v in row.values()):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds
