"""L1 forms for live intake from CSV (``archipel mammo forms import`` and ``POST /api/mammo/l1-forms/import``).

Each line is one imaging centre's L1 form, for an exam whose images have arrived or not yet: it is validated as
the API's form (:class:`~archipel.mammo.schemas.L1FormBody`) and stored by the API's own path
(:func:`archipel.mammo.reading.submit_l1`), so it is matched to its episode and study the same way, and a form
with no study yet waits on the reconciliation list. A file loads whole or not at all: every bad line is listed
with its number and reason, and then nothing of the file is stored. (``archipel mammo import`` loads decided
history; see :mod:`archipel.mammo.history`.)
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from archipel.mammo import episodes, reading
from archipel.mammo.episodes import ScreeningError
from archipel.mammo.models import FR_DEPISTAGE
from archipel.mammo.schemas import L1FormBody
from archipel.platform.db import Database

REQUIRED = (
    "issuer",
    "patient_id",
    "site",
    "round",
    "screen_date",
    "right_assessment",
    "left_assessment",
    "density",
)
OPTIONAL = (
    "l1_reader",
    "study_uid",
    "woman_contact",
    "gp_contact",
    "centre_contact",
    "priority",
    "batch",
    "history",
    "clinical_exam",
    "immediate_workup",
    "ultrasound",
    "workup_result",
    "right_result",
    "left_result",
    "findings",
    "quality",
    "further_tests",
)
COLUMNS = REQUIRED + OPTIONAL
_FRENCH_DENSITY = {"1": "a", "2": "b", "3": "c", "4": "d"}
_BOOLEANS = {"": False, "0": False, "no": False, "false": False, "1": True, "yes": True, "true": True}
#: Where a field of the form comes from, for the error messages.
_COLUMN_OF = {
    ("read", "right", "assessment"): "right_assessment",
    ("read", "left", "assessment"): "left_assessment",
    ("read", "right", "result"): "right_result",
    ("read", "left", "result"): "left_result",
    ("read", "density"): "density",
    ("read", "findings"): "findings",
    ("read", "quality"): "quality",
    ("read", "further_tests"): "further_tests",
    ("read",): "the read",
}


class FormsFileError(ValueError):
    """The file cannot be read as L1 forms at all (not CSV text, a required column missing, no such programme
    or one that has no L1 form); the message says why."""


@dataclass(frozen=True)
class FormLine:
    """One valid line: its number in the file, the form, and the L1 radiologist it is entered for."""

    line: int
    body: L1FormBody
    reader: str


@dataclass(frozen=True)
class StoredForm:
    """A form stored: its line, the woman (``issuer/PatientID``), her episode and the episode's status."""

    line: int
    patient: str
    episode_id: int
    status: str


@dataclass
class FormsSummary:
    """What a load did: the forms stored, or nothing and each refused line with its reason (sorted by line)."""

    stored: list[StoredForm] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)

    @property
    def awaiting_images(self) -> int:
        """Forms stored whose exam has no images yet (they are on the reconciliation list)."""
        return sum(1 for f in self.stored if f.status == "awaiting-images")


def _bool(name: str, value: str) -> bool:
    if value.lower() not in _BOOLEANS:
        raise ValueError(f"{name} {value!r} is not yes or no")
    return _BOOLEANS[value.lower()]


def _json(name: str, value: str, empty: object) -> object:
    if not value:
        return empty
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} is not JSON ({exc.msg} at character {exc.pos})") from None


def _errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = tuple(str(x) for x in err["loc"])
        column = next((_COLUMN_OF[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in _COLUMN_OF), "")
        name = column or ".".join(loc) or "the form"
        parts.append(f"{name}: {err['msg']}")
    return "; ".join(parts)


def parse_line(row: dict[str, str], programme: str, default_reader: str) -> tuple[L1FormBody, str]:
    """One line as the API's L1 form and its L1 reader; raises ``ValueError`` naming the column at fault."""
    v = {k: (row.get(k) or "").strip() for k in COLUMNS}
    reader = v["l1_reader"] or default_reader
    if not reader:
        raise ValueError("l1_reader is empty")
    side = {
        name: {
            "assessment": v[f"{name}_assessment"],
            **({"result": v[f"{name}_result"]} if v[f"{name}_result"] else {}),
        }
        for name in ("right", "left")
    }
    read = {
        **side,
        "density": _FRENCH_DENSITY.get(v["density"], v["density"].lower()),
        "findings": _json("findings", v["findings"], []),
        "quality": _json("quality", v["quality"], {}),
        "further_tests": v["further_tests"],
    }
    form: dict[str, object] = {
        "programme": programme,
        **{k: v[k] for k in ("issuer", "patient_id", "site", "round", "screen_date")},
        **{k: v[k] for k in ("study_uid", "woman_contact", "gp_contact", "centre_contact", "batch") if v[k]},
        "history": v["history"],
        "clinical_exam": v["clinical_exam"],
        "immediate_workup": _bool("immediate_workup", v["immediate_workup"]),
        "ultrasound": _bool("ultrasound", v["ultrasound"]),
        "workup_result": v["workup_result"],
        "read": read,
    }
    if v["priority"]:
        form["priority"] = v["priority"]
    try:
        return L1FormBody.model_validate(form), reader
    except ValidationError as exc:
        raise ValueError(_errors(exc)) from None


def parse(
    data: bytes, programme: str, default_reader: str = ""
) -> tuple[list[FormLine], list[tuple[int, str]]]:
    """The file's valid lines and its refused ones (line number, reason); the header is line 1."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormsFileError(f"the file is not UTF-8 text (byte {exc.start})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise FormsFileError(f"the file lacks the column(s) {', '.join(missing)}")
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise FormsFileError(
            f"unknown column(s) {', '.join(unknown)}; the columns are those of docs/mammo.md"
        )
    good: list[FormLine] = []
    bad: list[tuple[int, str]] = []
    for n, row in enumerate(reader, start=2):
        if None in row:
            bad.append((n, f"{len(header) + len(row[None])} fields for {len(header)} columns"))  # type: ignore[index]
            continue
        try:
            body, l1 = parse_line(row, programme, default_reader)
            good.append(FormLine(n, body, l1))
        except ValueError as exc:
            bad.append((n, str(exc)))
    return good, bad


def check_programme(db: Database, programme: str) -> None:
    """Refuse at once a programme that does not exist or has no L1 form."""
    with db.sessions() as s:
        try:
            prog = episodes.programme(s, programme)
        except ScreeningError as exc:
            raise FormsFileError(str(exc)) from None
        if prog.protocol != FR_DEPISTAGE:
            raise FormsFileError(f"programme {programme} reads blind ({prog.protocol}); it has no L1 form")


class _Refused(Exception):
    """Undoes the whole load when a line was refused."""


def load(
    db: Database,
    programme: str,
    forms: Iterable[FormLine],
    now: datetime,
    refused: Iterable[tuple[int, str]] = (),
    on_line: Callable[[int], None] | None = None,
) -> FormsSummary:
    """Store the forms in one transaction, each as the API does; when a line is refused (here, or in ``refused``
    already) nothing is stored and the summary lists every refused line."""
    check_programme(db, programme)
    summary = FormsSummary(refused=list(refused))
    try:
        with db.write() as s:
            prog = episodes.programme(s, programme)
            for form in forms:
                try:
                    with s.begin_nested():
                        ep, _ = reading.submit_l1(s, prog, form.body, form.reader, now)
                        patient = f"{ep.issuer}/{ep.patient_id}"
                        summary.stored.append(StoredForm(form.line, patient, ep.id, ep.status))
                except ScreeningError as exc:
                    summary.refused.append((form.line, str(exc)))
                if on_line is not None:
                    on_line(form.line)
            if summary.refused:
                raise _Refused
    except _Refused:
        summary.stored.clear()
    summary.refused.sort()
    return summary
