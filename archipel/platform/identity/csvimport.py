"""Importing a site's identities from CSV: one bad line is reported with its number and skipped.

Columns: ``local_id`` (required), ``birth_name, used_name, given_names, birth_date, sex, birth_place, address,
postcode, city, phone, ins, ins_status`` (each optional, may be empty). Comma or semicolon separated, UTF-8 (a
BOM is accepted). Dates are ISO (``1970-01-31``) or ``YYYYMMDD``.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from archipel.platform.db import Database
from archipel.platform.identity.service import (
    IdentityError,
    LinkOutcome,
    LocalIdentityInput,
    UnknownIssuer,
    known_issuers,
    register_many,
)

COLUMNS = (
    "local_id",
    "birth_name",
    "used_name",
    "given_names",
    "birth_date",
    "sex",
    "birth_place",
    "address",
    "postcode",
    "city",
    "phone",
    "ins",
    "ins_status",
)


@dataclass
class ImportSummary:
    """What an import did: counts per link status, and each refused line with its reason."""

    counts: Counter[str] = field(default_factory=Counter)
    refused: list[tuple[int, str]] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Lines read (accepted and refused)."""
        return sum(self.counts.values()) + len(self.refused)


def count_lines(path: Path) -> int:
    """Data lines in the file (for the progress bar)."""
    with path.open("rb") as f:
        return max(sum(1 for _ in f) - 1, 0)


def read_rows(path: Path, issuer: str, summary: ImportSummary) -> Iterator[tuple[int, LocalIdentityInput]]:
    """The file's identities with their line numbers; malformed lines go to ``summary.refused``."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        sample = f.read(4096)
        f.seek(0)
        delimiter = ";" if sample.count(";") > sample.count(",") else ","
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            return
        if "local_id" not in header:
            raise IdentityError(f"{path.name}: the header has no local_id column")
        summary.ignored_columns = [h for h in header if h not in COLUMNS]
        positions = {name: header.index(name) for name in COLUMNS if name in header}
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                summary.refused.append((line, f"{len(values)} fields where the header has {len(header)}"))
                continue
            yield line, LocalIdentityInput(issuer=issuer, **{k: values[i] for k, i in positions.items()})


def import_csv(
    db: Database,
    path: Path,
    issuer: str,
    *,
    on_line: Callable[[int, LinkOutcome | None, str], None] | None = None,
) -> ImportSummary:
    """Register every identity of ``path`` for ``issuer``; :class:`UnknownIssuer` before reading anything if
    the issuer is not registered."""
    with db.sessions() as s:
        if issuer not in known_issuers(s):
            raise UnknownIssuer(
                f"unknown issuer {issuer!r}: register it with `archipel identity issuers add`"
            )
    summary = ImportSummary()

    def item(line: int, outcome: LinkOutcome | None, error: str) -> None:
        if outcome is None:
            summary.refused.append((line, error))
        else:
            summary.counts[outcome.status] += 1
        if on_line:
            on_line(line, outcome, error)

    register_many(db, read_rows(path, issuer, summary), on_item=item)
    summary.refused.sort()
    return summary
