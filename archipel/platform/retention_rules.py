"""How long a patient's record is kept: retention rules and the pure date arithmetic behind them.

The default set follows the French rule for medical records (Code de la santé publique, art. R1112-7): a record
is kept 20 years after the patient's last visit; when that ends before the patient's 28th birthday, until that
birthday; when the patient died less than 10 years after the last visit, 10 years after the death. A rule is
chosen per document type (LOINC) or study category (``MG`` screening mammography, ``default``...); every French
category follows the same rule today, and a deployment may add others in a TOML file (see docs/retention.md).

The date a function returns is the first day on which the record may be deleted: it is kept through the day
before. A term that lands on 29 February of a year without one moves to 1 March (the later day: a record is
never deleted a day too early).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

#: The key of the rule applied when no other matches.
DEFAULT = "default"


class RetentionRuleError(ValueError):
    """A rule file or a rule that cannot be used, with the rule and the field that failed."""


def add_years(day: date, years: int) -> date:
    """``day`` moved ``years`` years on; 29 February becomes 1 March in a year without one."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return date(day.year + years, 3, 1)


@dataclass(frozen=True)
class RetentionRule:
    """One rule: keep ``years_after_last_visit`` years after the last visit, at least until the birthday
    ``minor_until_age`` (0: no extension), and, when the patient died within ``death_window_years`` of the last
    visit, ``years_after_death`` years after the death instead (0: no death clause)."""

    name: str
    years_after_last_visit: int = 20
    minor_until_age: int = 28
    death_window_years: int = 10
    years_after_death: int = 10

    def __post_init__(self) -> None:
        for field in ("years_after_last_visit", "minor_until_age", "death_window_years", "years_after_death"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 0:
                raise RetentionRuleError(
                    f"rule {self.name!r}: {field} must be a whole number >= 0, got {value!r}"
                )
        if self.years_after_last_visit < 1:
            raise RetentionRuleError(f"rule {self.name!r}: years_after_last_visit must be at least 1")


@dataclass(frozen=True)
class PatientFacts:
    """What the rules weigh about one (master) patient: the last visit (latest study or document date), the
    birth date and the death date when known."""

    last_visit: date
    birth: date | None = None
    death: date | None = None


def retain_until(rule: RetentionRule, facts: PatientFacts) -> date:
    """The first day on which ``rule`` lets the record of a patient with ``facts`` be deleted.

    The death clause applies only when the death is known and falls less than ``death_window_years`` after the
    last visit; it then replaces the 20-year term and the minor's extension (R1112-7, third paragraph).
    """
    if (
        rule.years_after_death
        and rule.death_window_years
        and facts.death is not None
        and facts.death < add_years(facts.last_visit, rule.death_window_years)
    ):
        return add_years(max(facts.death, facts.last_visit), rule.years_after_death)
    until = add_years(facts.last_visit, rule.years_after_last_visit)
    if rule.minor_until_age and facts.birth is not None:
        until = max(until, add_years(facts.birth, rule.minor_until_age))
    return until


#: The French rule, the default for every category.
FRENCH = RetentionRule(name=DEFAULT)


@dataclass(frozen=True)
class RuleSet:
    """Rules by category: a LOINC document type (``18748-4``), a study category (``MG``), or ``default``."""

    rules: dict[str, RetentionRule]

    def __post_init__(self) -> None:
        if DEFAULT not in self.rules:
            raise RetentionRuleError(f"a rule set needs a {DEFAULT!r} rule")

    def for_category(self, category: str) -> RetentionRule:
        """The rule of ``category``, else the default rule."""
        return self.rules.get(category) or self.rules[DEFAULT]

    def expires(self, category: str, facts: PatientFacts) -> date:
        """:func:`retain_until` with the rule of ``category``."""
        return retain_until(self.for_category(category), facts)


def french_rules() -> RuleSet:
    """The default set: the French rule for every category (screening mammography included)."""
    return RuleSet({DEFAULT: FRENCH})


def load_rules(path: Path | None) -> RuleSet:
    """Rules from a TOML file (``[rules.default]``, ``[rules."18748-4"]``...: the fields of
    :class:`RetentionRule`), the French set filling in the default; ``None`` gives :func:`french_rules`.

    Raises :class:`RetentionRuleError` naming the file, the rule and the field that failed.
    """
    if path is None:
        return french_rules()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RetentionRuleError(f"retention rules {path.name}: {exc}") from exc
    table = data.get("rules", {})
    if not isinstance(table, dict):
        raise RetentionRuleError(f"retention rules {path.name}: [rules] must be a table")
    rules = {DEFAULT: FRENCH}
    fields = set(RetentionRule.__dataclass_fields__) - {"name"}
    for name, values in table.items():
        if not isinstance(values, dict) or set(values) - fields:
            unknown = sorted(set(values) - fields) if isinstance(values, dict) else values
            raise RetentionRuleError(
                f"retention rules {path.name}: rule {name!r} has unknown fields {unknown}"
            )
        rules[name] = RetentionRule(name=name, **values)
    return RuleSet(rules)
