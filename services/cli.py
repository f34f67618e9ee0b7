"""`labflow`: one command for every service and operator task. Entry points only wire things up."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from pydantic import SecretStr

from services.core.config import load_settings
from services.dashboard import cli as dashboard_cli
from services.gateway import labs_cli, rejections_cli
from services.opendata import cli as opendata_cli
from services.tracing import cli as tracing_cli

app = typer.Typer(
    help="LabFlow: laboratory results pipeline (HL7 v2 → Kafka → PostgreSQL).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(
    help="Local Kafka (KRaft) + PostgreSQL for a laptop, CI and tests.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics of SPEC §2.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(db_app, name="db")
app.add_typer(topics_app, name="topics")
app.add_typer(opendata_cli.app, name="opendata")
app.add_typer(tracing_cli.app, name="tracing")
app.add_typer(dashboard_cli.app, name="dashboard")
app.add_typer(labs_cli.app, name="labs")
app.add_typer(rejections_cli.app, name="rejected")


@stack_app.command("up")
def stack_up(
    kafka_brokers: Annotated[
        int | None,
        typer.Option(help="KRaft nodes (broker + controller each); 3: a cluster, topics RF 3, min ISR 2"),
    ] = None,
) -> None:
    """Start Kafka and PostgreSQL (idempotent), wait until both answer, print the settings."""
    from services.stack import local

    info = local.up(load_settings(), brokers=kafka_brokers)
    typer.echo(f"started: {', '.join(info.started) or 'nothing (already running or external)'}")
    typer.echo(f"LABFLOW_KAFKA_BOOTSTRAP={info.kafka_bootstrap}")
    typer.echo(f"LABFLOW_DATABASE_URL={_redact(info.database_url)}")
    typer.echo(f"settings and local secrets: {info.env_file}")


@stack_app.command("down")
def stack_down() -> None:
    """Stop what `stack up` started (by pid)."""
    from services.stack import local

    stopped = local.down(load_settings())
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
def stack_status() -> None:
    from services.stack import local

    for name, pid in local.status(load_settings()).items():
        typer.echo(f"{name}: {'running (pid ' + str(pid) + ')' if pid else 'stopped'}")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the migrations up to REVISION."""
    from services.core.db.migrate import upgrade

    upgrade(load_settings().require_database(), revision)
    typer.echo(f"database at {revision}")


@topics_app.command("create")
def topics_create(
    partitions: Annotated[int | None, typer.Option(help="default LABFLOW_TOPIC_PARTITIONS (12)")] = None,
    replication: Annotated[int | None, typer.Option(help="default LABFLOW_TOPIC_REPLICATION (1)")] = None,
) -> None:
    from services.core.kafka import create_topics

    overrides: dict[str, object] = {}
    if partitions is not None:
        overrides["topic_partitions"] = partitions
    if replication is not None:
        overrides["topic_replication"] = replication
    for name, outcome in create_topics(load_settings(**overrides)).items():
        typer.echo(f"{name}: {outcome}")


@app.command()
def purge(
    days: Annotated[int | None, typer.Option(help="default LABFLOW_NOMINATIVE_RETENTION_DAYS (90)")] = None,
) -> None:
    """Remove sealed identities older than the retention limit (run it daily)."""
    from services.core.db.engine import libpq_url
    from services.core.retention import purge_nominative

    settings = load_settings()
    limit = settings.nominative_retention_days if days is None else days
    for table, rows in purge_nominative(libpq_url(settings.require_database()), limit).items():
        typer.echo(f"{table}: {rows} identities older than {limit} days removed")


@app.command()
def schemas() -> None:
    """Regenerate schemas/ (a JSON Schema per topic) from the pydantic models."""
    from services.core.domain.contracts import write_schemas

    for path in write_schemas():
        typer.echo(f"wrote {path}")


@app.command()
def gateway(
    http: Annotated[bool, typer.Option("--http", help="also serve the HTTP intake (LABFLOW_HTTP_PORT)")] = (
        False
    ),
) -> None:
    """MLLP listener (default 127.0.0.1:2575), and with --http the HTTP intake (default port 8080)."""
    from services.gateway.app import run_gateway

    run_gateway(load_settings(), http=http)


@app.command()
def worker() -> None:
    """Results worker: lab.results.v1 → PostgreSQL."""
    from services.worker.app import run_worker

    run_worker(load_settings())


@app.command()
def run() -> None:
    """Every service together, for a laptop (Ctrl-C stops them all)."""
    from services.supervisor import Supervisor

    supervisor = Supervisor()
    supervisor.start()
    raise typer.Exit(supervisor.wait())


@app.command()
def demo(
    once: Annotated[bool, typer.Option("--once", help="replay, print the summary and exit")] = False,
    labs: Annotated[int, typer.Option(help="simulated labs, one MLLP connection each")] = 30,
    messages: Annotated[int, typer.Option(help="ORU^R01 messages to send")] = 2000,
    seed: int = 2022,
) -> None:
    """Start the services, replay realistic lab traffic over MLLP and report what became of it."""
    from services.simulator.demo import replay, wait_for_services
    from services.supervisor import Supervisor

    settings = load_settings()
    log_dir = settings.state_dir / "logs"
    supervisor = Supervisor(log_dir=log_dir)
    supervisor.start()
    try:
        wait_for_services(settings, supervisor.poll_failed)
        typer.echo(f"services up (logs in {log_dir}); {labs} labs sending {messages} messages over MLLP …")
        summary = replay(settings, labs=labs, messages=messages, seed=seed)
        typer.echo(json.dumps(summary.as_dict(), indent=2))
        typer.echo(
            f"{summary.results_acknowledged} results acknowledged (AA), {summary.results_stored} stored in "
            f"PostgreSQL, {summary.acks.get('AE', 0)} messages answered AE as expected; "
            f"{summary.cases_handed_over} of {summary.cases_opened} cases handed over to contact tracing"
        )
        typer.echo(
            f"open data: {summary.opendata_dir} (served on http://127.0.0.1:{settings.opendata_port}/)"
        )
        if not summary.ok:
            raise typer.Exit(1)
        if once:
            return
        typer.echo(
            f"dashboard on http://{settings.dashboard_host}:{settings.dashboard_port}/ — log in with the "
            f"token {(settings.dashboard_tokens or SecretStr('?')).get_secret_value().split(',')[0]}"
        )
        typer.echo(
            f"gateway MLLP on {settings.mllp_host}:{settings.mllp_port}, metrics on "
            f"http://127.0.0.1:{settings.gateway_ops_port}/metrics; Ctrl-C to stop"
        )
        raise typer.Exit(supervisor.wait())
    finally:
        supervisor.stop()


def _redact(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


if __name__ == "__main__":
    app()
