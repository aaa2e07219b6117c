"""How an HTTP request proves who sends it: a bearer token (ours or an OIDC provider's) or a web session cookie.

Cookie-authenticated requests that change state must also carry the CSRF token in ``X-CSRF-Token``: a signed
double-submit token (HMAC of the session id) that the browser front end reads from the non-HttpOnly CSRF cookie.
Bearer requests need none, since a browser never attaches a bearer token by itself.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, WebSocket, status
from fastapi.security import OAuth2PasswordBearer
from starlette.requests import HTTPConnection

from archipel.platform import audit, oidc, sessions
from archipel.platform.authn import AuthError, Principal
from archipel.platform.login import session_policy
from archipel.platform.runtime import Runtime, get_runtime
from archipel.platform.settings import Settings

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)

CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def runtime() -> Runtime:
    """Dependency: this process's runtime."""
    return get_runtime()


RuntimeDep = Annotated[Runtime, Depends(runtime)]


def client_address(request: HTTPConnection) -> str:
    """The caller's IP address, for the audit trail."""
    return request.client.host if request.client else ""


def cookie_names(settings: Settings) -> tuple[str, str]:
    """Names of the session and CSRF cookies; ``__Host-`` pins them to our origin when they are Secure."""
    prefix = "__Host-" if settings.cookie_secure else ""
    return prefix + "archipel-session", prefix + "archipel-csrf"


def csrf_token(signing_key: str, session_id: str) -> str:
    """The CSRF token bound to web session ``session_id``."""
    return hmac.new(signing_key.encode(), b"csrf:" + session_id.encode(), hashlib.sha256).hexdigest()


def auth_http_error(exc: AuthError, *, challenge: bool = True) -> HTTPException:
    """The HTTP answer for an authentication failure: its status, its reason, and the right headers."""
    headers: dict[str, str] = {}
    if exc.status == status.HTTP_401_UNAUTHORIZED and challenge:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return HTTPException(exc.status, exc.reason, headers=headers or None)


def _deny(rt: Runtime, request: HTTPConnection, exc: AuthError, via: str) -> HTTPException:
    audit.record(
        rt.db,
        Principal(subject="anonymous", role=""),
        audit.USER_AUTHENTICATION,
        f"{via}-check",
        outcome="denied",
        source=client_address(request),
        detail=exc.reason,
    )
    return auth_http_error(exc)


def current_principal(
    request: Request, rt: RuntimeDep, token: Annotated[str | None, Depends(oauth2)]
) -> Principal:
    """Dependency: the principal named by the bearer token or the session cookie; 401 without a valid one.

    A bad token or cookie is audited as a denied USER_AUTHENTICATION event.
    """
    settings, now = rt.settings, rt.clock()
    if token:
        try:
            return _bearer_principal(rt, token)
        except AuthError as exc:
            raise _deny(rt, request, exc, "token") from exc
    session_cookie, _ = cookie_names(settings)
    cookie = request.cookies.get(session_cookie)
    if cookie:
        try:
            who = sessions.resolve(
                rt.db, cookie, settings.signing_key(), session_policy(settings), now, use=sessions.COOKIE
            )
        except AuthError as exc:
            raise _deny(rt, request, exc, "cookie") from exc
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent, csrf_token(settings.signing_key(), who.session)):
                raise _deny(rt, request, AuthError("CSRF token missing or invalid", status=403), "csrf")
        return who
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED, "authentication required", headers={"WWW-Authenticate": "Bearer"}
    )


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def _bearer_principal(rt: Runtime, token: str) -> Principal:
    config = oidc.OidcConfig.from_settings(rt.settings)
    if config is not None and oidc.is_provider_token(token):
        return oidc.verify(config, token, rt.clock())
    return sessions.resolve(rt.db, token, rt.settings.signing_key(), session_policy(rt.settings), rt.clock())


def websocket_principal(rt: Runtime, websocket: WebSocket) -> Principal:
    """The principal of a WebSocket handshake, by the same rules as :func:`current_principal`.

    A bearer token comes in the ``Authorization`` header or, for clients that cannot set headers on a
    handshake, the ``access_token`` query parameter. Otherwise the session cookie counts, but only when the
    handshake's ``Origin`` is this server: browsers attach cookies to cross-site WebSocket handshakes and no CSRF
    header can be added, so the origin check stands in for the CSRF token. Raises :class:`AuthError`, audited
    as a denied USER_AUTHENTICATION event.
    """
    header = websocket.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    token = token or websocket.query_params.get("access_token", "")
    if token:
        try:
            return _bearer_principal(rt, token)
        except AuthError as exc:
            _deny(rt, websocket, exc, "token")
            raise
    settings = rt.settings
    cookie = websocket.cookies.get(cookie_names(settings)[0])
    if not cookie:
        raise AuthError("authentication required")
    origin = websocket.headers.get("origin")
    try:
        if origin is not None and urlsplit(origin).netloc != websocket.headers.get("host", ""):
            raise AuthError(f"cross-origin WebSocket from {origin} refused", status=403)
        return sessions.resolve(
            rt.db, cookie, settings.signing_key(), session_policy(settings), rt.clock(), use=sessions.COOKIE
        )
    except AuthError as exc:
        _deny(rt, websocket, exc, "cookie")
        raise


def require_recent_auth(max_age: timedelta | int) -> Callable[..., Principal]:
    """A dependency that admits only a principal who authenticated within ``max_age`` (seconds or a delta).

    Sensitive actions (break-the-glass, export, merge) use it. A stale login gets 401 with the RFC 9470
    challenge ``insufficient_user_authentication`` and ``max_age``; POST /api/auth/reauth refreshes it.
    """
    limit = max_age if isinstance(max_age, timedelta) else timedelta(seconds=max_age)
    seconds = int(limit.total_seconds())

    def recent(request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Principal:
        if principal.auth_time is not None and rt.clock() - principal.auth_time <= limit:
            return principal
        reason = f"re-authentication required (last within {seconds} s)"
        audit.record(
            rt.db,
            principal,
            audit.USER_AUTHENTICATION,
            "recent-auth-check",
            outcome="denied",
            source=client_address(request),
            detail=reason,
        )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            reason,
            headers={
                "WWW-Authenticate": (
                    f'Bearer error="insufficient_user_authentication", '
                    f'error_description="re-authentication required", max_age={seconds}'
                )
            },
        )

    return recent
