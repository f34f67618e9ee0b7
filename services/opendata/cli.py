"""`labflow opendata`: the service (daily publication + HTTP), `publish` now, `serve` the folder."""

from __future__ import annotations

import typer

from services.core.config import load_settings

app = typer.Typer(help="Open data (SPEC §7): SI-DEP files, daily publication, HTTP server.")


@app.callback(invoke_without_command=True)
def service(ctx: typer.Context) -> None:
    """Publish at start and daily at LABFLOW_OPENDATA_PUBLISH_AT (Europe/Paris); serve the files over HTTP."""
    if ctx.invoked_subcommand is not None:
        return
    from services.opendata.app import run_service

    run_service(load_settings())


@app.command()
def publish() -> None:
    """Publish the files now (whole history) and print what was written."""
    from services.core.logs import configure_logging
    from services.opendata.app import publish_now

    settings = load_settings()
    configure_logging("opendata", settings.log_level)
    publication = publish_now(settings)
    typer.echo(f"publication {publication.stamp} in {settings.opendata_path} "
               f"(data {publication.first_day} → {publication.data_cut_off})")
    for f in publication.files:
        typer.echo(f"  {f.name}: {f.rows} rows, {f.bytes} bytes, sha256 {f.sha256}")
    for d in publication.documents:
        typer.echo(f"  {d.name}: {d.bytes} bytes, sha256 {d.sha256}")
    if publication.changes is not None:
        days = [d["jour"] for d in publication.changes["corrected_days"]]
        typer.echo(f"  corrected days since {publication.changes['previous']}: {', '.join(days) or 'none'}")
    if publication.removed:
        typer.echo(f"  removed {len(publication.removed)} expired files")


@app.command()
def serve() -> None:
    """Serve the publication folder over HTTP (LABFLOW_OPENDATA_HOST:LABFLOW_OPENDATA_PORT)."""
    from services.core.logs import configure_logging
    from services.opendata.app import serve as serve_folder

    settings = load_settings()
    configure_logging("opendata", settings.log_level)
    serve_folder(settings)
