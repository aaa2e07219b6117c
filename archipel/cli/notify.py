"""Outbox commands (``archipel notify …``): the messages not yet sent, and requeuing the failed ones."""

from __future__ import annotations

from typing import Annotated

import typer

from archipel.cli.common import DataOpt, app, console, setup

notify_app = typer.Typer(
    help="Messages to people (e-mail, SMS): what waits or failed in the outbox.", no_args_is_help=True
)
app.add_typer(notify_app, name="notify")

_FIELDS = ("id", "state", "channel", "to", "purpose", "attempts", "error", "next_attempt_at", "created_at")


@notify_app.command("list")
def notify_list(
    failed: Annotated[
        bool, typer.Option("--failed", help="Only the messages whose attempts ran out.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.")] = 200,
    data: DataOpt = None,
) -> None:
    """List the messages not sent yet (waiting or failed), newest first; recipients masked, never bodies."""
    from archipel.platform import notify

    rt = setup(data)
    # One tab-separated line per message under a header line (errors are long; a table would cut them).
    typer.echo("\t".join(_FIELDS))
    for row in notify.list_messages(rt.db, failed_only=failed, limit=limit):
        shown = notify.describe(row)
        typer.echo("\t".join("" if shown[f] is None else str(shown[f]) for f in _FIELDS))


@notify_app.command("retry")
def notify_retry(
    message_ids: Annotated[list[int] | None, typer.Argument(help="Outbox message ids.")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Every failed message.")] = False,
    now: Annotated[
        bool, typer.Option("--now", help="Also try to send them now, instead of leaving them to the sweep.")
    ] = False,
    data: DataOpt = None,
) -> None:
    """Give failed messages a new attempt budget (the next sweep sends them, or ``--now``)."""
    from archipel.platform import notify

    if bool(message_ids) == all_failed:
        raise typer.BadParameter("give message ids or --all-failed", param_hint="ID|--all-failed")
    rt = setup(data)
    try:
        ids = notify.requeue(rt.db, None if all_failed else list(message_ids or []))
    except notify.NotRequeued as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"{len(ids)} message(s) requeued: {' '.join(map(str, ids)) or '-'}")
    if now and ids:
        sender = notify.configured_sender(rt.settings)
        retry = notify.retry_policy(rt.settings)
        sent = [i for i in ids if notify.deliver_one(rt.db, sender, i, retry=retry)]
        console.print(f"{len(sent)} sent now; the others wait for the sweep")
