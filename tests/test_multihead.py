"""The multi-head microscope: a presenter's viewport and pointer reach the participants live over WebSocket;
only the one in control drives; control is handed over; uninvited users and users who may not read the slide
are refused, and the refusal is audited."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from archipel.platform import sessions
from archipel.platform.audit import AuditEvent
from archipel.platform.authn import Principal, create_user
from archipel.platform.credentials import cookie_names
from archipel.platform.login import session_policy
from archipel.platform.runtime import Runtime
from archipel.wsi.intake import SlideMetadata
from archipel.wsi.slides import hash_file, register_slide
from archipel.wsi.synthetic import write_svs
from tests.access_support import ensure_master
from tests.auth_helpers import Clock, bearer

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

SITE, OTHER, PATIENT_ID = "SITE-A", "SITE-B", "MH0001"


@dataclass
class Room:
    """Accounts with bearer tokens, and two slides of one case of SITE-A."""

    http: TestClient
    tokens: dict[str, str]
    slides: list[str]
    stack: contextlib.ExitStack
    #: The browser session cookie of each account.
    cookies: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return bearer(self.tokens[who])

    def open(self, who: str = "presenter", invitees: tuple[str, ...] = ("follower",), **body: Any) -> str:
        body = body or {"slide_id": self.slides[0]}
        r = self.http.post(
            "/api/multihead", json={**body, "invitees": list(invitees)}, headers=self.headers(who)
        )
        assert r.status_code == 201, r.text
        assert r.json()["join_url"] == f"/app/multihead.html?session={r.json()['session_id']}"
        return str(r.json()["session_id"])

    def join(self, session_id: str, who: str) -> Any:
        return self.http.websocket_connect(f"/ws/multihead/{session_id}", headers=self.headers(who))

    def enter(self, session_id: str, who: str) -> WebSocketTestSession:
        """A connection closed when the test's ``stack`` closes."""
        ws: WebSocketTestSession = self.stack.enter_context(self.join(session_id, who))
        return ws


def _slide(rt: Runtime, folder: Path, name: str) -> str:
    path = write_svs(folder / f"{name}.svs", 300, 200, tile=128, downsamples=(1,), seed=5)
    sha, size = hash_file(path)
    meta = SlideMetadata(patient_id=PATIENT_ID, issuer=SITE, accession="MHACC1", stain="HE")
    spool = folder / f"{name}.spool"
    spool.write_bytes(path.read_bytes())
    return register_slide(
        rt, spool, sha, size, meta, filename=path.name, origin="upload", created_by="t"
    ).slide_id


@pytest.fixture
def room(runtime: Runtime, clock: Clock, http: TestClient, tmp_path: Path) -> Iterator[Room]:
    ensure_master(runtime.db, SITE, PATIENT_ID, "MULTIHEAD", "19700101")
    tokens, cookies = {}, {}
    policy = session_policy(runtime.settings)
    for name, site in (("presenter", SITE), ("follower", SITE), ("stranger", SITE), ("outsider", OTHER)):
        with runtime.db.write() as s:
            create_user(s, name, "pathologist", f"pw-{name}-0123456789", site)
        # A session opened as the log-in route opens it (the log-in itself is tested in test_authn_login).
        who = Principal(name, "pathologist", site)
        row = sessions.open_session(runtime.db, who, "password+totp", policy, clock.now)
        tokens[name] = sessions.issue_token(row, runtime.settings.signing_key(), policy, clock.now).token
        cookies[name] = sessions.issue_token(
            row, runtime.settings.signing_key(), policy, clock.now, use=sessions.COOKIE
        ).token
    slides = [_slide(runtime, tmp_path, "he"), _slide(runtime, tmp_path, "ihc")]
    with contextlib.ExitStack() as stack:
        yield Room(http, tokens, slides, stack, cookies)


def _until(ws: WebSocketTestSession, kind: str) -> dict[str, Any]:
    """The next message of ``kind`` (skipping joins and leaves of others)."""
    for _ in range(20):
        message: dict[str, Any] = ws.receive_json()
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind} message")


def _refusal(room: Room, session_id: str, who: str) -> tuple[dict[str, Any], int]:
    with room.join(session_id, who) as ws:
        error = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    return error, closed.value.code


def _events(rt: Runtime, who: str) -> list[tuple[str, str, str]]:
    with rt.db.sessions() as s:
        rows = s.execute(select(AuditEvent).where(AuditEvent.actor == who).order_by(AuditEvent.id)).scalars()
        return [(e.action, e.outcome, e.patient) for e in rows if e.event_type == "110103"]


def test_the_follower_sees_the_presenters_viewport_and_pointer(room: Room, runtime: Runtime) -> None:
    session_id = room.open()
    with room.join(session_id, "presenter") as presenter:
        assert _until(presenter, "state")["control"] == "presenter"
        presenter.send_json({"type": "viewport", "slide_id": room.slides[0], "center": [150, 100], "zoom": 2})
        with room.join(session_id, "follower") as follower:
            state = _until(follower, "state")
            # A late joiner starts where the presenter is.
            assert state["viewport"]["center"] == [150.0, 100.0] and state["participants"] == [
                "presenter",
                "follower",
            ]
            assert _until(presenter, "joined")["user"] == "follower"
            presenter.send_json(
                {"type": "viewport", "slide_id": room.slides[0], "center": [40, 60.5], "zoom": 8}
            )
            moved = _until(follower, "viewport")
            assert moved == {
                "type": "viewport",
                "slide_id": room.slides[0],
                "center": [40.0, 60.5],
                "zoom": 8.0,
                "from": "presenter",
            }
            presenter.send_json({"type": "pointer", "x": 12, "y": 34})
            assert _until(follower, "pointer") == {
                "type": "pointer",
                "x": 12.0,
                "y": 34.0,
                "from": "presenter",
            }
        assert _until(presenter, "left")["participants"] == ["presenter"]
    # Opening the session and each join are audited like opening the slide.
    assert _events(runtime, "follower") == [("read:slide", "success", f"{SITE}/{PATIENT_ID}")]
    assert _events(runtime, "presenter") == [("read:slide", "success", f"{SITE}/{PATIENT_ID}")] * 2


def test_a_followers_viewport_is_refused_until_control_is_handed_over(room: Room) -> None:
    session_id = room.open(case_slides=room.slides)
    with room.join(session_id, "presenter") as presenter:
        _until(presenter, "state")  # joined: the follower's arrival is told to it
        follower = room.enter(session_id, "follower")
        _until(follower, "state")
        _until(presenter, "joined")
        follower.send_json({"type": "viewport", "slide_id": room.slides[1], "center": [1, 1], "zoom": 1})
        refused = _until(follower, "error")
        assert refused["refused"] == "viewport" and "only presenter, who has control" in refused["reason"]
        follower.send_json({"type": "handover", "to": "follower"})
        assert "may hand it over" in _until(follower, "error")["reason"]

        presenter.send_json({"type": "handover", "to": "follower"})
        assert _until(follower, "control") == {"type": "control", "user": "follower", "by": "presenter"}
        assert _until(presenter, "control")["user"] == "follower"
        follower.send_json({"type": "viewport", "slide_id": room.slides[1], "center": [10, 20], "zoom": 4})
        assert _until(presenter, "viewport")["from"] == "follower"
        presenter.send_json({"type": "pointer", "x": 1, "y": 1})
        assert "only follower, who has control" in _until(presenter, "error")["reason"]
        # The presenter takes control back at any time.
        presenter.send_json({"type": "handover", "to": "presenter"})
        assert _until(follower, "control")["user"] == "presenter"
    r = room.http.get(f"/api/multihead/{session_id}", headers=room.headers("follower"))
    assert r.status_code == 200 and r.json()["control"] == "presenter" and r.json()["slides"] == room.slides


def test_bad_messages_get_their_reason_and_change_nothing(room: Room) -> None:
    session_id = room.open()
    with room.join(session_id, "presenter") as presenter:
        _until(presenter, "state")
        for bad, reason in (
            ("not json", "not JSON"),
            ({"type": "viewport", "slide_id": "elsewhere", "center": [1, 1], "zoom": 1}, "not shown"),
            ({"type": "viewport", "slide_id": room.slides[0], "center": [1], "zoom": 1}, "center must be"),
            (
                {"type": "viewport", "slide_id": room.slides[0], "center": [1, 1], "zoom": 0},
                "zoom must be positive",
            ),
            ({"type": "pointer", "x": "left", "y": 1}, "finite number"),
            ({"type": "handover", "to": "follower"}, "not connected"),
            ({"type": "dance"}, "unknown message type"),
        ):
            if isinstance(bad, str):
                presenter.send_text(bad)
            else:
                presenter.send_json(bad)
            assert reason in _until(presenter, "error")["reason"]
    state = room.http.get(f"/api/multihead/{session_id}", headers=room.headers("presenter")).json()
    assert state["viewport"] is None and state["pointer"] is None and state["control"] == "presenter"


def test_the_uninvited_the_unauthenticated_and_those_who_may_not_read_the_slide_are_refused(
    room: Room, runtime: Runtime
) -> None:
    session_id = room.open()
    error, code = _refusal(room, session_id, "stranger")
    assert code == 4403 and error["reason"] == "you are not invited to this session"
    assert _events(runtime, "stranger") == [("join:multihead", "denied", "")]
    assert room.http.get(f"/api/multihead/{session_id}", headers=room.headers("stranger")).status_code == 403
    # No credential at all, or a bad one.
    with room.http.websocket_connect(f"/ws/multihead/{session_id}") as ws:
        assert ws.receive_json()["reason"] == "authentication required"
    with room.http.websocket_connect(f"/ws/multihead/{session_id}?access_token=forged") as ws:
        assert ws.receive_json()["fatal"] is True
    # A client that cannot set headers on the handshake sends its token as a query parameter.
    with room.http.websocket_connect(
        f"/ws/multihead/{session_id}?access_token={room.tokens['presenter']}"
    ) as ws:
        assert ws.receive_json()["type"] == "state"
    # A browser's cookie counts only from our own origin (a cross-site page cannot ride on it).
    cookie = {"Cookie": f"{cookie_names(runtime.settings)[0]}={room.cookies['presenter']}"}
    url = f"/ws/multihead/{session_id}"
    with room.http.websocket_connect(url, headers={**cookie, "Origin": "https://elsewhere.example"}) as ws:
        assert ws.receive_json()["reason"] == "cross-origin WebSocket from https://elsewhere.example refused"
    with room.http.websocket_connect(url, headers={**cookie, "Origin": "https://testserver"}) as ws:
        assert ws.receive_json()["type"] == "state"

    # An invitee who may not read the slide (another site, no care relationship) is refused too.
    session_id = room.open(invitees=("follower", "outsider"))
    error, code = _refusal(room, session_id, "outsider")
    assert code == 4403 and "no care relationship with this patient" in error["reason"]
    assert _events(runtime, "outsider") == [("read:slide", "denied", f"{SITE}/{PATIENT_ID}")]
    # Nor may they open a session on it themselves.
    r = room.http.post(
        "/api/multihead", json={"slide_id": room.slides[0], "invitees": []}, headers=room.headers("outsider")
    )
    assert r.status_code == 403


def test_the_presenter_invites_and_ends_the_session_and_bad_openings_are_refused(room: Room) -> None:
    session_id = room.open(invitees=())
    error, _ = _refusal(room, session_id, "follower")
    assert error["reason"] == "you are not invited to this session"
    r = room.http.post(
        f"/api/multihead/{session_id}/invite",
        json={"invitees": ["follower"]},
        headers=room.headers("presenter"),
    )
    assert r.status_code == 200 and r.json()["invitees"] == ["follower"]
    with room.join(session_id, "follower") as follower:
        _until(follower, "state")
        forbidden = room.http.delete(f"/api/multihead/{session_id}", headers=room.headers("follower"))
        assert forbidden.status_code == 403
        ended = room.http.delete(f"/api/multihead/{session_id}", headers=room.headers("presenter"))
        assert ended.status_code == 200
        assert _until(follower, "ended")["reason"] == "presenter ended the session"
        with pytest.raises(WebSocketDisconnect) as closed:
            follower.receive_json()
        assert closed.value.code == 1000
    assert room.http.get(f"/api/multihead/{session_id}", headers=room.headers("presenter")).status_code == 404

    def post(body: dict[str, Any]) -> Any:
        return room.http.post("/api/multihead", json=body, headers=room.headers("presenter"))

    assert "either slide_id or case_slides" in post({"invitees": []}).json()["detail"]
    assert post({"slide_id": room.slides[0], "case_slides": room.slides}).status_code == 422
    assert post({"slide_id": "nope"}).status_code == 404
    unknown = post({"slide_id": room.slides[0], "invitees": ["nobody"]})
    assert unknown.status_code == 422 and unknown.json()["detail"] == "unknown user(s): nobody"
    assert post({"case_slides": []}).status_code == 422
