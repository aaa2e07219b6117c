"""Multi-head sessions across processes through Redis: two hubs on one real Redis stand for two API processes;
a presenter connected to one drives a follower connected to the other, control changes hands across them,
leaving and ending reach everyone, and the same refusals hold."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from archipel.wsi.multihead import Message, MultiheadError
from archipel.wsi.multihead_redis import PREFIX, RedisHub
from tests.support import REDIS_URL, redis_available, wait_until

pytestmark = pytest.mark.redis

SLIDE = "slide-1"


class Inbox:
    """What one connection received, filled by the hub's relay thread."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        with self._lock:
            self.messages.append(message)

    def wait_for(self, kind: str, **fields: Any) -> Message:
        def found() -> Message | None:
            with self._lock:
                return next(
                    (
                        m
                        for m in self.messages
                        if m["type"] == kind and all(m.get(k) == v for k, v in fields.items())
                    ),
                    None,
                )

        wait_until(lambda: found() is not None, 10, f"a {kind} message {fields} (got {self.messages})")
        message = found()
        assert message is not None
        return message

    def kinds(self) -> list[str]:
        with self._lock:
            return [m["type"] for m in self.messages]


@pytest.fixture
def hubs() -> Iterator[tuple[RedisHub, RedisHub]]:
    if not redis_available():
        pytest.skip("Redis does not answer on 127.0.0.1:6379")
    prefix = (
        f"{PREFIX}test-{uuid.uuid4().hex[:8]}:"  # two "processes" sharing one prefix, apart from other tests
    )
    a, b = RedisHub(REDIS_URL, prefix), RedisHub(REDIS_URL, prefix)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_presenter_on_one_process_drives_a_follower_on_another(hubs: tuple[RedisHub, RedisHub]) -> None:
    a, b = hubs
    now = datetime.now(UTC)
    session = a.open("presenter", (SLIDE,), {"follower"}, now)
    assert b.get(session.id, now) is not None

    at_a, at_b = Inbox(), Inbox()
    p_conn, state = a.join(session.id, "presenter", at_a)
    assert state["control"] == "presenter" and state["participants"] == ["presenter"]
    f_conn, state = b.join(session.id, "follower", at_b)
    assert state["participants"] == ["presenter", "follower"]
    assert at_a.wait_for("joined")["user"] == "follower"

    a.handle(session.id, p_conn, {"type": "viewport", "slide_id": SLIDE, "center": [10, 20], "zoom": 2})
    moved = at_b.wait_for("viewport")
    assert moved == {
        "type": "viewport",
        "slide_id": SLIDE,
        "center": [10.0, 20.0],
        "zoom": 2.0,
        "from": "presenter",
    }
    with pytest.raises(MultiheadError, match="only presenter, who has control"):
        b.handle(session.id, f_conn, {"type": "pointer", "x": 1, "y": 1})
    with pytest.raises(MultiheadError, match="may hand it over"):
        b.handle(session.id, f_conn, {"type": "handover", "to": "follower"})

    a.handle(session.id, p_conn, {"type": "handover", "to": "follower"})
    assert at_b.wait_for("control")["user"] == "follower"
    b.handle(session.id, f_conn, {"type": "pointer", "x": 5, "y": 6})
    assert at_a.wait_for("pointer")["from"] == "follower"
    seen_from_a = a.get(session.id, now)
    assert seen_from_a is not None and seen_from_a.controller == "follower"
    assert seen_from_a.viewport == {
        "type": "viewport",
        "slide_id": SLIDE,
        "center": [10.0, 20.0],
        "zoom": 2.0,
    }

    # The one in control leaves: control returns to the presenter, on every process.
    b.leave(session.id, f_conn)
    assert at_a.wait_for("left")["participants"] == ["presenter"]
    assert at_a.wait_for("control", user="presenter")["by"] == "follower"
    assert "viewport" not in at_a.kinds(), "a move is not echoed to its sender"


def test_invitations_refusals_and_the_end_reach_every_process(hubs: tuple[RedisHub, RedisHub]) -> None:
    a, b = hubs
    now = datetime.now(UTC)
    session = a.open("presenter", (SLIDE,), set(), now)
    with pytest.raises(MultiheadError, match="not invited"):
        b.join(session.id, "colleague", Inbox())
    with pytest.raises(MultiheadError, match="only the presenter invites"):
        b.invite(session.id, "colleague", {"colleague"})
    at_a, at_b = Inbox(), Inbox()
    a.join(session.id, "presenter", at_a)
    assert b.invite(session.id, "presenter", {"colleague"}).invitees == {"colleague"}
    assert at_a.wait_for("invited")["users"] == ["colleague"]
    c_conn, _ = b.join(session.id, "colleague", at_b)
    with pytest.raises(MultiheadError, match="not shown in this session"):
        a.handle(
            session.id,
            next(iter(a._local[session.id])),
            {"type": "viewport", "slide_id": "x", "center": [0, 0], "zoom": 1},
        )
    with pytest.raises(MultiheadError, match="only the presenter ends"):
        b.end(session.id, "colleague")
    b.end(session.id, "presenter")
    assert at_a.wait_for("ended")["reason"] == "presenter ended the session"
    at_b.wait_for("ended")
    assert a.get(session.id, now) is None
    with pytest.raises(MultiheadError, match="no multi-head session"):
        b.handle(session.id, c_conn, {"type": "pointer", "x": 1, "y": 1})
