"""The virtual multi-head microscope: a presenter shows slides and every participant's viewer follows.

A :class:`MultiheadSession` holds the slides shown, who was invited, who is connected and who is *in control*
(the only one whose viewport and pointer the others follow; the presenter at first, then whoever control is
handed to). The :class:`Hub` keeps the sessions of this process and fans messages out to the connections.
It knows nothing of HTTP or WebSockets: a connection is a :data:`Deliver` callable, which must be safe to call
from any thread (the API wraps each socket's queue so). Access to the slides is checked by the API at open and
at each join; the hub checks membership and control. State is in memory, so one process serves a session (see
docs/decisions/0025-multi-head-sessions.md for what several processes would need).

Messages are JSON objects with a ``type``; coordinates are level-0 image pixels:
``viewport`` ``{"slide_id", "center": [x, y], "zoom"}``, ``pointer`` ``{"x", "y"}``, ``handover`` ``{"to"}``.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

log = logging.getLogger("archipel.wsi")

#: A session ends by itself this long after it was opened (a forgotten tumor board must not stay open).
MAX_AGE = timedelta(hours=12)
MAX_SLIDES = 50
MAX_INVITEES = 50
#: Coordinates beyond this (in level-0 pixels) are no slide's.
MAX_COORDINATE = 1e7
MAX_ZOOM = 1e4

Message = dict[str, Any]
Deliver = Callable[[Message], None]


class MultiheadError(Exception):
    """A request the session refuses; ``reason`` says why and ``status`` is the HTTP status it maps to."""

    def __init__(self, reason: str, status: int = 409) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class Connection:
    """One open socket of a participant (a user may have several, e.g. two screens)."""

    id: str
    username: str
    deliver: Deliver


@dataclass
class MultiheadSession:
    """A shared viewing session: its slides, its members, who is connected and who drives the view."""

    id: str
    presenter: str
    slides: tuple[str, ...]
    invitees: set[str]
    controller: str
    opened_at: datetime
    connections: dict[str, Connection] = field(default_factory=dict)
    viewport: Message | None = None
    pointer: Message | None = None
    #: Who is connected when the connections live elsewhere (other processes: :mod:`multihead_redis`).
    connected: list[str] | None = None

    def is_member(self, username: str) -> bool:
        """Whether ``username`` is the presenter or was invited."""
        return username == self.presenter or username in self.invitees

    def participants(self) -> list[str]:
        """Usernames connected now, each once, in order of arrival."""
        if self.connected is not None:
            return list(self.connected)
        return list(dict.fromkeys(c.username for c in self.connections.values()))

    def snapshot(self) -> Message:
        """The session as the API and a joining participant see it."""
        return {
            "session_id": self.id,
            "presenter": self.presenter,
            "slides": list(self.slides),
            "invitees": sorted(self.invitees),
            "control": self.controller,
            "participants": self.participants(),
            "viewport": self.viewport,
            "pointer": self.pointer,
            "opened_at": self.opened_at.isoformat(),
            "join_url": join_url(self.id),
        }


def join_url(session_id: str) -> str:
    """Where a participant's browser opens the session."""
    return f"/app/multihead.html?session={session_id}"


def _number(value: Any, name: str, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MultiheadError(f"{name} must be a finite number, got {value!r}", 422)
    if abs(value) > limit:
        raise MultiheadError(f"{name} {value} is out of range (at most {limit:g})", 422)
    return float(value)


def parse_viewport(message: Message, slides: tuple[str, ...]) -> Message:
    """A valid ``viewport`` message of a session showing ``slides``, normalised; raises :class:`MultiheadError`."""
    slide_id = message.get("slide_id")
    if slide_id not in slides:
        raise MultiheadError(f"slide {slide_id!r} is not shown in this session", 422)
    center = message.get("center")
    if not isinstance(center, list) or len(center) != 2:
        raise MultiheadError("center must be [x, y] in level-0 pixels", 422)
    x, y = (_number(v, "center", MAX_COORDINATE) for v in center)
    zoom = _number(message.get("zoom"), "zoom", MAX_ZOOM)
    if zoom <= 0:
        raise MultiheadError(f"zoom must be positive, got {zoom}", 422)
    return {"type": "viewport", "slide_id": slide_id, "center": [x, y], "zoom": zoom}


def parse_pointer(message: Message, slides: tuple[str, ...]) -> Message:
    """A valid ``pointer`` message (``slide_id`` optional), normalised; raises :class:`MultiheadError`."""
    out: Message = {
        "type": "pointer",
        "x": _number(message.get("x"), "x", MAX_COORDINATE),
        "y": _number(message.get("y"), "y", MAX_COORDINATE),
    }
    if message.get("slide_id") is not None:
        if message["slide_id"] not in slides:
            raise MultiheadError(f"slide {message['slide_id']!r} is not shown in this session", 422)
        out["slide_id"] = message["slide_id"]
    return out


class SessionHub(Protocol):
    """Where sessions live and how messages reach the participants: :class:`Hub` (this process) or
    :class:`archipel.wsi.multihead_redis.RedisHub` (every process, through Redis)."""

    def open(
        self, presenter: str, slides: tuple[str, ...], invitees: set[str], now: datetime
    ) -> MultiheadSession: ...

    def get(self, session_id: str, now: datetime) -> MultiheadSession | None: ...

    def invite(self, session_id: str, by: str, usernames: set[str]) -> MultiheadSession: ...

    def end(self, session_id: str, by: str) -> None: ...

    def join(self, session_id: str, username: str, deliver: Deliver) -> tuple[str, Message]: ...

    def leave(self, session_id: str, conn_id: str) -> None: ...

    def handle(self, session_id: str, conn_id: str, message: Message) -> None: ...


class Hub:
    """The multi-head sessions of this process. Thread-safe: sockets of several event loops may share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, MultiheadSession] = {}
        self._ids = itertools.count(1)

    def open(
        self, presenter: str, slides: tuple[str, ...], invitees: set[str], now: datetime
    ) -> MultiheadSession:
        """A new session presented by ``presenter`` (who holds control) on ``slides``."""
        session = MultiheadSession(
            id=uuid.uuid4().hex,
            presenter=presenter,
            slides=slides,
            invitees=set(invitees) - {presenter},
            controller=presenter,
            opened_at=now,
        )
        with self._lock:
            self._expire(now)
            self._sessions[session.id] = session
        log.info(
            "event=multihead_opened session=%s slides=%d invitees=%d",
            session.id,
            len(slides),
            len(session.invitees),
        )
        return session

    def get(self, session_id: str, now: datetime) -> MultiheadSession | None:
        """The session, unless it ended or expired."""
        with self._lock:
            self._expire(now)
            return self._sessions.get(session_id)

    def _expire(self, now: datetime) -> None:
        for sid in [sid for sid, s in self._sessions.items() if now - s.opened_at > MAX_AGE]:
            self._close(self._sessions.pop(sid), "the session reached its 12-hour limit")

    @staticmethod
    def _close(session: MultiheadSession, reason: str) -> None:
        for conn in session.connections.values():
            conn.deliver({"type": "ended", "reason": reason})
        session.connections.clear()
        log.info("event=multihead_ended session=%s reason=%r", session.id, reason)

    def _member_session(self, session_id: str) -> MultiheadSession:
        session = self._sessions.get(session_id)
        if session is None:
            raise MultiheadError(f"no multi-head session {session_id}", 404)
        return session

    def invite(self, session_id: str, by: str, usernames: set[str]) -> MultiheadSession:
        """Add invitees (the presenter only); the connected participants are told."""
        with self._lock:
            session = self._member_session(session_id)
            if by != session.presenter:
                raise MultiheadError("only the presenter invites participants", 403)
            added = sorted(usernames - session.invitees - {session.presenter})
            session.invitees |= set(added)
            self._broadcast(
                session, {"type": "invited", "users": added, "invitees": sorted(session.invitees)}
            )
        return session

    def end(self, session_id: str, by: str) -> None:
        """End the session (the presenter only): every connection is told and closed."""
        with self._lock:
            session = self._member_session(session_id)
            if by != session.presenter:
                raise MultiheadError("only the presenter ends the session", 403)
            del self._sessions[session_id]
            self._close(session, f"{by} ended the session")

    def join(self, session_id: str, username: str, deliver: Deliver) -> tuple[str, Message]:
        """Connect a member (access to the slides is checked before); returns the connection id and the state
        to send it. Everyone else is told who joined."""
        with self._lock:
            session = self._member_session(session_id)
            if not session.is_member(username):
                raise MultiheadError("you are not invited to this session", 403)
            conn = Connection(str(next(self._ids)), username, deliver)
            session.connections[conn.id] = conn
            self._broadcast(
                session,
                {"type": "joined", "user": username, "participants": session.participants()},
                skip=conn.id,
            )
            state = {"type": "state", "you": username, **session.snapshot()}
        log.info("event=multihead_joined session=%s user=%s", session_id, username)
        return conn.id, state

    def leave(self, session_id: str, conn_id: str) -> None:
        """Disconnect; when the one in control leaves, control returns to the presenter."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or conn_id not in session.connections:
                return
            username = session.connections.pop(conn_id).username
            still_here = session.participants()
            self._broadcast(session, {"type": "left", "user": username, "participants": still_here})
            if session.controller == username and username not in still_here:
                session.controller = session.presenter
                self._broadcast(session, {"type": "control", "user": session.presenter, "by": username})
        log.info("event=multihead_left session=%s user=%s", session_id, username)

    def handle(self, session_id: str, conn_id: str, message: Message) -> None:
        """Apply a participant's message; raises :class:`MultiheadError` (sent back to that participant only)
        for a refused one. Viewport and pointer moves come only from the one in control."""
        kind = message.get("type")
        with self._lock:
            session = self._member_session(session_id)
            conn = session.connections.get(conn_id)
            if conn is None:
                raise MultiheadError("this connection has left the session")
            if kind in ("viewport", "pointer"):
                if conn.username != session.controller:
                    raise MultiheadError(
                        f"only {session.controller}, who has control, may move the view", 403
                    )
                if kind == "viewport":
                    out = session.viewport = parse_viewport(message, session.slides)
                else:
                    out = session.pointer = parse_pointer(message, session.slides)
                self._broadcast(session, {**out, "from": conn.username}, skip=conn_id)
            elif kind == "handover":
                self._handover(session, conn.username, message.get("to"))
            else:
                raise MultiheadError(f"unknown message type {kind!r}", 422)

    def _handover(self, session: MultiheadSession, by: str, to: Any) -> None:
        # The presenter may take control back at any time; otherwise only the one in control hands it on.
        if by not in (session.controller, session.presenter):
            raise MultiheadError(f"only {session.controller}, who has control, may hand it over", 403)
        if not isinstance(to, str) or to not in session.participants():
            raise MultiheadError(f"{to!r} is not connected to this session", 422)
        session.controller = to
        self._broadcast(session, {"type": "control", "user": to, "by": by})
        log.info("event=multihead_handover session=%s by=%s to=%s", session.id, by, to)

    @staticmethod
    def _broadcast(session: MultiheadSession, message: Message, skip: str | None = None) -> None:
        for conn in session.connections.values():
            if conn.id != skip:
                conn.deliver(message)


_hubs: dict[int, Hub] = {}


def hub_of(runtime_key: int) -> Hub:
    """The hub of a runtime (keyed by its identity, so that a runtime replaced in tests starts empty)."""
    found = _hubs.get(runtime_key)
    if found is None:
        _hubs.clear()
        found = _hubs[runtime_key] = Hub()
    return found
