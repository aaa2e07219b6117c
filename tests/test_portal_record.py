"""The portal's record registry: items from every registered source, newest first, released ones for patients."""

from __future__ import annotations

from datetime import date

from archipel.platform import access, portal
from archipel.platform.authn import Principal


def test_record_merges_sources_newest_first_and_keeps_released_items_for_the_patient_view() -> None:
    def studies(_db: object, _p: Principal, master: int, _f: access.Facts) -> list[portal.RecordItem]:
        return [
            portal.RecordItem("test-study", "1.2.3", "SITE-A", date(2025, 3, 1), "CT thorax", released=True)
        ]

    def letters(_db: object, _p: Principal, master: int, _f: access.Facts) -> list[portal.RecordItem]:
        return [
            portal.RecordItem("test-letter", "7", "SITE-B", date(2026, 1, 5), "draft letter"),
            portal.RecordItem("test-letter", "8", "SITE-B", None, "undated"),
        ]

    portal.register_source("test-study", studies)
    portal.register_source("test-letter", letters)
    principal = Principal(subject="dr-test", role="radiologist", site="SITE-A")
    kinds = ["test-study", "test-letter"]
    everything = portal.record(None, principal, 1, access.NO_FACTS, kinds=kinds)  # type: ignore[arg-type]
    assert [i.ident for i in everything] == ["7", "1.2.3", "8"]
    released = portal.record(None, principal, 1, access.NO_FACTS, released_only=True, kinds=kinds)  # type: ignore[arg-type]
    assert [i.as_dict()["date"] for i in released] == ["2025-03-01"]
