"""Whole-slide image commands: ``archipel wsi probe`` (and the conversion commands that join this group)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from archipel.cli.common import DataOpt, app, console, out

wsi_app = typer.Typer(help="Whole-slide images: inspect and convert slides.", no_args_is_help=True)
app.add_typer(wsi_app, name="wsi")

SlideArg = Annotated[
    Path, typer.Argument(help="Slide file (SVS, TIFF, OME-TIFF, NDPI, MRXS...) or DICOM folder.")
]


def fail(message: str) -> typer.Exit:
    """Print ``message`` to stderr and return the exit to raise (code 2: bad input)."""
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


@wsi_app.command("probe")
def probe_cmd(
    slide: SlideArg,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    data: DataOpt = None,  # accepted like every subcommand's; probing touches no data directory
) -> None:
    """Vendor, format, levels (size, tile, compression, pass-through), mpp, objective, associated images."""
    from archipel.wsi.probe import probe
    from archipel.wsi.sources import SlideError

    try:
        report = probe(slide)
    except SlideError as exc:
        raise fail(str(exc)) from None
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    mpp = f"{report.mpp[0]:.4f} x {report.mpp[1]:.4f} µm/px" if report.mpp else "unknown"
    power = f"{report.objective_power:g}x" if report.objective_power else "unknown"
    out.print(f"{report.file}: {report.format} (vendor {report.vendor}), mpp {mpp}, objective {power}")
    # One line per level rather than a table: it stays readable when piped or in a narrow terminal.
    for lv in report.levels:
        out.print(
            f"level {lv.index}: {lv.width} x {lv.height}, tile {lv.tile_width} x {lv.tile_height}, "
            f"downsample {lv.downsample:g}, {lv.compression} {lv.photometric}, "
            f"pass-through {'yes' if lv.passthrough else 'no (decoded)'}"
        )
    if report.associated:
        images = ", ".join(f"{a.kind} {a.width} x {a.height} ({a.compression})" for a in report.associated)
        out.print(f"associated images: {images}")
    else:
        out.print("associated images: none")
    generated = [p for p in report.planned_levels if p["from"] == "generated"]
    out.print(
        f"conversion plan: {len(report.planned_levels)} levels, {len(generated)} to generate"
        + (f" ({', '.join(str(p['index']) for p in generated)})" if generated else "")
    )
