"""The retention date arithmetic (CSP art. R1112-7): 20 years after the last visit, the 28th birthday for minors,
10 years after a death within 10 years of the last visit; rule files by category."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from archipel.platform.retention_rules import (
    FRENCH,
    PatientFacts,
    RetentionRuleError,
    add_years,
    french_rules,
    load_rules,
    retain_until,
)


def test_an_adult_record_expires_twenty_years_after_the_last_visit() -> None:
    facts = PatientFacts(last_visit=date(2020, 6, 15), birth=date(1960, 1, 1))
    assert retain_until(FRENCH, facts) == date(2040, 6, 15)


def test_a_minor_record_is_kept_until_the_28th_birthday_when_that_is_later() -> None:
    # Last seen at 5: 20 years later they are 25, so the 28th birthday wins.
    facts = PatientFacts(last_visit=date(2010, 3, 1), birth=date(2005, 9, 30))
    assert retain_until(FRENCH, facts) == date(2033, 9, 30)


def test_the_minor_extension_ends_on_the_birthday_itself_not_a_day_later() -> None:
    # Last seen exactly 8 years old: both terms fall on the same day.
    facts = PatientFacts(last_visit=date(2008, 4, 10), birth=date(2000, 4, 10))
    assert retain_until(FRENCH, facts) == date(2028, 4, 10)
    older = PatientFacts(last_visit=date(2008, 4, 11), birth=date(2000, 4, 10))
    assert retain_until(FRENCH, older) == date(2028, 4, 11)


def test_a_leap_day_birthday_moves_to_the_first_of_march_in_a_common_year() -> None:
    assert add_years(date(2004, 2, 29), 28) == date(2032, 2, 29)
    assert add_years(date(2004, 2, 29), 27) == date(2031, 3, 1)
    facts = PatientFacts(last_visit=date(2005, 1, 1), birth=date(2004, 2, 29))
    # 28th birthday 29 Feb 2032 (a leap year) is later than 1 Jan 2025.
    assert retain_until(FRENCH, facts) == date(2032, 2, 29)
    late_visit = PatientFacts(last_visit=date(2012, 2, 29), birth=date(1990, 1, 1))
    assert retain_until(FRENCH, late_visit) == date(2032, 2, 29)
    odd = PatientFacts(last_visit=date(2016, 2, 29), birth=date(1990, 1, 1))
    assert retain_until(FRENCH, odd) == date(2036, 2, 29)
    common = PatientFacts(last_visit=date(2000, 2, 29), birth=date(1950, 1, 1))
    assert retain_until(FRENCH, common) == date(2020, 2, 29)
    assert retain_until(FRENCH, PatientFacts(last_visit=date(1996, 2, 29))) == date(2016, 2, 29)
    assert add_years(date(1996, 2, 29), 21) == date(2017, 3, 1)


def test_a_death_less_than_ten_years_after_the_last_visit_keeps_the_record_ten_years_after_death() -> None:
    facts = PatientFacts(last_visit=date(2020, 1, 10), birth=date(1950, 5, 5), death=date(2022, 8, 1))
    assert retain_until(FRENCH, facts) == date(2032, 8, 1)


def test_a_death_ten_years_or_more_after_the_last_visit_leaves_the_twenty_year_term() -> None:
    on_the_day = PatientFacts(last_visit=date(2000, 1, 10), death=date(2010, 1, 10))
    assert retain_until(FRENCH, on_the_day) == date(2020, 1, 10)
    day_before = PatientFacts(last_visit=date(2000, 1, 10), death=date(2010, 1, 9))
    assert retain_until(FRENCH, day_before) == date(2020, 1, 9)


def test_the_death_clause_replaces_the_minor_extension() -> None:
    # A child seen at 2 who died at 4: kept 10 years after death, not until 28.
    facts = PatientFacts(last_visit=date(2012, 1, 1), birth=date(2010, 1, 1), death=date(2014, 1, 1))
    assert retain_until(FRENCH, facts) == date(2024, 1, 1)


def test_every_category_follows_the_french_rule_by_default() -> None:
    rules = french_rules()
    facts = PatientFacts(last_visit=date(2020, 6, 15))
    assert rules.expires("MG", facts) == rules.expires("18748-4", facts) == date(2040, 6, 15)


def test_a_rule_file_sets_a_category_and_keeps_the_french_default(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[rules."18748-4"]\nyears_after_last_visit = 30\n', encoding="utf-8")
    rules = load_rules(path)
    facts = PatientFacts(last_visit=date(2020, 6, 15))
    assert rules.expires("18748-4", facts) == date(2050, 6, 15)
    assert rules.expires("MG", facts) == date(2040, 6, 15)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[rules.MG]\nyears = 5\n", "unknown fields"),
        ("[rules.MG]\nyears_after_last_visit = -1\n", "years_after_last_visit"),
        ("[rules\n", "rules.toml"),
    ],
)
def test_a_bad_rule_file_is_refused_naming_what_failed(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RetentionRuleError, match=named):
        load_rules(path)
