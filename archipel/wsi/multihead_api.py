"""The multi-head microscope over HTTP and WebSocket.

``POST /api/multihead`` opens a session on one slide (``slide_id``) or a case's slides (``case_slides``) with
``invitees`` (usernames); ``POST /api/multihead/{id}/invite`` adds invitees; ``GET /api/multihead/{id}`` shows it;
``DELETE /api/multihead/{id}`` ends it. Opening asks the access policy for each slide and is audited like opening
a slide (DICOM *Instances Accessed*). ``WebSocket /ws/multihead/{id}`` is where participants meet: the credential
is checked at the handshake (:func:`archipel.platform.credentials.websocket_principal`), then membership, then
the policy for every slide of the session (audited; a refusal closes the socket with its reason).

Close codes: 4401 not authenticated, 4403 refused (not invited, or no access to a slide), 4404 no such session;
1000 when the presenter ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Request, WebSocket, WebSocketDisconnect, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from archipel.platform import access, audit
from archipel.platform.authn import AuthError, Principal, User
from archipel.platform.credentials import client_address, websocket_principal
from archipel.platform.http import PrincipalDep, RuntimeDep, guard
from archipel.platform.runtime import Runtime, get_runtime
from archipel.wsi.models import Slide
from archipel.wsi.multihead import (
    MAX_INVITEES,
    MAX_SLIDES,
    Deliver,
    Message,
    MultiheadError,
    MultiheadSession,
    SessionHub,
    hub_of,
)
from archipel.wsi.multihead_redis import RedisHub
from archipel.wsi.slide_access import resource_of

log = logging.getLogger("archipel.wsi")

router = APIRouter(prefix="/api/multihead", tags=["multi-head"])
ws_router = APIRouter()

#: The largest message a participant may send (a viewport or pointer is well under 200 bytes).
MAX_MESSAGE = 4096


class OpenSession(BaseModel):
    """Body of ``POST /api/multihead``: one slide or a case's slides, and who is invited."""

    slide_id: str | None = Field(default=None, max_length=64)
    case_slides: list[str] | None = Field(default=None, min_length=1, max_length=MAX_SLIDES)
    invitees: list[str] = Field(default_factory=list, max_length=MAX_INVITEES)


class Invite(BaseModel):
    """Body of ``POST /api/multihead/{id}/invite``."""

    invitees: list[str] = Field(min_length=1, max_length=MAX_INVITEES)


_redis_hubs: dict[tuple[int, str], RedisHub] = {}
_redis_lock = threading.Lock()


def hub(rt: Runtime) -> SessionHub:
    """Where the runtime's sessions live: Redis when the broker is Redis (several processes share the sessions),
    else this process's memory."""
    url = rt.settings.broker_url
    if not url.startswith(("redis://", "rediss://")):
        return hub_of(id(rt))
    with _redis_lock:
        found = _redis_hubs.get((id(rt), url))
        if found is None:
            for replaced in _redis_hubs.values():
                replaced.close()
            _redis_hubs.clear()
            found = _redis_hubs[(id(rt), url)] = RedisHub(url)
        return found


def _http_error(exc: MultiheadError) -> HTTPException:
    return HTTPException(exc.status, exc.reason)


def _slides(rt: Runtime, slide_ids: list[str]) -> list[Slide]:
    wanted = list(dict.fromkeys(slide_ids))
    with rt.db.sessions() as s:
        found = {row.id: row for row in s.execute(select(Slide).where(Slide.id.in_(wanted))).scalars()}
    missing = [sid for sid in wanted if sid not in found]
    if missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no slide {', '.join(missing)}")
    return [found[sid] for sid in wanted]


def _resource(slide: Slide) -> access.Resource:
    return resource_of(slide)


def _known_users(rt: Runtime, usernames: list[str]) -> set[str]:
    """The invitees, all active professional accounts; HTTP 422 naming the unknown ones."""
    wanted = set(usernames)
    with rt.db.sessions() as s:
        rows = s.execute(select(User.username).where(User.username.in_(wanted), User.active.is_(True)))
        found = {str(name) for name in rows.scalars()}
    if wanted - found:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, f"unknown user(s): {', '.join(sorted(wanted - found))}"
        )
    return found


def _professional(principal: Principal) -> None:
    if principal.kind != "user" or principal.role in (access.PATIENT, access.LEGAL_REPRESENTATIVE):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "multi-head sessions are for professionals")


def _session_of(rt: Runtime, session_id: str, principal: Principal) -> MultiheadSession:
    session = hub(rt).get(session_id, rt.clock())
    if session is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no multi-head session {session_id}")
    if not session.is_member(principal.subject):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "you are not invited to this session")
    return session


@router.post("", status_code=status.HTTP_201_CREATED)
def open_session(
    body: OpenSession, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Open a session presented by the caller, who must be allowed to read every slide (asked and audited per
    slide). Returns ``session_id`` and ``join_url`` (the page participants open) with the session's state."""
    if (body.slide_id is None) == (body.case_slides is None):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "give either slide_id or case_slides")
    _professional(principal)
    slides = _slides(rt, [body.slide_id] if body.slide_id is not None else list(body.case_slides or []))
    invitees = _known_users(rt, body.invitees)
    for slide in slides:
        guard(
            rt, principal, access.READ, _resource(slide), event_type=audit.INSTANCES_ACCESSED, request=request
        )
    session = hub(rt).open(principal.subject, tuple(s.id for s in slides), invitees, rt.clock())
    return session.snapshot()


@router.post("/{session_id}/invite")
def invite(session_id: str, body: Invite, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Invite more participants (the presenter only). Each is checked against the slides when joining."""
    _session_of(rt, session_id, principal)
    invitees = _known_users(rt, body.invitees)
    try:
        return hub(rt).invite(session_id, principal.subject, invitees).snapshot()
    except MultiheadError as exc:
        raise _http_error(exc) from exc


@router.get("/{session_id}")
def get_session(session_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The session (slides, presenter, invitees, who is connected and in control, the last viewport), for its
    members; reading it asks the policy for each slide, as reading a slide's record does."""
    session = _session_of(rt, session_id, principal)
    for slide in _slides(rt, list(session.slides)):
        guard(rt, principal, access.READ, _resource(slide), event_type=audit.PATIENT_RECORD, request=request)
    return session.snapshot()


@router.delete("/{session_id}")
def end_session(session_id: str, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """End the session (the presenter only); every participant is told and disconnected."""
    _session_of(rt, session_id, principal)
    try:
        hub(rt).end(session_id, principal.subject)
    except MultiheadError as exc:
        raise _http_error(exc) from exc
    return {"session_id": session_id, "ended": True}


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    # Accepted first so that the browser sees the reason: a handshake refused outright shows only a 403.
    await websocket.send_json({"type": "error", "reason": reason, "fatal": True})
    await websocket.close(code=code, reason=reason[:120])


def _admit(rt: Runtime, websocket: WebSocket, session_id: str) -> tuple[Principal, MultiheadSession]:
    """Who joins, and the session they may join; raises :class:`AuthError` or :class:`MultiheadError`."""
    principal = websocket_principal(rt, websocket)
    session = hub(rt).get(session_id, rt.clock())
    if session is None:
        raise MultiheadError(f"no multi-head session {session_id}", 404)
    source = client_address(websocket)
    if principal.kind != "user" or not session.is_member(principal.subject):
        audit.record(
            rt.db,
            principal,
            audit.INSTANCES_ACCESSED,
            "join:multihead",
            outcome=audit.DENIED,
            obj=f"multihead:{session_id}",
            source=source,
            detail="not invited to the session",
        )
        raise MultiheadError("you are not invited to this session", 403)
    with rt.db.sessions() as s:
        slides = [s.get(Slide, sid) for sid in session.slides]
    for slide in slides:
        if slide is None:
            raise MultiheadError("a slide of this session no longer exists", 404)
        try:
            access.check(
                rt.db,
                principal,
                access.READ,
                _resource(slide),
                event_type=audit.INSTANCES_ACCESSED,
                source=source,
            )
        except access.AccessDenied as exc:
            raise MultiheadError(f"slide {slide.id}: {exc.reason}", 403) from exc
    return principal, session


@ws_router.websocket("/ws/multihead/{session_id}")
async def multihead_socket(websocket: WebSocket, session_id: str) -> None:
    """A participant's live connection: receives the state, then every move of the one in control, joins,
    leaves and hand-overs; sends ``viewport``, ``pointer`` and ``handover`` messages."""
    rt = get_runtime()
    await websocket.accept()
    try:
        principal, _ = await anyio.to_thread.run_sync(lambda: _admit(rt, websocket, session_id))
    except AuthError as exc:
        await _refuse(websocket, 4401 if exc.status == 401 else 4403, exc.reason)
        return
    except MultiheadError as exc:
        await _refuse(websocket, 4000 + exc.status, exc.reason)
        return
    loop = asyncio.get_running_loop()
    outbox: asyncio.Queue[Message] = asyncio.Queue()

    def deliver(message: Message) -> None:
        with contextlib.suppress(RuntimeError):  # that socket's event loop is gone: it is leaving anyway
            loop.call_soon_threadsafe(outbox.put_nowait, message)

    try:
        conn_id, state = hub(rt).join(session_id, principal.subject, deliver)
    except MultiheadError as exc:  # ended in between
        await _refuse(websocket, 4000 + exc.status, exc.reason)
        return
    await websocket.send_json(state)
    sender = asyncio.create_task(_send(websocket, outbox))
    try:
        await _receive(websocket, rt, session_id, conn_id, deliver)
    finally:
        hub(rt).leave(session_id, conn_id)
        sender.cancel()


async def _send(websocket: WebSocket, outbox: asyncio.Queue[Message]) -> None:
    while True:
        message = await outbox.get()
        await websocket.send_json(message)
        if message.get("type") == "ended":
            await websocket.close(code=1000, reason="session ended")
            return


async def _receive(
    websocket: WebSocket, rt: Runtime, session_id: str, conn_id: str, deliver: Deliver
) -> None:
    while True:
        try:
            text = await websocket.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            return  # the participant left, or the session ended and the socket was closed
        kind = ""
        try:
            message = _parse(text)
            kind = str(message.get("type", ""))
            hub(rt).handle(session_id, conn_id, message)
        except MultiheadError as exc:
            if exc.status == 404:
                return  # the session ended under us
            deliver({"type": "error", "reason": exc.reason, "refused": kind})


def _parse(text: str) -> Message:
    if len(text) > MAX_MESSAGE:
        raise MultiheadError(f"message larger than {MAX_MESSAGE} bytes", 422)
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MultiheadError(f"not JSON: {exc.msg}", 422) from exc
    if not isinstance(message, dict):
        raise MultiheadError("a message is a JSON object with a type", 422)
    return message
