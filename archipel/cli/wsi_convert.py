"""``archipel wsi convert``: a slide file to DICOM WSI and / or OME-Zarr, with a progress bar in tiles/s."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

if TYPE_CHECKING:
    from archipel.wsi.dicom import SlideMetadata

from archipel.cli.common import console, out
from archipel.cli.wsi import SlideArg, fail, wsi_app


class TileRateColumn(ProgressColumn):
    """Tiles per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} tiles/s" if speed else "- tiles/s", style="cyan")


@wsi_app.command("convert")
def convert_cmd(
    slide: SlideArg,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (dicom/ and slide.zarr inside).")],
    fmt: Annotated[str, typer.Option("--format", help="dicom, zarr or both.")] = "both",
    pyramid: Annotated[
        str,
        typer.Option(
            "--pyramid",
            help="full: every factor-2 level; stored: the source's levels as they are, and only those below them.",
        ),
    ] = "full",
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Threads (default: one per core).")
    ] = None,
    patient_id: Annotated[str, typer.Option("--patient-id", help="PatientID written in the DICOM.")] = "",
    issuer: Annotated[str, typer.Option("--issuer", help="Issuer of the PatientID (the site).")] = "",
    accession: Annotated[str, typer.Option("--accession", help="Accession number (the case).")] = "",
    container_id: Annotated[str, typer.Option("--container-id", help="Slide (container) identifier.")] = "",
    stain: Annotated[str, typer.Option("--stain", help="Stain, e.g. HE.")] = "",
    no_label: Annotated[
        bool, typer.Option("--no-label", help="Leave the (confidential) label image out.")
    ] = False,
    max_instance_mb: Annotated[
        int | None, typer.Option("--max-instance-mb", min=1, help="Split larger levels into a concatenation.")
    ] = None,
) -> None:
    """Convert a slide to DICOM WSI and / or OME-Zarr: stored tiles pass through, missing levels are generated.

    Restartable: after a crash, run the same command again; only what was not finished is redone.
    """
    from archipel.tiles.plan import PyramidMode
    from archipel.wsi.convert import ConversionError, ConvertOptions, OutputFormat, convert

    try:
        formats = OutputFormat(fmt.lower())
    except ValueError:
        raise fail(f"--format must be dicom, zarr or both, not {fmt!r}") from None
    try:
        mode = PyramidMode(pyramid.lower())
    except ValueError:
        raise fail(f"--pyramid must be full or stored, not {pyramid!r}") from None
    if not slide.exists():
        raise fail(f"{slide}: no such file")
    meta = _metadata(out_dir, patient_id, issuer, accession, container_id or slide.stem, stain)
    options = ConvertOptions(
        formats=formats,
        pyramid=mode,
        workers=workers,
        include_label=not no_label,
        max_instance_bytes=max_instance_mb << 20 if max_instance_mb else None,
    )
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        TileRateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"converting {slide.name}", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            report = convert(slide, out_dir, meta, options, on_progress)
        except ConversionError as exc:
            raise fail(f"{slide.name}: {exc.reason}") from None
    reused = f", kept from an earlier run: {', '.join(report.reused)}" if report.reused else ""
    out.print(
        f"{slide.name}: {report.format_name}, {report.levels} levels ({report.generated_levels} generated), "
        f"{report.tiles} tiles, {report.passed_through} passed through, {report.encoded} encoded, "
        f"{report.seconds:.1f} s{reused}"
    )
    if report.dicom_files:
        out.print(f"DICOM WSI: {len(report.dicom_files)} instances in {out_dir / 'dicom'}")
    if report.zarr_path is not None:
        out.print(f"OME-Zarr: {report.zarr_path}")


def _metadata(
    out_dir: Path,
    patient_id: str,
    issuer: str,
    accession: str,
    container_id: str,
    stain: str,
) -> SlideMetadata:
    """The DICOM metadata; the study and series UIDs are kept in ``out_dir`` so that a re-run writes the same."""
    from pydicom.uid import generate_uid

    from archipel.wsi import dicom

    out_dir.mkdir(parents=True, exist_ok=True)
    uids = out_dir / ".uids"
    if uids.exists():
        study_uid, series_uid = uids.read_text().split()[:2]
    else:
        study_uid, series_uid = generate_uid(), generate_uid()
        uids.write_text(f"{study_uid}\n{series_uid}\n")
    return dicom.SlideMetadata(
        patient=dicom.Patient(patient_id, issuer or None),
        study=dicom.Study(study_uid, accession=accession),
        series=dicom.Series(series_uid),
        specimen=dicom.Specimen(container_id, stains=(stain,) if stain else ()),
        slide=dicom.Slide(barcode=container_id),
    )
