"""`labflow tracing`: the handoff service, and the operator commands on failed deliveries."""

from __future__ import annotations

from typing import Annotated

import typer

from services.core.config import load_settings

app = typer.Typer(help="Contact-tracing handoff: cases.v1 → the tracing platform (SPEC §6).")


@app.callback(invoke_without_command=True)
def main(ctx: typer.Context) -> None:
    """Without a subcommand: run the handoff service."""
    if ctx.invoked_subcommand is None:
        from services.tracing.app import run_tracing

        run_tracing(load_settings())


@app.command()
def failed() -> None:
    """Case events that failed permanently (or ran out of retries). No identity is shown."""
    from services.core.db.engine import libpq_url
    from services.tracing.store import TracingStore

    store = TracingStore(libpq_url(load_settings().database_url_for("tracing")))
    try:
        events = store.failed_events()
    finally:
        store.close()
    if not events:
        typer.echo("no failed case events")
        return
    typer.echo("case_id\tevent\tevent_id\tattempts\tfailed_at\twaiting\tlast_error")
    for e in events:
        failed_at = e.failed_at.isoformat(timespec="seconds") if e.failed_at else "-"
        typer.echo(f"{e.case_id}\t{e.type}\t{e.event_id}\t{e.attempts}\t{failed_at}\t{e.waiting}\t"
                   f"{e.last_error or '-'}")


@app.command()
def redeliver(
    case_id: Annotated[str | None, typer.Argument(help="the case whose failed events to send again")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="every failed case")] = False,
) -> None:
    """Put failed case events back to pending, with a fresh retry budget."""
    from services.core.db.engine import libpq_url
    from services.tracing.store import TracingStore

    if (case_id is None) == (not all_failed):
        raise typer.BadParameter("give either CASE_ID or --all-failed")
    store = TracingStore(libpq_url(load_settings().database_url_for("tracing")))
    try:
        count = store.redeliver(None if all_failed else case_id)
    finally:
        store.close()
    typer.echo(f"{count} failed case event(s) back to pending")
    if count == 0 and case_id is not None:
        raise typer.Exit(1)


@app.command()
def standin(
    port: Annotated[int | None, typer.Option(help="default LABFLOW_TRACING_STANDIN_PORT (9180)")] = None,
) -> None:
    """A local stand-in for the tracing platform (laptop, demo): verifies signatures, records cases."""
    from services.tracing.standin import run_standin

    settings = load_settings()
    run_standin(settings, settings.tracing_standin_port if port is None else port)
