"""`labflow dashboard`: the epidemiologists' query API and web page."""

from __future__ import annotations

import typer

from services.core.config import load_settings

app = typer.Typer(help="Dashboard (SPEC §1, §9): query API and web page on LABFLOW_DASHBOARD_PORT.")


@app.callback(invoke_without_command=True)
def service(ctx: typer.Context) -> None:
    """Serve the dashboard and refresh the rollups every LABFLOW_DASHBOARD_ROLLUP_REFRESH_S."""
    if ctx.invoked_subcommand is not None:
        return
    from services.dashboard.app import run_service

    run_service(load_settings())


@app.command("refresh")
def refresh() -> None:
    """Refresh the national and regional rollups now."""
    from services.core.db.engine import make_engine
    from services.dashboard.queries import refresh_rollups

    done = refresh_rollups(make_engine(load_settings().database_url_for("dashboard")))
    typer.echo("rollups refreshed" if done else "another dashboard is refreshing them")
