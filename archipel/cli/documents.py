"""Document registry commands (``archipel documents …``): verify contents against their hashes, rebuild the
full-text index."""

from __future__ import annotations

from collections.abc import Iterator

import typer

from archipel.cli.common import DataOpt, app, console, out, setup

documents_app = typer.Typer(
    help="Document registry: verify every content against its SHA-256, rebuild the full-text index.",
    no_args_is_help=True,
)
app.add_typer(documents_app, name="documents")


def _run(steps: Iterator[object], what: str) -> int:
    from archipel.radiology.documents_integrity import ContentProblem

    done = problems = 0
    with console.status(f"{what}…"):
        for step in steps:
            if isinstance(step, ContentProblem):
                problems += 1
                out.print(f"document {step.document_id}: {step.reason}")
            elif isinstance(step, int):
                done = step
    out.print(f"{what}: {done} documents, {problems} problems")
    return problems


@documents_app.command("verify")
def verify_cmd(data: DataOpt = None) -> None:
    """Check every document's content against its SHA-256. Exit 1 when one is missing or altered."""
    from archipel.radiology.documents_integrity import verify_contents

    rt = setup(data)
    if _run(verify_contents(rt.db, rt.blobs), "verified"):
        raise typer.Exit(1)


@documents_app.command("reindex")
def reindex_cmd(data: DataOpt = None) -> None:
    """Recompute the searchable text of every document from its content and rebuild the full-text index."""
    from archipel.radiology.documents_integrity import reindex

    rt = setup(data)
    if _run(reindex(rt.db, rt.blobs), "reindexed"):
        raise typer.Exit(1)
