"""``archipel export``: a study's or a patient's archive as DICOM media (DICOMDIR) or a BagIt bag."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from archipel.cli.common import DataOpt, app, console, out, setup

if TYPE_CHECKING:
    from archipel.platform.authn import Principal
    from archipel.platform.runtime import Runtime


def _acting(rt: Runtime, username: str | None) -> Principal:
    """The operator (an administrator, as the one running the command on the server), or the named account
    as it is now: the policy then weighs that user's role, site and relationships."""
    from archipel.platform.authn import Principal, find_user

    if not username:
        return Principal(subject=os.environ.get("USER", "cli"), role="admin", kind="user")
    with rt.db.sessions() as s:
        user = find_user(s, username)
    if user is None or not user.active:
        console.print(f"[red]error:[/red] no active account {username!r}")
        raise typer.Exit(2)
    return Principal(subject=user.username, role=user.role, site=user.site, kind="user")


@app.command("export")
def export_cmd(
    out_path: Annotated[Path, typer.Option("--out", help="New folder, or a .zip file, to write.")],
    study: Annotated[str | None, typer.Option("--study", help="Study Instance UID.")] = None,
    patient: Annotated[int | None, typer.Option("--patient", help="Master patient id (MPI).")] = None,
    patient_id: Annotated[str | None, typer.Option("--patient-id", help="PatientID at a site.")] = None,
    issuer: Annotated[str | None, typer.Option("--issuer", help="Site that issued --patient-id.")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="dicomdir (DICOM media) or bagit (BagIt 1.0).")
    ] = "bagit",
    as_user: Annotated[
        str | None, typer.Option("--as", help="Act as this account (its rights apply).")
    ] = None,
    data: DataOpt = None,
) -> None:
    """Export the stored Part-10 files of a study or a patient, byte for byte, as a DICOM File-set with its
    DICOMDIR or a BagIt bag (with the patient's documents), with a progress bar and a summary. Audited."""
    from archipel.radiology.export_documents import DocumentsRefused
    from archipel.radiology.export_package import ExportFormat, ExportRefused, ExportRequest, export

    chosen = [study is not None, patient is not None, patient_id is not None]
    if sum(chosen) != 1:
        raise typer.BadParameter("name one of --study, --patient or --patient-id", param_hint="--study")
    if patient_id is not None and not issuer:
        raise typer.BadParameter("--patient-id needs its --issuer", param_hint="--issuer")
    try:
        package = ExportFormat(fmt)
    except ValueError as exc:
        raise typer.BadParameter("choose dicomdir or bagit", param_hint="--format") from exc
    request = ExportRequest(
        study_uid=study or "", master_id=patient, issuer=issuer or "", patient_id=patient_id or ""
    )
    rt = setup(data)
    principal = _acting(rt, as_user)
    try:
        with _progress() as (start, tick):
            summary = export(
                rt, principal, request, package, out_path, source="cli", on_start=start, on_file=tick
            )
    except (ExportRefused, DocumentsRefused) as exc:
        console.print(f"[red]error:[/red] {exc.reason}")
        raise typer.Exit(1) from exc
    master = "unknown" if summary.master_id is None else str(summary.master_id)
    out.print(
        f"exported {summary.what} as {summary.format} to {out_path}: {summary.studies} studies, "
        f"{summary.series} series, {summary.instances} instances ({summary.bytes} bytes), "
        f"{summary.documents} documents; master patient {master}"
    )


@contextmanager
def _progress() -> Iterator[tuple[Callable[[int], None], Callable[[], None]]]:
    """A progress bar whose total is set once the export knows how many files it copies."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]export"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[rate]:.1f} files/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("export", total=None, rate=0.0)

        def start(total: int) -> None:
            bar.update(task, total=total)

        def tick() -> None:
            bar.advance(task)
            t = bar.tasks[task]
            bar.update(task, rate=(t.completed / t.elapsed) if t.elapsed else 0.0)

        yield start, tick
