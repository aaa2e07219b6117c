"""Master patient index commands (``archipel identity …``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from archipel.cli.common import DataOpt, app, console, counted_progress, out, setup

identity_app = typer.Typer(
    help="Master patient index: issuers, identity imports, links and review.", no_args_is_help=True
)
issuers_app = typer.Typer(help="Issuers (sites) of local patient IDs.", no_args_is_help=True)
identity_app.add_typer(issuers_app, name="issuers")
app.add_typer(identity_app, name="identity")
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the history and the audit trail).")]


def _officer() -> Any:
    from archipel.platform.authn import Principal

    return Principal(subject=os.environ.get("USER", "cli"), role="identity-officer")


def _identity_error(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


@contextmanager
def _identity_errors() -> Iterator[None]:
    """Turn a refused identity operation into its message and exit status 2."""
    from archipel.platform.identity.service import IdentityError

    try:
        yield
    except IdentityError as exc:
        raise _identity_error(exc) from exc


@issuers_app.command("add")
def identity_issuers_add(
    code: Annotated[str, typer.Argument(help="Issuer code, e.g. the site's code.")],
    name: Annotated[str, typer.Option("--name", help="Display name.")] = "",
    data: DataOpt = None,
) -> None:
    """Register an issuer of local patient IDs (identities of unknown issuers are refused)."""
    from archipel.platform.identity.service import add_issuer

    rt = setup(data)
    with _identity_errors(), rt.db.write() as s:
        add_issuer(s, code, name)
    console.print(f"issuer {code} registered")


@issuers_app.command("list")
def identity_issuers_list(data: DataOpt = None) -> None:
    """List the registered issuers."""
    from archipel.platform.identity.service import known_issuers

    rt = setup(data)
    with rt.db.sessions() as s:
        for code in sorted(known_issuers(s)):
            out.print(code)


@identity_app.command("import-csv")
def identity_import_csv(
    file: Annotated[Path, typer.Argument(help="CSV file: local_id, birth_name, used_name, given_names, ...")],
    source: Annotated[str, typer.Option("--source", help="Issuer (site) of the file's local IDs.")],
    data: DataOpt = None,
) -> None:
    """Import and link a site's identities; bad lines are listed with their number and reason."""
    from archipel.platform.identity.csvimport import count_lines, import_csv
    from archipel.platform.identity.service import IdentityError

    if not file.is_file():
        raise _identity_error(FileNotFoundError(f"no file {file}"))
    rt = setup(data)
    try:
        with counted_progress("identities", count_lines(file)) as (tick, finish):
            summary = import_csv(rt.db, file, source, on_line=tick)
            finish(summary.total)
    except (IdentityError, UnicodeDecodeError) as exc:
        raise _identity_error(exc) from exc
    c = summary.counts
    out.print(
        f"linked {c['linked']}, review {c['review']}, new {c['new']}, manual {c['manual']}, "
        f"refused {len(summary.refused)}"
    )
    if summary.ignored_columns:
        out.print(f"  ignored columns: {', '.join(summary.ignored_columns)}")
    for line, reason in summary.refused:
        out.print(f"  line {line}: {reason}")
    if summary.refused:
        raise typer.Exit(1)


@identity_app.command("links")
def identity_links(
    fmt: Annotated[str, typer.Option("--format", help="csv or table.")] = "table",
    data: DataOpt = None,
) -> None:
    """One row per local identity: issuer, local_id, master_id, status, score."""
    import csv as csv_mod

    from sqlalchemy import select

    from archipel.platform.identity.models import LocalIdentity

    if fmt not in ("csv", "table"):
        raise typer.BadParameter("choose csv or table", param_hint="--format")
    rt = setup(data)
    cols = (
        LocalIdentity.issuer,
        LocalIdentity.local_id,
        LocalIdentity.master_id,
        LocalIdentity.status,
        LocalIdentity.score,
    )
    with rt.db.sessions() as s:
        rows = s.execute(select(*cols).order_by(LocalIdentity.issuer, LocalIdentity.local_id))
        if fmt == "csv":
            writer = csv_mod.writer(sys.stdout, lineterminator="\n")
            writer.writerow(["issuer", "local_id", "master_id", "status", "score"])
            for r in rows:
                writer.writerow(
                    [r.issuer, r.local_id, r.master_id, r.status, "" if r.score is None else r.score]
                )
            return
        table = Table("issuer", "local_id", "master", "status", "score")
        for r in rows:
            table.add_row(
                r.issuer, r.local_id, str(r.master_id), r.status, "" if r.score is None else str(r.score)
            )
        out.print(table)


@identity_app.command("review")
def identity_review(data: DataOpt = None) -> None:
    """List the open review queue: which identity might belong to which master, and why."""
    from archipel.platform.identity.review import review_queue

    rt = setup(data)
    table = Table("item", "issuer", "local_id", "master", "candidate", "score", "reason")
    for e in review_queue(rt.db):
        table.add_row(
            str(e.id),
            e.issuer,
            e.local_id,
            str(e.master_id),
            str(e.candidate_master_id),
            "" if e.score is None else f"{e.score:.1f}",
            e.reason,
        )
    out.print(table)


@identity_app.command("decide")
def identity_decide(
    item: Annotated[int, typer.Argument(help="Review item number.")],
    same: Annotated[bool, typer.Option("--same/--different", help="Same person, or different people.")],
    reason: ReasonOpt,
    data: DataOpt = None,
) -> None:
    """Resolve a review item: same person (link) or different people (never linked automatically)."""
    from archipel.platform.identity import review

    rt = setup(data)
    with _identity_errors():
        (review.accept if same else review.different)(rt.db, _officer(), item, reason)
    console.print(f"review item {item} resolved: {'same person' if same else 'different people'}")


@identity_app.command("merge")
def identity_merge(
    source: Annotated[int, typer.Argument(help="Master to merge away.")],
    target: Annotated[int, typer.Argument(help="Master that stays.")],
    reason: ReasonOpt,
    data: DataOpt = None,
) -> None:
    """Merge one master patient into another (undo with `unmerge`)."""
    from archipel.platform.identity import review

    rt = setup(data)
    with _identity_errors():
        merge_id = review.merge(rt.db, _officer(), source, target, reason)
    out.print(f"merge {merge_id}: master {source} merged into {target}")


@identity_app.command("unmerge")
def identity_unmerge(
    merge_id: Annotated[int, typer.Argument(help="Merge number printed by `merge`.")],
    reason: ReasonOpt,
    data: DataOpt = None,
) -> None:
    """Undo a merge, restoring both masters exactly."""
    from archipel.platform.identity import review

    rt = setup(data)
    with _identity_errors():
        review.unmerge(rt.db, _officer(), merge_id, reason)
    out.print(f"merge {merge_id} undone")


@identity_app.command("unlink")
def identity_unlink(
    issuer: Annotated[str, typer.Argument(help="Issuer of the local ID.")],
    local_id: Annotated[str, typer.Argument(help="Local patient ID.")],
    reason: ReasonOpt,
    data: DataOpt = None,
) -> None:
    """Take a local identity off its master; it is never linked to those identities again."""
    from archipel.platform.identity import review

    rt = setup(data)
    with _identity_errors():
        master = review.unlink(rt.db, _officer(), issuer, local_id, reason)
    out.print(f"{issuer}/{local_id} now on master {master}")
