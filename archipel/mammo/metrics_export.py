"""The programme's figures as CSV, one row per figure with its numerator, denominator, value, unit and the
definition it follows (European guidelines for quality assurance in breast cancer screening, and the French
organised programme's specifications, the "cahier des charges").

Columns ``reader,metric,numerator,denominator,value,unit,definition``: first the programme's rows (``reader``
empty), then a block per reader. A rate whose denominator is 0 has an empty value.
"""

from __future__ import annotations

import csv
import io
from typing import Any

HEADER = ("reader", "metric", "numerator", "denominator", "value", "unit", "definition")

#: Per programme figure: (numerator key, denominator key, scale, unit, definition).
_PROGRAMME: tuple[tuple[str, str, str, float, str, str], ...] = (
    ("screened", "screened", "", 1, "women",
     "Women screened: women whose screening was decided in the period (a technical recall's retake is part of "
     "the same screening)."),
    ("recall_rate", "recalls", "screened", 1, "proportion",
     "Recall rate: women recalled for further assessment / women screened (EU guidelines: recall for "
     "assessment; cahier des charges: taux de bilans de diagnostic)."),
    ("recall_rate_first_round", "recalls_by_round.first", "screened_by_round.first", 1, "proportion",
     "Recall rate at the initial (first) screening round: recalls / women screened in their first round."),
    ("recall_rate_subsequent_round", "recalls_by_round.subsequent", "screened_by_round.subsequent", 1,
     "proportion",
     "Recall rate at subsequent screening rounds: recalls / women screened in a subsequent round."),
    ("cancer_detection_rate", "screen_detected_cancers", "screened", 1000, "per 1,000 screened",
     "Cancer detection rate: screen-detected cancers (invasive or in situ, found after a recall) per 1,000 "
     "women screened."),
    ("ppv_recall", "screen_detected_cancers", "recalls", 1, "proportion",
     "Positive predictive value of recall: screen-detected cancers / women recalled for assessment."),
    ("l2_only_cancer_share", "single_reader_cancers", "screen_detected_cancers", 1, "proportion", ""),
    ("cti_rate", "technical_recalls", "screened", 1, "proportion",
     "Technical recall rate (clichés techniquement insuffisants): screenings whose first decision was a "
     "technical recall / women screened."),
    ("interval_cancer_rate", "interval_cancers", "screened", 1000, "per 1,000 screened", ""),
    ("interval_cancers_first_12_months", "interval_cancers_by_period.first_12_months", "screened", 1000,
     "per 1,000 screened",
     "Interval cancers diagnosed in the first 12 months (0-11 months) after a normal screening, per 1,000 "
     "screened (EU guidelines)."),
    ("interval_cancers_12_months_to_end", "interval_cancers_by_period.12_months_to_end", "screened", 1000,
     "per 1,000 screened",
     "Interval cancers diagnosed from 12 months after a normal screening to the end of the interval, per "
     "1,000 screened (EU guidelines)."),
    ("interval_cancers_undated", "interval_cancers_undated", "", 1, "women",
     "Interval cancers reported without a diagnosis date: counted in the interval cancer rate, in no period."),
    ("result_within_deadline", "results_sent_within_deadline", "results_sent", 1, "proportion", ""),
)  # fmt: skip

_DELAYS = (
    ("exam_to_received_days", "Delay from the screening exam to the complete file received (days)."),
    (
        "exam_to_l2_days",
        "Delay from the screening exam to the second reading (L2, or the second blind read).",
    ),
    ("received_to_result_days", "Delay from the file received to the results letter sent (days)."),
)

_L2_ONLY = {
    "fr-depistage": "Share of screen-detected cancers found by L2 only (L1 negative, L2 or the L2 consensus "
    "positive): cancers detected by the second reading / screen-detected cancers (cahier des charges).",
    "eu-blinded": "Single-reader-only share: screen-detected cancers where exactly one of the two independent "
    "blind reads was positive / screen-detected cancers (independent double reading, EU guidelines).",
}


def _get(figures: dict[str, Any], key: str) -> Any:
    value: Any = figures
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(v: Any) -> Any:
    return "" if v is None else v


def rows(figures: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The export's rows, header first."""
    single = figures["single_reader_detected_cancers"]
    blinded = figures["protocol"] == "eu-blinded"
    derived = {
        **figures,
        "single_reader_cancers": single["second_only"] + (single["first_only"] if blinded else 0),
    }
    out: list[tuple[Any, ...]] = [HEADER]
    for metric, num_key, den_key, scale, unit, definition in _PROGRAMME:
        num = _get(derived, num_key)
        den = _get(derived, den_key) if den_key else None
        value = num if not den_key else (num * scale / den if den else None)
        if metric == "l2_only_cancer_share":
            definition = _L2_ONLY[figures["protocol"]]
        elif metric == "interval_cancer_rate":
            definition = (
                "Interval cancer rate: cancers diagnosed after a normal screening and before the next one, "
                f"within the {figures['interval_months']}-month screening interval, per 1,000 women screened "
                "(EU guidelines; cahier des charges: cancers de l'intervalle)."
            )
        elif metric == "result_within_deadline":
            definition = (
                "Results letters sent within the programme's deadline after the exam / results letters sent "
                "(cahier des charges: 15 days)."
            )
        out.append(("", metric, _cell(num), _cell(den), _cell(value), unit, definition))
    for key, definition in _DELAYS:
        d = figures["delays"][key]
        out.append(("", f"{key}.median", "", d["n"], _cell(d["median"]), "days", f"Median. {definition}"))
        out.append(("", f"{key}.mean", "", d["n"], _cell(d["mean"]), "days", f"Mean. {definition}"))
    for r in figures["readers"]:
        name = r["reader"]
        out.append((name, "reads", r["reads"], "", r["reads"], "reads",
                    "Reads made in the period (in the blinded protocol the blind reads only)."))  # fmt: skip
        out.append((name, "annualised_reads", "", r["yearly_minimum"], _cell(r["annualised_reads"]),
                    "reads a year",
                    "Reads the yearly minimum counts (L2 reads in France, blind reads in the blinded protocol), "
                    "annualised over the period; the denominator is the programme's yearly minimum."))  # fmt: skip
        out.append((name, "recall_rate", r["positive_reads"], r["reads"], _cell(r["recall_rate"]),
                    "proportion", "Reader's recall rate: positive reads / the reader's reads."))  # fmt: skip
        out.append((name, "cancers_found", r["cancers_found"], "", r["cancers_found"], "cancers",
                    "Screen-detected cancers in women the reader read positive."))  # fmt: skip
        for other, kappa in r["kappa"].items():
            n = next(
                (p["episodes"] for p in figures["reader_pairs"] if set(p["readers"]) == {name, other}), ""
            )
            out.append((name, f"kappa.{other}", "", n, _cell(kappa), "kappa",
                        "Cohen's kappa of the reader's and the other reader's answers (recall or not) on the "
                        "women both read; the denominator is that number of women."))  # fmt: skip
    return out


def as_csv(figures: dict[str, Any]) -> str:
    """The figures as CSV (see the module docstring)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows(figures))
    return buf.getvalue()
