"""Remote PACS commands: which registered DICOM nodes the prefetch queries, and how it retrieves from them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from archipel.cli.archive import nodes_app
from archipel.cli.common import DataOpt, app, console, out, setup


@nodes_app.command("remote")
def nodes_remote(
    ae_title: Annotated[str, typer.Argument(help="AE title of a node registered with 'archipel nodes add'.")],
    host: Annotated[str, typer.Option("--host", help="The host it was registered with.")],
    retrieve: Annotated[
        str, typer.Option("--retrieve", help="move (to our listener), get, or dicomweb (QIDO/WADO).")
    ] = "move",
    dicomweb_url: Annotated[
        str, typer.Option("--dicomweb-url", help="Base URL of its DICOMweb service.")
    ] = "",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds allowed per network step.")] = 10.0,
    attempts: Annotated[int, typer.Option("--attempts", help="Tries before the node counts as failed.")] = 3,
    remove: Annotated[bool, typer.Option("--remove", help="Stop querying this node.")] = False,
    data: DataOpt = None,
) -> None:
    """Make a registered node a remote PACS that tumor-board and prior prefetches query and retrieve from."""
    from archipel.radiology.remote_nodes import RemoteNodeError, configure_remote, remove_remote

    rt = setup(data)
    if remove:
        gone = remove_remote(rt.db, ae_title, host)
        console.print(f"node {ae_title} is {'no longer' if gone else 'not'} a remote PACS")
        return
    try:
        view = configure_remote(
            rt.db,
            ae_title,
            host,
            retrieve=retrieve,
            dicomweb_url=dicomweb_url,
            timeout_seconds=timeout,
            attempts=attempts,
        )
    except RemoteNodeError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(f"node {view.ae_title} (site {view.site}) is a remote PACS, retrieved by {view.retrieve}")


@nodes_app.command("remotes")
def nodes_remotes(data: DataOpt = None) -> None:
    """List the remote PACS the prefetch queries."""
    from archipel.radiology.remote_nodes import list_remotes

    rt = setup(data)
    table = Table("AE title", "host", "port", "site", "retrieve", "DICOMweb", "timeout", "attempts")
    for v in list_remotes(rt.db):
        table.add_row(
            v.ae_title,
            v.host,
            str(v.port),
            v.site,
            v.retrieve,
            v.dicomweb_url,
            f"{v.timeout_seconds:g}",
            str(v.attempts),
        )
    out.print(table)


boards_app = typer.Typer(
    help="Tumor board (RCP) sessions and the prefetch of their patients.", no_args_is_help=True
)
app.add_typer(boards_app, name="tumor-boards")


@boards_app.command("list")
def boards_list(
    site: Annotated[str, typer.Option("--site", help="Only the sessions of this organising site.")] = "",
    data: DataOpt = None,
) -> None:
    """List the sessions, soonest first, with their number of patients."""
    from archipel.radiology.tumorboard import list_sessions

    rt = setup(data)
    table = Table("id", "when", "title", "place", "site", "destination", "patients")
    for s in list_sessions(rt.db, site):
        table.add_row(
            str(s["id"]),
            s["scheduled_at"],
            s["title"],
            s["place"],
            s["site"],
            s["destination"],
            str(s["patients"]),
        )
    out.print(table)


@boards_app.command("status")
def boards_status(
    session_id: Annotated[int, typer.Argument(help="The session's id.")],
    data: DataOpt = None,
) -> None:
    """Each registered patient's prefetch (by master patient id): overall, then per remote PACS with its reason."""
    from archipel.radiology.tumorboard import TumorBoardError, session_detail

    rt = setup(data)
    try:
        detail = session_detail(rt.db, session_id)
    except TumorBoardError as exc:
        console.print(f"[red]{exc.reason}[/red]")
        raise typer.Exit(1) from exc
    table = Table("master", "status", "job", "node", "node status", "studies", "reason")
    for p in detail["patients"]:
        table.add_row(str(p["master_id"]), p["status"], p["job_id"], "", "", "", p["status_reason"])
        for n in p["nodes"]:
            studies = f"{n['studies_ready']}/{n['studies_found']}"
            table.add_row("", "", "", n["node"], n["state"], studies, n["reason"])
    out.print(table)
