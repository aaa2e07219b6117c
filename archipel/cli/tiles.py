"""Tile service commands: ``archipel tiles export`` (a slide as static Deep Zoom tiles) and ``archipel tiles
nginx-config`` (the nginx block that serves them behind signed URLs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from archipel.cli.common import DataOpt, app, configure_logging, console, out, setup

tiles_app = typer.Typer(help="Tile service: static export and the nginx fast path.", no_args_is_help=True)
app.add_typer(tiles_app, name="tiles")

#: Who the audit trail names for an export run from the command line (an operator on the data dir).
EXPORTER = "tiles-export"


@tiles_app.command("export")
def export_cmd(
    slide_id: Annotated[str, typer.Argument(help="The slide's id (as POST /api/slides answered).")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder (default: the tiles_export_dir setting).")
    ] = None,
    data: DataOpt = None,
) -> None:
    """Write a converted slide's Deep Zoom tiles (the bytes /tiles sends) for nginx to serve; audited as an
    export. A slide still converting is refused: its tiles would change."""
    from archipel.platform import audit
    from archipel.platform.authn import Principal
    from archipel.tiles import signed
    from archipel.tiles.export import export_deep_zoom, tile_count
    from archipel.tiles.views import SlideUnavailable, resolver
    from archipel.wsi import tile_source

    rt = setup(data)
    configure_logging()
    tile_source.install()
    if not signed.SLIDE_ID.match(slide_id):
        console.print(f"[red]error:[/red] {slide_id!r} is not a slide id")
        raise typer.Exit(2)
    ref = resolver().describe(rt, slide_id)
    if ref is None:
        console.print(f"[red]error:[/red] no slide {slide_id}")
        raise typer.Exit(2)
    if not ref.final:
        console.print(f"[red]error:[/red] slide {slide_id} is still being converted; export it once ready")
        raise typer.Exit(2)
    try:
        pyramid = resolver().open(rt, ref)
    except SlideUnavailable as exc:
        console.print(f"[red]error:[/red] slide {slide_id}: {exc.reason}")
        raise typer.Exit(2) from None
    root = out_dir or signed.export_root(rt.settings.data_dir, rt.settings.tiles_export_dir)
    who = Principal(subject=EXPORTER, role="system", kind="system")
    from rich.progress import Progress

    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"slide {slide_id}", total=tile_count(pyramid))
            summary = export_deep_zoom(pyramid, root, slide_id, lambda n: bar.update(task, completed=n))
    finally:
        close = getattr(pyramid, "close", None)
        if close is not None:
            close()
    (root / f"{slide_id}{signed.VERSION_SUFFIX}").write_text(ref.version + "\n")
    audit.record(
        rt.db,
        who,
        audit.EXPORT,
        "export:tiles",
        patient=ref.resource.patient,
        master=ref.resource.master,
        obj=f"slide:{slide_id}",
        purpose=audit.OPERATIONS,
        detail=f"tiles={summary.tiles}",
    )
    out.print(
        f"slide {slide_id}: {summary.tiles} tiles ({summary.passed_through} stored tiles unchanged), "
        f"{summary.bytes / 1e6:.1f} MB in {summary.seconds:.1f} s -> {summary.folder}"
    )


@tiles_app.command("nginx-config")
def nginx_config_cmd(
    root: Annotated[
        Path | None, typer.Option("--root", help="Exported tiles (default: the tiles_export_dir setting).")
    ] = None,
    data: DataOpt = None,
) -> None:
    """Print the nginx ``location`` block that checks signed tile URLs (secure_link) and serves the exported
    tiles; include it in the ``server`` that proxies the API. It contains the signing key."""
    from archipel.tiles import signed

    rt = setup(data)
    key = rt.settings.tiles_signing_key
    if not key:
        console.print("[red]error:[/red] set ARCHIPEL_TILES_SIGNING_KEY first (the API signs with it)")
        raise typer.Exit(2)
    folder = root or signed.export_root(rt.settings.data_dir, rt.settings.tiles_export_dir)
    try:
        out.print(signed.nginx_location(rt.settings.tiles_signed_prefix, key, folder), end="", markup=False)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
