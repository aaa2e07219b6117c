"""Remote PACS commands: which registered DICOM nodes the prefetch queries, and how it retrieves from them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from archipel.cli.archive import nodes_app
from archipel.cli.common import DataOpt, console, out, setup


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
