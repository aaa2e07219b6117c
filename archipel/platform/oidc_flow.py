"""The OpenID Connect authorization-code flow for browsers (with PKCE, state and nonce).

``GET /api/auth/oidc/start`` sends the browser to the provider; the provider sends it back to
``GET /api/auth/oidc/callback`` with a code, which we exchange at the provider's token endpoint for an ID token.
That token is checked like any provider token (``oidc.verify``, plus its nonce), and a web session is opened
with the usual cookies. State, nonce and PKCE verifier travel in a short-lived signed cookie scoped to the
callback path (SameSite=Lax, so that it comes back on the provider's top-level redirect).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta
from typing import Any

import jwt
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import RedirectResponse

from archipel.platform import audit, oidc
from archipel.platform.auth_api import oidc_login, set_session_cookies
from archipel.platform.authn import Principal
from archipel.platform.credentials import RuntimeDep, client_address
from archipel.platform.settings import Settings

log = logging.getLogger("archipel.auth")

public = APIRouter(prefix="/api/auth/oidc", tags=["auth"])

FLOW_COOKIE = "archipel-oidc-flow"
FLOW_PATH = "/api/auth/oidc"
FLOW_LIFETIME = timedelta(minutes=10)


def _configured(settings: Settings) -> oidc.OidcConfig:
    config = oidc.OidcConfig.from_settings(settings)
    if config is None or not (
        settings.oidc_client_id and settings.oidc_authorization_url and settings.oidc_token_url
    ):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no OpenID Connect login is configured")
    # An ID token's audience is our client id, whatever access tokens carry.
    return oidc.OidcConfig(**{**config.__dict__, "audience": settings.oidc_client_id})


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _local_path(target: str) -> str:
    # Only paths of this site: never an open redirect.
    return target if target.startswith("/") and not target.startswith("//") else "/"


@public.get("/start")
def start(rt: RuntimeDep, next: str = "/") -> RedirectResponse:
    """Send the browser to the identity provider's login page."""
    settings = rt.settings
    _configured(settings)
    state, nonce, verifier = (secrets.token_urlsafe(24) for _ in range(3))
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": settings.oidc_client_id,
            "redirect_uri": settings.oidc_redirect_url,
            "scope": settings.oidc_scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    now = rt.clock()
    flow = jwt.encode(
        {
            "state": state,
            "nonce": nonce,
            "verifier": verifier,
            "next": _local_path(next),
            "exp": int((now + FLOW_LIFETIME).timestamp()),
        },
        settings.signing_key(),
        algorithm="HS256",
    )
    response = RedirectResponse(f"{settings.oidc_authorization_url}?{query}", status_code=302)
    response.set_cookie(
        FLOW_COOKIE,
        flow,
        max_age=int(FLOW_LIFETIME.total_seconds()),
        path=FLOW_PATH,
        secure=settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )
    return response


def _refuse(rt: Any, request: Request, reason: str, code: int = status.HTTP_400_BAD_REQUEST) -> HTTPException:
    audit.record(
        rt.db,
        Principal(subject="anonymous", role=""),
        audit.USER_AUTHENTICATION,
        "login-oidc",
        outcome="denied",
        source=client_address(request),
        detail=reason,
    )
    return HTTPException(code, reason)


def _redeem(settings: Settings, code: str, verifier: str) -> str:
    body = urllib.parse.urlencode(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": settings.oidc_redirect_url,
            "client_id": settings.oidc_client_id,
            "client_secret": settings.oidc_client_secret,
            "code_verifier": verifier,
        }
    ).encode()
    request = urllib.request.Request(
        settings.oidc_token_url,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        payload = json.loads(answer.read())
    token = payload.get("id_token") if isinstance(payload, dict) else None
    if not isinstance(token, str):
        raise ValueError("no id_token in the token response")
    return token


@public.get("/callback")
def callback(
    request: Request,
    rt: RuntimeDep,
    code: str = "",
    state: str = "",
    error: str = "",
) -> RedirectResponse:
    """Finish the provider's login: check state, redeem the code, open a web session, go back to the app."""
    settings = rt.settings
    config = _configured(settings)
    if error:
        raise _refuse(rt, request, f"identity provider refused the login: {error[:64]}", 401)
    try:
        flow = jwt.decode(
            request.cookies.get(FLOW_COOKIE, ""),
            settings.signing_key(),
            algorithms=["HS256"],
            options={"verify_exp": False, "require": ["exp", "state", "nonce", "verifier"]},
        )
    except jwt.PyJWTError as exc:
        raise _refuse(rt, request, "OIDC login not started here or expired; start again") from exc
    if float(flow["exp"]) <= rt.clock().timestamp():
        raise _refuse(rt, request, "OIDC login not started here or expired; start again")
    if not code or not secrets.compare_digest(str(flow["state"]), state):
        raise _refuse(rt, request, "OIDC state mismatch")
    try:
        id_token = _redeem(settings, code, str(flow["verifier"]))
    except (urllib.error.URLError, ValueError, OSError) as exc:
        log.warning("event=oidc_code_redeem_failed error=%s", type(exc).__name__)
        raise _refuse(rt, request, "identity provider did not accept the code", 401) from exc
    row = oidc_login(rt, request, config, id_token, nonce=str(flow["nonce"]))
    response = RedirectResponse(_local_path(str(flow.get("next", "/"))), status_code=303)
    set_session_cookies(rt, response, row)
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH, secure=settings.cookie_secure, samesite="lax")
    return response
