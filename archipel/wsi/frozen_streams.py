"""Server-Sent Events of frozen sections: the on-duty pathologists' stream and each request's own stream.

Both read the append-only ``frozen_section_events`` table after the last id they sent, so any API process can
serve them (state is in the database, not in one process's memory) and a client that reconnects with
``Last-Event-ID`` misses nothing. The wire format is the usual one::

    id: 42
    event: verdict
    data: {"event_id": 42, "request_id": 7, "kind": "verdict", "at": "...", "state": "answered", ...}

A comment line (``: keep-alive``) goes out after ``HEARTBEAT`` seconds without an event, so that proxies keep
the connection open. A request's stream ends once the surgeon has marked the verdict seen; the worklist stream
ends (``event: end``) when the pathologist's shift is over.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread
from fastapi import Request
from sqlalchemy import select

from archipel.platform import access, access_facts
from archipel.platform.authn import Principal
from archipel.platform.runtime import Runtime
from archipel.wsi.frozen import EV_SEEN, FrozenSectionEvent, FrozenSectionRequest

HEARTBEAT = 15.0
POLL = 0.25
#: Seconds between checks that the stream's reader may still read it (shift still in force).
RECHECK = 10.0
MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def frame(ev: dict[str, Any]) -> str:
    """One event in the SSE wire format."""
    return f"id: {ev['event_id']}\nevent: {ev['kind']}\ndata: {json.dumps(ev, sort_keys=True)}\n\n"


def last_event_id(request: Request) -> int:
    """Where a reconnecting client left off (``Last-Event-ID``, or ``?after=``); 0 for everything."""
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    return int(raw) if raw.isdigit() else 0


def request_events(rt: Runtime, request_id: int) -> Callable[[int], list[dict[str, Any]]]:
    """The events of one request after a given id."""

    def poll(after: int) -> list[dict[str, Any]]:
        with rt.db.sessions() as s:
            rows = s.execute(
                select(FrozenSectionEvent)
                .where(FrozenSectionEvent.request_id == request_id, FrozenSectionEvent.id > after)
                .order_by(FrozenSectionEvent.id)
                .limit(200)
            ).scalars()
            return [r.as_dict() for r in rows]

    return poll


def visible_events(rt: Runtime, principal: Principal) -> Callable[[int], list[dict[str, Any]]]:
    """The events after a given id of every request ``principal`` may read (the policy's read scope, taken
    afresh whenever events arrive, since a new request brings its own care relationships)."""

    def poll(after: int) -> list[dict[str, Any]]:
        with rt.db.sessions() as s:
            rows = s.execute(
                select(FrozenSectionEvent, FrozenSectionRequest.issuer, FrozenSectionRequest.master_id)
                .join(FrozenSectionRequest, FrozenSectionRequest.id == FrozenSectionEvent.request_id)
                .where(FrozenSectionEvent.id > after)
                .order_by(FrozenSectionEvent.id)
                .limit(200)
            ).all()
            found = [(ev.as_dict(), issuer, master) for ev, issuer, master in rows]
        if not found:
            return []
        _, facts = access_facts.load(rt.db, principal, None, rt.clock())
        scope = access.read_scope(principal, facts)
        shown = []
        for ev, issuer, master in found:
            if scope.grant_for(issuer, master, frozenset(), master in facts.refused) is not None:
                shown.append(ev)
            else:  # keep the position moving past events this reader may not see
                shown.append({"event_id": ev["event_id"], "kind": "", "hidden": True})
        return shown

    return poll


async def stream(
    request: Request,
    poll: Callable[[int], list[dict[str, Any]]],
    *,
    after: int,
    may_go_on: Callable[[], bool] | None = None,
    ends_with: str = EV_SEEN,
) -> AsyncIterator[str]:
    """Send every event after ``after`` as it arrives; stop when the client leaves, after an ``ends_with``
    event, or when ``may_go_on`` (checked every ``RECHECK`` seconds) says no."""
    last, quiet_since, checked = after, time.monotonic(), time.monotonic()
    yield "retry: 2000\n\n"
    while not await request.is_disconnected():
        events = await anyio.to_thread.run_sync(poll, last)
        for ev in events:
            last = int(ev["event_id"])
            if ev.get("hidden"):
                continue
            quiet_since = time.monotonic()
            yield frame(ev)
            if ev["kind"] == ends_with:
                return
        now = time.monotonic()
        if may_go_on is not None and now - checked > RECHECK:
            checked = now
            if not await anyio.to_thread.run_sync(may_go_on):
                yield 'event: end\ndata: {"reason": "your shift is over"}\n\n'
                return
        if now - quiet_since > HEARTBEAT:
            quiet_since = now
            yield ": keep-alive\n\n"
        await anyio.sleep(POLL)
