"""Patients log in with the access code handed out after their exam and a one-time code sent to them."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from pydantic import BaseModel, Field

from archipel.platform import audit, notify, patient_access
from archipel.platform.authn import AuthError, Principal
from archipel.platform.credentials import RuntimeDep, auth_http_error, client_address
from archipel.platform.login import session_policy, throttle_policy
from archipel.platform.runtime import Runtime
from archipel.platform.sessions import AuthSession, issue_token

log = logging.getLogger("archipel.auth")

public = APIRouter(prefix="/api/patient", tags=["patient"])

PATIENT_ROLE = "patient"
METHOD = "access-code+otp"


class AccessRequest(BaseModel):
    """The access code printed on the patient's exam slip."""

    code: str = Field(min_length=1, max_length=64)


class VerifyRequest(BaseModel):
    """The access code and the one-time code the patient received."""

    code: str = Field(min_length=1, max_length=64)
    otp: str = Field(min_length=1, max_length=16)


def _denied(rt: Runtime, request: Request, action: str, exc: AuthError) -> None:
    audit.record(
        rt.db,
        Principal(subject="anonymous", role=PATIENT_ROLE, kind="patient"),
        audit.USER_AUTHENTICATION,
        action,
        outcome="denied",
        source=client_address(request),
        detail=exc.reason,
    )


def send_one_time_code(rt: Runtime, message_id: int) -> None:
    """Send the one message carrying a one-time code, within ``patient_otp_send_seconds``; a failure leaves it
    (and only it) for the outbox sweep. Runs after the answer, so a slow mail server never delays sign-in."""
    try:
        sender = notify.configured_sender(rt.settings, timeout=rt.settings.patient_otp_send_seconds)
        notify.deliver_one(rt.db, sender, message_id, rt.clock, notify.retry_policy(rt.settings))
    except Exception:
        log.exception("event=patient_otp_delivery_failed id=%d", message_id)


def open_portal_session(rt: Runtime, request: Request, login: patient_access.PatientLogin) -> AuthSession:
    """The patient's new session, tied to their access code; 401 (audited) if the code was revoked meanwhile."""
    try:
        return patient_access.open_portal_session(
            rt.db, login, METHOD, session_policy(rt.settings), rt.clock()
        )
    except AuthError as exc:
        _denied(rt, request, "patient-login", exc)
        raise auth_http_error(exc, challenge=False) from exc


@public.post("/access")
def request_access(
    body: AccessRequest, request: Request, background: BackgroundTasks, rt: RuntimeDep
) -> dict[str, Any]:
    """Check an access code and send a one-time code to the patient's registered e-mail or phone (after the
    answer). More than ``patient_otp_sends_per_hour`` codes for one access code is 429 with Retry-After."""
    source = client_address(request)
    try:
        ref, sent = patient_access.request_one_time_code(
            rt.db,
            body.code,
            now=rt.clock(),
            policy=throttle_policy(rt.settings),
            otp_minutes=rt.settings.patient_otp_minutes,
            source=source,
            sends_per_hour=rt.settings.patient_otp_sends_per_hour,
        )
    except AuthError as exc:
        _denied(rt, request, "patient-access", exc)
        raise auth_http_error(exc, challenge=False) from exc
    background.add_task(send_one_time_code, rt, sent.message_id)
    audit.record(
        rt.db,
        Principal(subject=ref, role=PATIENT_ROLE, kind="patient"),
        audit.USER_AUTHENTICATION,
        "patient-access",
        patient=ref,
        source=source,
        detail=f"one-time code sent by {sent.channel}",
    )
    return {"sent": True, "channel": sent.channel, "to": sent.masked_contact}


@public.post("/verify")
def verify(body: VerifyRequest, request: Request, rt: RuntimeDep) -> dict[str, Any]:
    """Exchange the access code and a fresh one-time code for a patient session token."""
    source = client_address(request)
    try:
        login = patient_access.verify_one_time_code(
            rt.db, body.code, body.otp, now=rt.clock(), policy=throttle_policy(rt.settings), source=source
        )
    except AuthError as exc:
        _denied(rt, request, "patient-login", exc)
        raise auth_http_error(exc, challenge=False) from exc
    ref = login.patient_ref
    # A legal representative logs in as a patient principal with their own role: the policy hides from them
    # what is marked INVISIBLE_REPRESENTANTS_LEGAUX.
    who = Principal(subject=ref, role=login.holder, kind="patient")
    audit.record(
        rt.db, who, audit.USER_AUTHENTICATION, "patient-login", patient=ref, source=source, detail=METHOD
    )
    policy = session_policy(rt.settings)
    now = rt.clock()
    row = open_portal_session(rt, request, login)
    issued = issue_token(row, rt.settings.signing_key(), policy, now)
    return {"access_token": issued.token, "token_type": "bearer", "expires_in": issued.seconds_left(now)}
