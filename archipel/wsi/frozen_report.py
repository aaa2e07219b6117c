"""Frozen-section turnaround: per step and in total, count, median, 90th percentile, the share within the
20-minute target (the CAP checklist wants 90 % of frozen sections answered within 20 minutes of the specimen's
arrival), the distribution in bins, and the web viewer's timings against their accepted limits.

The specimen's arrival is taken as its first slide's (the platform sees nothing earlier). The figures carry no
patient identifiers, so any professional may read them. ``report.svg`` plots the distribution against the
target with matplotlib's Agg backend (decision 0023).
"""

from __future__ import annotations

import io
import math
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Float, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from archipel.platform.authn import Principal
from archipel.platform.db import Base, UTCDateTime
from archipel.platform.http import PrincipalDep, RuntimeDep
from archipel.platform.runtime import Runtime
from archipel.wsi.frozen import TARGET_MINUTES, FrozenSectionRequest

#: (name, from step, to step): the intervals the report measures, each in minutes.
STEPS = (
    ("request_to_first_slide", "requested_at", "first_slide_at"),
    ("first_slide_to_first_view", "first_slide_at", "first_view_at"),
    ("first_view_to_verdict", "first_view_at", "verdict_at"),
    ("verdict_to_seen", "verdict_at", "seen_at"),
    ("arrival_to_verdict", "first_slide_at", "verdict_at"),
    ("request_to_verdict", "requested_at", "verdict_at"),
    ("request_to_seen", "requested_at", "seen_at"),
)
#: The CAP measure: from the specimen's arrival to the verdict.
HEADLINE = "arrival_to_verdict"
#: Upper bounds (minutes) of the histogram's bins; the last bin is open.
BINS = (5, 10, 15, 20, 30, 45, 60)
#: The web viewer's accepted limits (ms).
VIEWER_LIMITS_MS = {"open_case": 4000.0, "switch_slide": 1000.0, "next_field": 250.0}
DEFAULT_DAYS = 30


class ViewerTiming(Base):
    """One timing the web viewer measured (opening a case, switching slide, moving to the next field)."""

    __tablename__ = "viewer_timings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    user: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(16))
    ms: Mapped[float] = mapped_column(Float)
    slide_id: Mapped[str] = mapped_column(String(32), default="")


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) of ``values`` by linear interpolation between closest ranks; ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (pos - low), 3)


def histogram(values: list[float]) -> list[dict[str, Any]]:
    """Counts per bin: ``[0, 5)``, ``[5, 10)`` ... ``[60, inf)`` minutes."""
    counts = [0] * (len(BINS) + 1)
    for v in values:
        counts[next((i for i, hi in enumerate(BINS) if v < hi), len(BINS))] += 1
    edges: tuple[int | None, ...] = (*BINS, None)
    return [{"from": lo, "to": hi, "count": n} for lo, hi, n in zip((0, *BINS), edges, counts, strict=True)]


def summary(values: list[float], limit: float) -> dict[str, Any]:
    """Count, median, p90 and the share within ``limit`` of some durations."""
    within = sum(1 for v in values if v <= limit)
    return {
        "count": len(values),
        "median": percentile(values, 0.5),
        "p90": percentile(values, 0.9),
        "within_target": round(within / len(values), 4) if values else None,
    }


def _minutes(row: FrozenSectionRequest, start: str, end: str) -> float | None:
    a, b = getattr(row, start), getattr(row, end)
    if a is None or b is None:
        return None
    return (b - a).total_seconds() / 60


def turnaround(rt: Runtime, start: datetime, end: datetime) -> dict[str, Any]:
    """The report over requests made in ``[start, end)``."""
    with rt.db.sessions() as s:
        rows = list(
            s.execute(
                select(FrozenSectionRequest).where(
                    FrozenSectionRequest.requested_at >= start, FrozenSectionRequest.requested_at < end
                )
            ).scalars()
        )
        timings = list(
            s.execute(select(ViewerTiming).where(ViewerTiming.at >= start, ViewerTiming.at < end)).scalars()
        )
    steps: dict[str, Any] = {}
    for name, a, b in STEPS:
        values = [m for m in (_minutes(r, a, b) for r in rows) if m is not None]
        steps[name] = {**summary(values, TARGET_MINUTES), "histogram": histogram(values)}
    viewer: dict[str, Any] = {}
    for event, limit in VIEWER_LIMITS_MS.items():
        ms = [t.ms for t in timings if t.event == event]
        within = sum(1 for v in ms if v < limit)
        viewer[event] = {
            "count": len(ms),
            "p50_ms": percentile(ms, 0.5),
            "p95_ms": percentile(ms, 0.95),
            "limit_ms": limit,
            "within_limit": round(within / len(ms), 4) if ms else None,
        }
    headline = steps[HEADLINE]
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "target_minutes": TARGET_MINUTES,
        "requests": len(rows),
        "answered": sum(1 for r in rows if r.verdict_at is not None),
        "cap_goal": 0.9,
        "cap_goal_met": headline["within_target"] is not None and headline["within_target"] >= 0.9,
        "steps": steps,
        "viewer": viewer,
    }


def plot_svg(report: dict[str, Any]) -> bytes:
    """The headline distribution as an SVG bar chart, with the 20-minute target drawn across it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    bins = report["steps"][HEADLINE]["histogram"]
    labels = [f"{b['from']}-{b['to']}" if b["to"] is not None else f"{b['from']}+" for b in bins]
    counts = [b["count"] for b in bins]
    colours = ["#2e7d32" if b["to"] is not None and b["to"] <= TARGET_MINUTES else "#c62828" for b in bins]
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    ax.bar(range(len(bins)), counts, color=colours, tick_label=labels)
    target_x = BINS.index(TARGET_MINUTES) + 0.5
    ax.axvline(target_x, color="black", linestyle="--", label=f"target {TARGET_MINUTES} min")
    share = report["steps"][HEADLINE]["within_target"]
    shown = "-" if share is None else f"{share:.0%}"
    ax.set_title(f"Frozen sections, arrival to verdict: {shown} within {TARGET_MINUTES} min (goal 90 %)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("requests")
    ax.legend()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def _period(rt: Runtime, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    end = end or rt.clock() + timedelta(seconds=1)
    start = start or end - timedelta(days=DEFAULT_DAYS)
    if start.tzinfo is None or end.tzinfo is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "from and to need a time zone, e.g. 2026-12-01T00:00:00Z"
        )
    if end <= start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "to must come after from")
    return start, end


def _professional(principal: Principal) -> None:
    if principal.kind != "user":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the turnaround report is for professionals")


#: Mounted under ``/api/frozen-sections`` by ``frozen_api`` (before its ``/{request_id}`` routes).
report_router = APIRouter(tags=["frozen sections"])
timings_router = APIRouter(prefix="/api/viewer-timings", tags=["frozen sections"])
From = Annotated[datetime | None, Query(alias="from")]
To = Annotated[datetime | None, Query()]


@report_router.get("/report")
def report(rt: RuntimeDep, principal: PrincipalDep, from_: From = None, to: To = None) -> dict[str, Any]:
    """Turnaround of the requests made in ``[from, to)`` (default: the last 30 days) and the viewer's timings."""
    _professional(principal)
    return turnaround(rt, *_period(rt, from_, to))


@report_router.get("/report.svg", response_class=Response)
def report_svg(rt: RuntimeDep, principal: PrincipalDep, from_: From = None, to: To = None) -> Response:
    """The arrival-to-verdict distribution against the 20-minute target, as SVG."""
    _professional(principal)
    return Response(plot_svg(turnaround(rt, *_period(rt, from_, to))), media_type="image/svg+xml")


class TimingBody(BaseModel):
    """One timing measured by the web viewer."""

    model_config = ConfigDict(extra="forbid")
    event: Literal["open_case", "switch_slide", "next_field"]
    ms: float = Field(ge=0, le=3_600_000)
    slide_id: str = Field(default="", max_length=32)


@timings_router.post("", status_code=status.HTTP_201_CREATED)
def post_timing(
    body: TimingBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Record one viewer timing (no patient data: an event name, a duration, and the slide's opaque id)."""
    _professional(principal)
    with rt.db.write() as s:
        row = ViewerTiming(
            at=rt.clock(), user=principal.subject, event=body.event, ms=body.ms, slide_id=body.slide_id
        )
        s.add(row)
        s.flush()
        return {"id": row.id, "event": row.event, "ms": row.ms, "limit_ms": VIEWER_LIMITS_MS[row.event]}
