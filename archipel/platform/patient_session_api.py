"""The patient portal's browser sign-in: the access code and one-time code open a cookie session.

``POST /api/patient/verify`` answers a bearer token (for apps); a browser gets the same session as Secure,
HttpOnly, SameSite=Strict cookies plus a CSRF token, like the professionals' web session, so that every page of
the app (the portal, the viewers, a download link) works for the patient without handling a token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from archipel.platform import audit, patient_access
from archipel.platform.auth_api import set_session_cookies
from archipel.platform.authn import AuthError, Principal
from archipel.platform.credentials import RuntimeDep, auth_http_error, client_address
from archipel.platform.login import throttle_policy
from archipel.platform.patient_api import METHOD, PATIENT_ROLE, VerifyRequest, open_portal_session

public = APIRouter(prefix="/api/patient", tags=["patient"])
ways_in = APIRouter(prefix="/api/sign-in", tags=["auth"])


@ways_in.get("/options")
def sign_in_options(rt: RuntimeDep) -> dict[str, Any]:
    """The ways in the sign-in page offers: professionals' password and TOTP (always), their OpenID Connect
    provider (when one is configured), and the patients' access code."""
    settings = rt.settings
    oidc_ready = bool(settings.oidc_client_id and settings.oidc_authorization_url and settings.oidc_token_url)
    return {"password": True, "oidc": oidc_ready, "patient_access_code": True}


@public.post("/session")
def patient_web_session(
    body: VerifyRequest, request: Request, response: Response, rt: RuntimeDep
) -> dict[str, Any]:
    """Exchange the access code and a fresh one-time code for a browser session (cookies) and its CSRF token.

    Refusals are those of ``/api/patient/verify`` (401 with the reason, 423 locked, 429 rate-limited) and are
    audited the same way."""
    source = client_address(request)
    try:
        login = patient_access.verify_one_time_code(
            rt.db, body.code, body.otp, now=rt.clock(), policy=throttle_policy(rt.settings), source=source
        )
    except AuthError as exc:
        audit.record(
            rt.db,
            Principal(subject="anonymous", role=PATIENT_ROLE, kind="patient"),
            audit.USER_AUTHENTICATION,
            "patient-login",
            outcome="denied",
            source=source,
            detail=exc.reason,
        )
        raise auth_http_error(exc, challenge=False) from exc
    who = Principal(subject=login.patient_ref, role=login.holder, kind="patient")
    audit.record(
        rt.db,
        who,
        audit.USER_AUTHENTICATION,
        "patient-login",
        patient=login.patient_ref,
        source=source,
        detail=METHOD,
    )
    row = open_portal_session(rt, request, login)
    csrf, max_age = set_session_cookies(rt, response, row)
    return {"csrf_token": csrf, "session_expires_in": max_age}
