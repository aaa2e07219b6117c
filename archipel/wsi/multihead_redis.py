"""Multi-head sessions shared by several processes through Redis (the broker of a many-process deployment).

Same behaviour as :class:`archipel.wsi.multihead.Hub`, with the state in Redis instead of memory: a hash per
session (presenter, slides, invitees, who is in control, last viewport and pointer) and a hash of its connections
(connection id -> username, for every process), both expiring with the session. Every message is published on the
session's channel; each process's subscriber thread hands it to the connections it holds, so a presenter on one
API process drives followers connected to another. Hand-over and leaving run as Lua scripts, so that two
processes never both change who is in control. ``archipel`` uses it when ``broker_url`` is a Redis URL
(decision 0025).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import datetime
from typing import Any, cast

import redis

from archipel.wsi.multihead import (
    MAX_AGE,
    Connection,
    Deliver,
    Message,
    MultiheadError,
    MultiheadSession,
    parse_pointer,
    parse_viewport,
)

log = logging.getLogger("archipel.wsi")

PREFIX = "archipel:multihead:"

# KEYS: state, connections; ARGV: by, to. Answers ok, gone, absent, or control:<who has it>.
_HANDOVER = """
local controller = redis.call('HGET', KEYS[1], 'controller')
if not controller then return 'gone' end
local presenter = redis.call('HGET', KEYS[1], 'presenter')
if ARGV[1] ~= controller and ARGV[1] ~= presenter then return 'control:' .. controller end
for _, name in ipairs(redis.call('HVALS', KEYS[2])) do
  if name == ARGV[2] then
    redis.call('HSET', KEYS[1], 'controller', ARGV[2])
    return 'ok'
  end
end
return 'absent'
"""

# KEYS: state, connections; ARGV: connection id. Answers "<who left>\\n<presenter, when control returned to them>".
_LEAVE = """
local who = redis.call('HGET', KEYS[2], ARGV[1])
if not who then return '' end
redis.call('HDEL', KEYS[2], ARGV[1])
for _, name in ipairs(redis.call('HVALS', KEYS[2])) do
  if name == who then return who .. '\\n' end
end
if redis.call('HGET', KEYS[1], 'controller') == who then
  local presenter = redis.call('HGET', KEYS[1], 'presenter')
  redis.call('HSET', KEYS[1], 'controller', presenter)
  return who .. '\\n' .. presenter
end
return who .. '\\n'
"""


class RedisHub:
    """The multi-head sessions of every process, kept in Redis; the connections of this process in memory."""

    def __init__(self, url: str, prefix: str = PREFIX) -> None:
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self._prefix = prefix
        self._lock = threading.Lock()
        self._local: dict[str, dict[str, Connection]] = {}
        self._handover = self._redis.register_script(_HANDOVER)
        self._leave = self._redis.register_script(_LEAVE)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(**{f"{prefix}events:*": self._relay})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.25, daemon=True)

    def close(self) -> None:
        """Stop relaying (the sessions stay in Redis for the other processes)."""
        self._thread.stop()
        self._thread.join(timeout=5)  # the relay thread must not read a socket being closed
        self._pubsub.close()
        self._redis.close()

    # --- keys and messages ---

    def _state(self, session_id: str) -> str:
        return f"{self._prefix}{session_id}"

    def _conns(self, session_id: str) -> str:
        return f"{self._prefix}{session_id}:connections"

    def _publish(self, session_id: str, message: Message, skip: str | None = None) -> None:
        payload = json.dumps({"skip": skip, "message": message})
        self._redis.publish(f"{self._prefix}events:{session_id}", payload)

    def _relay(self, event: dict[str, Any]) -> None:
        session_id = str(event["channel"]).rsplit(":", 1)[-1]
        data = json.loads(event["data"])
        message: Message = data["message"]
        with self._lock:
            local = self._local.get(session_id, {})
            targets = [c for c in local.values() if c.id != data["skip"]]
            if message.get("type") == "ended":
                self._local.pop(session_id, None)
        for conn in targets:
            conn.deliver(message)

    # --- the hub ---

    def open(
        self, presenter: str, slides: tuple[str, ...], invitees: set[str], now: datetime
    ) -> MultiheadSession:
        """A new session presented by ``presenter`` (who holds control) on ``slides``."""
        session_id = uuid.uuid4().hex
        key = self._state(session_id)
        pipe = self._redis.pipeline()
        pipe.hset(
            key,
            mapping={
                "presenter": presenter,
                "slides": json.dumps(list(slides)),
                "invitees": json.dumps(sorted(set(invitees) - {presenter})),
                "controller": presenter,
                "opened_at": now.isoformat(),
                "viewport": "null",
                "pointer": "null",
            },
        )
        pipe.expire(key, int(MAX_AGE.total_seconds()))
        pipe.execute()
        log.info("event=multihead_opened session=%s slides=%d store=redis", session_id, len(slides))
        session = self._fetch(session_id)
        assert session is not None
        return session

    def get(self, session_id: str, now: datetime) -> MultiheadSession | None:
        """The session, unless it ended or expired."""
        session = self._fetch(session_id)
        if session is None or now - session.opened_at > MAX_AGE:
            return None
        return session

    def _fetch(self, session_id: str) -> MultiheadSession | None:
        # Redis expires the keys with the session's age limit; ``get`` also checks it at the caller's clock.
        fields = cast(dict[str, str], self._redis.hgetall(self._state(session_id)))
        if not fields:
            return None
        opened = datetime.fromisoformat(fields["opened_at"])
        connections = cast(dict[str, str], self._redis.hgetall(self._conns(session_id)))
        return MultiheadSession(
            id=session_id,
            presenter=fields["presenter"],
            slides=tuple(json.loads(fields["slides"])),
            invitees=set(json.loads(fields["invitees"])),
            controller=fields["controller"],
            opened_at=opened,
            viewport=json.loads(fields["viewport"]),
            pointer=json.loads(fields["pointer"]),
            # Connection ids begin with their arrival time, so their order is the order of arrival.
            connected=list(dict.fromkeys(connections[c] for c in sorted(connections))),
        )

    def _session(self, session_id: str) -> MultiheadSession:
        session = self._fetch(session_id)
        if session is None:
            raise MultiheadError(f"no multi-head session {session_id}", 404)
        return session

    def invite(self, session_id: str, by: str, usernames: set[str]) -> MultiheadSession:
        """Add invitees (the presenter only); the connected participants are told."""
        key = self._state(session_id)
        added: list[str] = []

        def add(pipe: Any) -> None:
            current = pipe.hmget(key, "presenter", "invitees")
            if current[0] is None:
                raise MultiheadError(f"no multi-head session {session_id}", 404)
            if current[0] != by:
                raise MultiheadError("only the presenter invites participants", 403)
            invitees = set(json.loads(current[1]))
            added[:] = sorted(usernames - invitees - {by})
            pipe.multi()
            pipe.hset(key, "invitees", json.dumps(sorted(invitees | set(added))))

        self._redis.transaction(add, key)
        session = self._session(session_id)
        self._publish(session_id, {"type": "invited", "users": added, "invitees": sorted(session.invitees)})
        return session

    def end(self, session_id: str, by: str) -> None:
        """End the session (the presenter only): every connection, in every process, is told and closed."""
        session = self._session(session_id)
        if by != session.presenter:
            raise MultiheadError("only the presenter ends the session", 403)
        self._redis.delete(self._state(session_id), self._conns(session_id))
        self._publish(session_id, {"type": "ended", "reason": f"{by} ended the session"})
        log.info("event=multihead_ended session=%s by=%s store=redis", session_id, by)

    def join(self, session_id: str, username: str, deliver: Deliver) -> tuple[str, Message]:
        """Connect a member; returns the connection id and the state to send it. Everyone else is told."""
        session = self._session(session_id)
        if not session.is_member(username):
            raise MultiheadError("you are not invited to this session", 403)
        conn = Connection(f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}", username, deliver)
        with self._lock:
            self._local.setdefault(session_id, {})[conn.id] = conn
        conns = self._conns(session_id)
        pipe = self._redis.pipeline()
        pipe.hset(conns, conn.id, username)
        pipe.expire(conns, int(MAX_AGE.total_seconds()))
        pipe.execute()
        session = self._session(session_id)
        self._publish(
            session_id, {"type": "joined", "user": username, "participants": session.participants()}, conn.id
        )
        log.info("event=multihead_joined session=%s user=%s store=redis", session_id, username)
        return conn.id, {"type": "state", "you": username, **session.snapshot()}

    def leave(self, session_id: str, conn_id: str) -> None:
        """Disconnect; when the one in control leaves, control returns to the presenter."""
        with self._lock:
            self._local.get(session_id, {}).pop(conn_id, None)
        answer = str(self._leave(keys=[self._state(session_id), self._conns(session_id)], args=[conn_id]))
        if not answer:
            return
        who, _, returned_to = answer.partition("\n")
        session = self._fetch(session_id)
        participants = session.participants() if session is not None else []
        self._publish(session_id, {"type": "left", "user": who, "participants": participants})
        if returned_to:
            self._publish(session_id, {"type": "control", "user": returned_to, "by": who})

    def handle(self, session_id: str, conn_id: str, message: Message) -> None:
        """Apply a participant's message (see :meth:`archipel.wsi.multihead.Hub.handle`)."""
        kind = message.get("type")
        session = self._session(session_id)
        username = self._redis.hget(self._conns(session_id), conn_id)
        if username is None:
            raise MultiheadError("this connection has left the session")
        if kind in ("viewport", "pointer"):
            # Not atomic with a hand-over under way: a move sent as control leaves may still be relayed, as
            # it would be had it arrived a moment earlier.
            if username != session.controller:
                raise MultiheadError(f"only {session.controller}, who has control, may move the view", 403)
            out = (parse_viewport if kind == "viewport" else parse_pointer)(message, session.slides)
            self._redis.hset(self._state(session_id), str(kind), json.dumps(out))
            self._publish(session_id, {**out, "from": username}, conn_id)
        elif kind == "handover":
            to = message.get("to")
            if not isinstance(to, str):
                raise MultiheadError(f"{to!r} is not connected to this session", 422)
            answer = str(
                self._handover(keys=[self._state(session_id), self._conns(session_id)], args=[username, to])
            )
            if answer == "gone":
                raise MultiheadError(f"no multi-head session {session_id}", 404)
            if answer.startswith("control:"):
                raise MultiheadError(f"only {answer[8:]}, who has control, may hand it over", 403)
            if answer == "absent":
                raise MultiheadError(f"{to!r} is not connected to this session", 422)
            self._publish(session_id, {"type": "control", "user": to, "by": username})
        else:
            raise MultiheadError(f"unknown message type {kind!r}", 422)
