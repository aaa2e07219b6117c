"""Confidentiality of a study or document: the French DMP codes and the sensitivity labels, and how they are
stored.

Three codes say *who* may not see a piece of data:

- ``MASQUE_PS``: hidden from professionals, except at the site that produced it;
- ``INVISIBLE_PATIENT``: hidden from the patient until a professional releases it (e.g. a cancer diagnosis
  before the announcement consultation);
- ``INVISIBLE_REPRESENTANTS_LEGAUX``: hidden from the patient's legal representatives.

Sensitivity labels (``PSY``, ...) say *what* the data is; labelled data is seen only by professionals with a
care relationship with the patient (see ``docs/access-policy.md``). Codes are stored in one text column as
``|CODE|CODE|`` so that SQL can test one code with a LIKE pattern that cannot match a part of another.
"""

from __future__ import annotations

from collections.abc import Iterable

MASQUE_PS = "MASQUE_PS"
INVISIBLE_PATIENT = "INVISIBLE_PATIENT"
INVISIBLE_REPRESENTANTS_LEGAUX = "INVISIBLE_REPRESENTANTS_LEGAUX"
#: The codes that hide data from a class of reader.
VISIBILITY_CODES = frozenset({MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX})
#: Sensitivity labels: psychiatry, HIV, genetics, abortion, addiction care, sexual health.
SENSITIVITY_LABELS = frozenset({"PSY", "VIH", "GEN", "IVG", "ADDICTO", "SEX"})
CODES = VISIBILITY_CODES | SENSITIVITY_LABELS
#: The longest stored form: every code once, with separators.
COLUMN_LENGTH = 200


class ConfidentialityError(ValueError):
    """A code outside the vocabulary; the message names it and lists the known ones."""


def validate(codes: Iterable[str]) -> frozenset[str]:
    """``codes`` upper-cased and checked against :data:`CODES`; raises :class:`ConfidentialityError`."""
    out = frozenset(c.strip().upper() for c in codes if c.strip())
    unknown = sorted(out - CODES)
    if unknown:
        raise ConfidentialityError(
            f"unknown confidentiality code {', '.join(unknown)}; known: {', '.join(sorted(CODES))}"
        )
    return out


def encode(codes: Iterable[str]) -> str:
    """The column value for ``codes``: ``""`` when none, else ``|A|B|`` in sorted order."""
    found = sorted(validate(codes))
    return f"|{'|'.join(found)}|" if found else ""


def decode(value: str | None) -> frozenset[str]:
    """The codes of a column value written by :func:`encode`."""
    return frozenset(c for c in (value or "").split("|") if c)


def pattern(code: str) -> str:
    """The substring the column contains exactly when it holds ``code``."""
    return f"|{code}|"


def labels_of(codes: Iterable[str]) -> frozenset[str]:
    """The sensitivity labels among ``codes``."""
    return frozenset(codes) & SENSITIVITY_LABELS
