"""Tile service commands: ``archipel tiles export`` (a slide as static Deep Zoom tiles) and ``archipel tiles
nginx-config`` (the nginx block that serves them behind signed URLs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from archipel.cli.common import DataOpt, app, configure_logging, console, out, setup

tiles_app = typer.Typer(help="Tile service: static export and the nginx fast path.", no_args_is_help=True)
app.add_typer(tiles_app, name="tiles")


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
    from rich.progress import Progress

    from archipel.tiles.export import ExportRefused, export_slide
    from archipel.wsi import tile_source

    rt = setup(data)
    configure_logging()
    tile_source.install()
    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"slide {slide_id}", total=None)
            summary = export_slide(
                rt, slide_id, out_dir, lambda done, total: bar.update(task, completed=done, total=total)
            )
    except ExportRefused as exc:
        console.print(f"[red]error:[/red] {exc.reason}")
        raise typer.Exit(2) from None
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
