"""DICOM attribute matching (PS3.4 C.2.2.2) as SQL conditions over index columns.

Each function takes an index column and the matching value as the requester sent it, and returns a SQLAlchemy
condition, or ``None`` for a universal match (an empty value, or a lone ``*``). A value that cannot be used
raises :class:`MatchError`, whose message names the attribute and the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, ColumnElement, and_, literal, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

#: The LIKE escape character. A backslash cannot appear inside one DICOM value (it separates values).
LIKE_ESCAPE = "\\"
#: Greater than every character a stored DA or TM value holds (digits and ``.``): closes a prefix range.
_PREFIX_END = "~"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE = re.compile(r"^[0-9]{8}$")
_TIME = re.compile(r"^[0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,6})?)?)?$")
#: VRs on which ``*`` and ``?`` are wildcards (PS3.4 C.2.2.2.4).
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})


class MatchError(ValueError):
    """A matching value that cannot be used; the message names the attribute and the value."""


@dataclass(frozen=True)
class DateTimeRange:
    """A DA or TM range; either end may be open (``None``)."""

    low: str | None
    high: str | None


def is_universal(value: str) -> bool:
    """Whether ``value`` matches everything: empty, or only ``*`` (PS3.4 C.2.2.2.3 and C.2.2.2.4)."""
    stripped = value.strip()
    return stripped == "" or stripped == "*"


def like_pattern(value: str) -> str:
    """The SQL LIKE pattern for a DICOM wildcard value: ``*`` → ``%``, ``?`` → ``_``, literal ``%``/``_``
    escaped with :data:`LIKE_ESCAPE`."""
    out = []
    for ch in value:
        if ch in ("%", "_", LIKE_ESCAPE):
            out.append(LIKE_ESCAPE + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def has_wildcard(value: str) -> bool:
    """Whether a value uses the ``*`` or ``?`` wildcard."""
    return "*" in value or "?" in value


def text_match(column: Any, value: str, *, keyword: str, vr: str) -> ColumnElement[bool] | None:
    """Single value or wildcard matching on a text column, case-sensitive (PS3.4 C.2.2.2.1, C.2.2.2.4)."""
    value = value.strip()
    if is_universal(value):
        return None
    if vr in WILDCARD_VRS and has_wildcard(value):
        return column.like(like_pattern(value), escape=LIKE_ESCAPE)  # type: ignore[no-any-return]
    return column == value  # type: ignore[no-any-return]


class CaseInsensitiveLike(ColumnElement[bool]):
    """``column LIKE pattern``, ignoring case, written so that each backend can use an index.

    SQLite's LIKE already ignores ASCII case and uses an index declared ``COLLATE NOCASE``; PostgreSQL compares
    ``upper(column)`` with the upper-cased pattern and uses an ``upper(column) text_pattern_ops`` index.
    """

    inherit_cache = True
    type = Boolean()
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("pattern", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: Any, pattern: str) -> None:
        self.column = column
        self.pattern = literal(pattern.upper())


@compiles(CaseInsensitiveLike)
def _like_upper(element: CaseInsensitiveLike, compiler: SQLCompiler, **kw: Any) -> str:
    column, pattern = compiler.process(element.column, **kw), compiler.process(element.pattern, **kw)
    return f"upper({column}) LIKE {pattern} ESCAPE '{LIKE_ESCAPE}'"


@compiles(CaseInsensitiveLike, "sqlite")
def _like_sqlite(element: CaseInsensitiveLike, compiler: SQLCompiler, **kw: Any) -> str:
    column, pattern = compiler.process(element.column, **kw), compiler.process(element.pattern, **kw)
    return f"{column} LIKE {pattern} ESCAPE '{LIKE_ESCAPE}'"


def name_match(column: Any, value: str, *, fuzzy: bool = False) -> ColumnElement[bool] | None:
    """Person Name matching, case-insensitive; wildcards allowed.

    With ``fuzzy``, the value matches the start of any name component or word, so ``clai`` matches
    ``MARTIN^Claire``: this is Archipel's meaning of QIDO's ``fuzzymatching=true``. Case folding is the
    database's: ASCII only on SQLite.
    """
    value = value.strip()
    if is_universal(value):
        return None
    pattern = like_pattern(value)
    if fuzzy:
        prefix = pattern.rstrip("%")
        return or_(
            CaseInsensitiveLike(column, prefix + "%"),
            CaseInsensitiveLike(column, "%^" + prefix + "%"),
            CaseInsensitiveLike(column, "% " + prefix + "%"),
        )
    return CaseInsensitiveLike(column, pattern)


def uid_values(value: str, *, keyword: str) -> list[str]:
    """The UIDs of a UID list (PS3.4 C.2.2.2.2): backslash- or comma-separated; each one checked."""
    uids = [u.strip() for u in re.split(r"[\\,]", value) if u.strip()]
    for u in uids:
        if len(u) > 64 or not _UID.match(u):
            raise MatchError(f"{keyword}: {u!r} is not a UID (digits and dots, at most 64 characters)")
    return uids


def uid_match(column: Any, value: str, *, keyword: str) -> ColumnElement[bool] | None:
    """UID list matching: any of the listed UIDs."""
    if is_universal(value):
        return None
    uids = uid_values(value, keyword=keyword)
    if not uids:
        return None
    return column == uids[0] if len(uids) == 1 else column.in_(uids)  # type: ignore[no-any-return]


def _check_date(part: str, keyword: str) -> str:
    if not _DATE.match(part):
        raise MatchError(f"{keyword}: {part!r} is not a date YYYYMMDD")
    return part


def _check_time(part: str, keyword: str) -> str:
    part = part.replace(":", "")
    if not _TIME.match(part):
        raise MatchError(f"{keyword}: {part!r} is not a time HH[MM[SS[.FFFFFF]]]")
    return part


def parse_range(value: str, *, keyword: str, vr: str) -> DateTimeRange:
    """A DA or TM value as a range: ``a-b``, ``-b``, ``a-`` or a single value ``a`` (low == high)."""
    check = _check_date if vr == "DA" else _check_time
    value = value.strip()
    if has_wildcard(value):
        raise MatchError(f"{keyword}: wildcards are not allowed in a {vr} value ({value!r})")
    if value.count("-") > 1 or value == "-":
        raise MatchError(f"{keyword}: {value!r} is not a {vr} value or range")
    if "-" not in value:
        single = check(value, keyword)
        return DateTimeRange(single, single)
    low, high = (p.strip() for p in value.split("-"))
    result = DateTimeRange(check(low, keyword) if low else None, check(high, keyword) if high else None)
    if result.low and result.high and result.low > result.high:
        raise MatchError(f"{keyword}: range {value!r} ends before it starts")
    return result


def range_match(column: Any, value: str, *, keyword: str, vr: str) -> ColumnElement[bool] | None:
    """Date or time matching, single value or range (PS3.4 C.2.2.2.5).

    A time matches at the precision given: ``1015`` matches ``101500`` and ``101559.5``. Entities with an
    empty value match only a universal key.
    """
    if is_universal(value):
        return None
    r = parse_range(value, keyword=keyword, vr=vr)
    if vr == "DA" and r.low == r.high:
        return column == r.low  # type: ignore[no-any-return]
    conditions = [column != ""]
    if r.low is not None:
        conditions.append(column >= r.low)
    if r.high is not None:
        conditions.append(column <= (r.high + _PREFIX_END if vr == "TM" else r.high))
    return and_(*conditions)


def combined_match(
    date_column: Any, time_column: Any, date_value: str, time_value: str, *, keyword: str
) -> ColumnElement[bool]:
    """Combined date and time range matching (PS3.4 C.2.2.2.5.1): ``StudyDate=20260101-20260131`` with
    ``StudyTime=0800-1800`` means from 1 January 08:00 to 31 January 18:00, not eight to six every day.

    Used only when the date is a range; otherwise the two keys match independently.
    """
    dates = parse_range(date_value, keyword=keyword, vr="DA")
    times = parse_range(time_value, keyword=keyword, vr="TM")
    conditions: list[ColumnElement[bool]] = [date_column != ""]
    if dates.low is not None:
        low: ColumnElement[bool] = date_column >= dates.low
        if times.low is not None:
            low = or_(date_column > dates.low, and_(date_column == dates.low, time_column >= times.low))
        conditions.append(low)
    if dates.high is not None:
        high: ColumnElement[bool] = date_column <= dates.high
        if times.high is not None:
            high = or_(
                date_column < dates.high,
                and_(date_column == dates.high, time_column <= times.high + _PREFIX_END),
            )
        conditions.append(high)
    return and_(*conditions)


def is_range(value: str) -> bool:
    """Whether a DA/TM value is a range rather than a single value."""
    return "-" in value.strip()


def number_match(column: Any, value: str, *, keyword: str) -> ColumnElement[bool] | None:
    """Single value matching on an integer column (IS, US)."""
    if is_universal(value):
        return None
    try:
        number = int(value.strip())
    except ValueError as exc:
        raise MatchError(f"{keyword}: {value.strip()!r} is not an integer") from exc
    return column == number  # type: ignore[no-any-return]


def multi_value_match(column: Any, value: str, *, keyword: str, vr: str) -> ColumnElement[bool] | None:
    """Any of several backslash-separated values, each single-value or wildcard matched (as a
    ``ModalitiesInStudy`` of ``CT\\MR``)."""
    parts = [p for p in value.split("\\") if p.strip()]
    if not parts or any(is_universal(p) for p in parts):
        return None
    conditions = [c for p in parts if (c := text_match(column, p, keyword=keyword, vr=vr)) is not None]
    return conditions[0] if len(conditions) == 1 else or_(*conditions)


def list_contains(column: Any, values: list[str]) -> ColumnElement[bool]:
    """Whether a backslash-joined list column (as ``Study.modalities``, ``CT\\MR``) holds any of ``values``.

    Literal values only: a wildcard could span two listed values. One LIKE per value on the row itself, far
    cheaper than probing child rows. LIKE ignores ASCII case on SQLite.
    """
    listed = literal("\\") + column + literal("\\")
    conditions = [listed.like("%" + like_pattern("\\" + v + "\\") + "%", escape=LIKE_ESCAPE) for v in values]
    return conditions[0] if len(conditions) == 1 else or_(*conditions)
