"""Account commands: local users and patients' access codes."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from archipel.cli.common import DataOpt, app, console, out, setup

if TYPE_CHECKING:
    from archipel.platform.authn import Principal
    from archipel.platform.runtime import Runtime

users_app = typer.Typer(help="Local user accounts.", no_args_is_help=True)
patients_app = typer.Typer(help="Patients' access to their results.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(patients_app, name="patients")


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option("--role", help="Role of the account.")],
    site: Annotated[str, typer.Option("--site", help="Organisation / site of the user.")] = "",
    email: Annotated[
        str,
        typer.Option("--email", help="Where alerts reach the user (e.g. break-the-glass on their patients)."),
    ] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    totp: Annotated[
        bool, typer.Option("--totp", help="Enrol a TOTP second factor and print its otpauth:// URI once.")
    ] = False,
    data: DataOpt = None,
) -> None:
    """Create a local account; prints a generated password once unless one is given on stdin."""
    from archipel.platform import mfa
    from archipel.platform.authn import create_user, find_user

    rt = setup(data)
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    uri = ""
    try:
        with rt.db.write() as s:
            generated = create_user(s, name, role, password, site, email)
            user = find_user(s, name)
            if totp and user is not None:
                uri = mfa.enrol(user, rt.settings.signing_key(), rt.settings.totp_issuer).uri
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"user {name} created with role {role}")
    if password is None:
        out.print(f"password: {generated}")
    if uri:
        out.print(f"totp: {uri}")
    elif rt.settings.require_totp:
        console.print(f"this account needs TOTP to log in: archipel users totp-enrol {name}")


@users_app.command("totp-enrol")
def users_totp_enrol(
    name: Annotated[str, typer.Argument(help="User name.")],
    data: DataOpt = None,
) -> None:
    """Give an account a new TOTP secret (replacing any previous one); prints its otpauth:// URI once."""
    from archipel.platform import mfa
    from archipel.platform.authn import find_user

    rt = setup(data)
    with rt.db.write() as s:
        user = find_user(s, name)
        if user is None:
            console.print(f"[red]error:[/red] no user {name!r}")
            raise typer.Exit(2)
        uri = mfa.enrol(user, rt.settings.signing_key(), rt.settings.totp_issuer).uri
    out.print(f"totp: {uri}")


@users_app.command("revoke")
def users_revoke(
    name: Annotated[str, typer.Argument(help="User name.")],
    data: DataOpt = None,
) -> None:
    """End every session of an account and lift its lock-out."""
    from archipel.platform import sessions, throttle
    from archipel.platform.db import utcnow
    from archipel.platform.login import account_key

    rt = setup(data)
    count = sessions.revoke_all(rt.db, name, "revoked by operator", utcnow())
    with rt.db.write() as s:
        throttle.unlock(s, account_key(name))
    console.print(f"{count} session(s) of {name} ended; account unlocked")


@patients_app.command("access-code")
def patients_access_code(
    issuer: Annotated[str, typer.Argument(help="Issuer (site) of the patient ID.")],
    patient_id: Annotated[str, typer.Argument(help="The patient's ID at that issuer.")],
    email: Annotated[str, typer.Option("--email", help="Where one-time codes go by e-mail.")] = "",
    phone: Annotated[str, typer.Option("--phone", help="Where one-time codes go by SMS.")] = "",
    days: Annotated[int | None, typer.Option("--days", help="Days the code stays valid.")] = None,
    representative: Annotated[
        bool,
        typer.Option(
            "--representative",
            help="For the patient's legal representative, who does not see what is hidden from representatives.",
        ),
    ] = False,
    data: DataOpt = None,
) -> None:
    """Create a patient's access code and print it once (it is stored only as a salted hash)."""
    from datetime import timedelta

    from archipel.platform.db import utcnow
    from archipel.platform.patient_access import LEGAL_REPRESENTATIVE, PATIENT, issue_access_code

    if bool(email) == bool(phone):
        raise typer.BadParameter("give exactly one of --email or --phone", param_hint="--email/--phone")
    rt = setup(data)
    valid = timedelta(days=days if days is not None else rt.settings.patient_code_days)
    if valid <= timedelta(0):
        raise typer.BadParameter("--days must be positive", param_hint="--days")
    try:
        with rt.db.write() as s:
            code = issue_access_code(
                s,
                f"{issuer}/{patient_id}",
                "email" if email else "sms",
                email or phone,
                now=utcnow(),
                valid_for=valid,
                created_by=os.environ.get("USER", "cli"),
                holder=LEGAL_REPRESENTATIVE if representative else PATIENT,
            )
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    _audit_cli_issue(rt, f"{issuer}/{patient_id}")
    holder = "their legal representative" if representative else issuer + "/" + patient_id
    console.print(f"access code for {holder}, valid {valid.days} days (shown once):")
    out.print(code)


def _operator() -> Principal:
    """The operator at the command line acts as an administrator, named by their login."""
    from archipel.platform.authn import Principal

    return Principal(subject=os.environ.get("USER", "cli"), role="admin")


def _audit_cli_issue(rt: Runtime, ref: str) -> None:
    from archipel.platform import audit

    audit.record(
        rt.db,
        _operator(),
        audit.PATIENT_RECORD,
        "create:patient-access",
        patient=ref,
        obj=f"new access code of {ref}",
        source="cli",
        purpose=audit.OPERATIONS,
        detail="issued from the command line",
    )


@patients_app.command("codes")
def patients_codes(
    patient: Annotated[str, typer.Argument(help="Master patient id, or ISSUER/PATIENT_ID.")],
    data: DataOpt = None,
) -> None:
    """List a patient's access codes (never the codes themselves): issued at and by, expiry, last sign-in,
    revocation."""
    from rich.table import Table

    from archipel.platform import patient_codes
    from archipel.platform.db import utcnow

    rt = setup(data)
    now = utcnow()
    try:
        name = patient_codes.PatientName.parse(patient)
        codes = patient_codes.list_codes(rt.db, _operator(), name, now=now, source="cli")
    except (ValueError, patient_codes.CodeError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    table = Table("id", "patient", "holder", "to", "issued", "by", "expires", "last used", "status", "reason")
    for c in codes:
        d = c.as_dict(now)
        table.add_row(
            str(c.id), c.patient, c.holder, c.to, d["issued_at"], c.issued_by, d["expires_at"],
            d["last_used_at"] or "-", d["status"], c.revoked_reason,
        )  # fmt: skip
    out.print(table)


@patients_app.command("revoke-code")
def patients_revoke_code(
    code_id: Annotated[int, typer.Argument(help="The access code's id (see: archipel patients codes).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the code and in the audit trail).")],
    data: DataOpt = None,
) -> None:
    """Revoke an access code at once: it opens no new session and its portal sessions end."""
    from archipel.platform import patient_codes
    from archipel.platform.db import utcnow

    rt = setup(data)
    try:
        _, ended = patient_codes.revoke(rt.db, _operator(), code_id, reason, now=utcnow(), source="cli")
    except (ValueError, patient_codes.CodeError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"access code {code_id} revoked; {ended} portal session(s) ended")
