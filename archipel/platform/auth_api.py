"""Authentication routes for professionals: tokens, web sessions, refresh, re-authentication, logout, OIDC.

``POST /api/auth/token`` is the OAuth2 password flow with one extra form field, ``totp``, for the second factor
(the same field Keycloak's direct grant accepts).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from archipel.platform import access, audit, mfa, oidc, sessions, throttle
from archipel.platform.authn import AuthError, Principal, find_user
from archipel.platform.credentials import (
    PrincipalDep,
    RuntimeDep,
    auth_http_error,
    client_address,
    cookie_names,
    csrf_token,
    require_recent_auth,
)
from archipel.platform.login import account_key, password_login, session_policy
from archipel.platform.runtime import Runtime

public = APIRouter(prefix="/api/auth", tags=["auth"])
router = APIRouter(prefix="/api/auth", tags=["auth"])

#: How recent a login must be for administrative actions on other accounts.
ADMIN_REAUTH = timedelta(minutes=5)


def _token_answer(rt: Runtime, row: sessions.AuthSession) -> dict[str, Any]:
    now = rt.clock()
    issued = sessions.issue_token(row, rt.settings.signing_key(), session_policy(rt.settings), now)
    return {
        "access_token": issued.token,
        "token_type": "bearer",
        "expires_in": issued.seconds_left(now),
        "session_expires_in": max(0, int((row.expires_at - now).total_seconds())),
    }


def _login(rt: Runtime, request: Request, username: str, password: str, totp: str) -> sessions.AuthSession:
    try:
        who = password_login(
            rt.db, rt.settings, username, password, totp, now=rt.clock(), source=client_address(request)
        )
    except AuthError as exc:
        raise auth_http_error(exc) from exc
    return sessions.open_session(rt.db, who, who.method, session_policy(rt.settings), rt.clock())


@public.post("/token")
def token(
    request: Request,
    rt: RuntimeDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    totp: Annotated[str, Form(description="TOTP code of the second factor")] = "",
) -> dict[str, Any]:
    """Exchange a user name, password and TOTP code for a short-lived bearer token of a new session."""
    return _token_answer(rt, _login(rt, request, form.username, form.password, totp))


@public.post("/session")
def web_session(
    request: Request,
    response: Response,
    rt: RuntimeDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    totp: Annotated[str, Form()] = "",
) -> dict[str, Any]:
    """Log a browser in: a Secure, HttpOnly, SameSite=Strict session cookie, plus the CSRF token to echo in
    ``X-CSRF-Token`` on every state-changing request (also set as a readable cookie)."""
    row = _login(rt, request, username, password, totp)
    csrf, max_age = set_session_cookies(rt, response, row)
    return {"csrf_token": csrf, "session_expires_in": max_age}


def set_session_cookies(rt: Runtime, response: Response, row: sessions.AuthSession) -> tuple[str, int]:
    """Put session ``row`` in the browser's cookies; return the CSRF token and the cookies' lifetime."""
    now = rt.clock()
    key = rt.settings.signing_key()
    policy = session_policy(rt.settings)
    # The cookie lives as long as the session; the session row enforces idle time and revocation.
    issued = sessions.issue_token(row, key, policy, now, ttl=policy.absolute, use=sessions.COOKIE)
    session_cookie, csrf_cookie = cookie_names(rt.settings)
    csrf = csrf_token(key, row.id)
    max_age = issued.seconds_left(now)
    secure = rt.settings.cookie_secure
    response.set_cookie(
        session_cookie,
        issued.token,
        max_age=max_age,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    response.set_cookie(
        csrf_cookie, csrf, max_age=max_age, path="/", secure=secure, httponly=False, samesite="strict"
    )
    return csrf, max_age


@public.post("/oidc")
def oidc_exchange(
    request: Request, rt: RuntimeDep, id_token: Annotated[str, Form(description="token from the provider")]
) -> dict[str, Any]:
    """Exchange an ID token of the configured OpenID Connect provider for an Archipel session token."""
    config = oidc.OidcConfig.from_settings(rt.settings)
    if config is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no OpenID Connect provider is configured")
    return _token_answer(rt, oidc_login(rt, request, config, id_token))


def oidc_login(
    rt: Runtime, request: Request, config: oidc.OidcConfig, id_token: str, nonce: str | None = None
) -> sessions.AuthSession:
    """Open a session for the professional a provider's ``id_token`` names, audited either way."""
    source = client_address(request)
    try:
        who = oidc.verify(config, id_token, rt.clock(), nonce=nonce)
    except AuthError as exc:
        audit.record(
            rt.db,
            Principal(subject="anonymous", role=""),
            audit.USER_AUTHENTICATION,
            "login-oidc",
            outcome="denied",
            source=source,
            detail=exc.reason,
        )
        raise auth_http_error(exc) from exc
    audit.record(rt.db, who, audit.USER_AUTHENTICATION, "login-oidc", source=source, detail="oidc")
    row = sessions.open_session(rt.db, who, "oidc", session_policy(rt.settings), rt.clock())
    # The provider's auth_time, not the exchange time, says how recent the proof of identity is.
    if who.auth_time is not None:
        with rt.db.write() as s:
            fresh = s.get(sessions.AuthSession, row.id)
            if fresh is not None:
                fresh.auth_time = who.auth_time
                row = fresh
    return row


def _session_row(rt: Runtime, principal: Principal) -> sessions.AuthSession:
    row = sessions.get_session(rt.db, principal.session) if principal.session else None
    if row is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "this credential has no Archipel session")
    return row


@router.get("/me")
def me(principal: PrincipalDep) -> dict[str, Any]:
    """Who the credential names, and when they last authenticated."""
    return {
        "subject": principal.subject,
        "role": principal.role,
        "site": principal.site,
        "kind": principal.kind,
        "method": principal.method,
        "auth_time": principal.auth_time.isoformat() if principal.auth_time else None,
    }


@router.post("/refresh")
def refresh(rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """A new short-lived token for the caller's live session (the session's idle and absolute limits hold)."""
    return _token_answer(rt, _session_row(rt, principal))


@router.post("/reauth")
def reauth(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    password: Annotated[str, Form()],
    totp: Annotated[str, Form()] = "",
) -> dict[str, Any]:
    """Prove again who you are (password and TOTP) before a sensitive action; returns a fresh token."""
    row = _session_row(rt, principal)
    if principal.kind != "user" or row.method == "oidc":
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "re-authenticate with your identity provider (POST /api/auth/oidc)"
        )
    try:
        password_login(
            rt.db,
            rt.settings,
            principal.subject,
            password,
            totp,
            now=rt.clock(),
            source=client_address(request),
            action="reauth",
        )
    except AuthError as exc:
        raise auth_http_error(exc, challenge=False) from exc
    fresh = sessions.reauthenticated(rt.db, row.id, rt.clock())
    return _token_answer(rt, fresh or row)


@router.post("/totp")
def enrol_totp(
    request: Request,
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require_recent_auth(ADMIN_REAUTH))],
) -> dict[str, Any]:
    """Give the caller's local account a new TOTP secret (recent login needed); the secret is shown only here.

    The previous secret stops working at once.
    """
    if principal.kind != "user" or principal.method == "oidc":
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "only local accounts have a TOTP second factor")
    with rt.db.write() as s:
        user = find_user(s, principal.subject)
        if user is None:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "only local accounts have a TOTP second factor")
        enrolment = mfa.enrol(user, rt.settings.signing_key(), rt.settings.totp_issuer)
    audit.record(rt.db, principal, audit.USER_AUTHENTICATION, "totp-enrol", source=client_address(request))
    return {"secret": enrolment.secret, "otpauth_uri": enrolment.uri}


def _clear_cookies(rt: Runtime, response: Response) -> None:
    for name in cookie_names(rt.settings):
        response.delete_cookie(name, path="/", secure=rt.settings.cookie_secure, samesite="strict")


@router.post("/logout")
def logout(request: Request, response: Response, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """End the caller's session: every token and cookie of it stops working."""
    revoked = bool(principal.session) and sessions.revoke(rt.db, principal.session, "logout", rt.clock())
    audit.record(rt.db, principal, audit.USER_AUTHENTICATION, "logout", source=client_address(request))
    _clear_cookies(rt, response)
    return {"revoked": 1 if revoked else 0}


@router.post("/logout-all")
def logout_all(
    request: Request, response: Response, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """End every session of the caller, on every device."""
    count = sessions.revoke_all(rt.db, principal.subject, "logout-all", rt.clock(), kind=principal.kind)
    audit.record(rt.db, principal, audit.USER_AUTHENTICATION, "logout-all", source=client_address(request))
    _clear_cookies(rt, response)
    return {"revoked": count}


@router.post("/users/{username}/revoke")
def revoke_user_sessions(
    username: str,
    request: Request,
    rt: RuntimeDep,
    principal: Annotated[Principal, Depends(require_recent_auth(ADMIN_REAUTH))],
) -> dict[str, Any]:
    """Administrator: end every session of ``username`` and lift any lock on the account (recent login needed)."""
    # A refusal raises AccessDenied, which the application answers with 403 and its reason.
    access.check(
        rt.db,
        principal,
        access.ADMINISTER,
        access.Resource(kind="user", ident=username),
        event_type=audit.USER_AUTHENTICATION,
        source=client_address(request),
    )
    count = sessions.revoke_all(rt.db, username, f"revoked by {principal.subject}", rt.clock())
    with rt.db.write() as s:
        throttle.unlock(s, account_key(username))
    return {"revoked": count}
