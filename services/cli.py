"""`labflow`: one command for every service and operator task. Entry points only wire things up."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from pydantic import SecretStr, ValidationError

from services.core.config import load_settings
from services.core.errors import explain, redact
from services.dashboard import cli as dashboard_cli
from services.gateway import conformance_cli, labs_cli, rejections_cli, validate_cli
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
app.command("validate")(validate_cli.validate_files)
app.add_typer(conformance_cli.app, name="conformance")


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
    typer.echo(f"LABFLOW_DATABASE_URL={redact(info.database_url)}")
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
    """Apply the migrations up to REVISION (as the owner), then create or update the login role of every
    client whose LABFLOW_<CLIENT>_DATABASE_URL is set."""
    from services.core.db.migrate import upgrade
    from services.core.db.roles import GROUP_ROLES, sync_login_roles

    settings = load_settings()
    upgrade(settings.require_database(), revision)
    typer.echo(f"database at {revision}")
    for client, login in sync_login_roles(settings).items():
        typer.echo(f"{client}: login role {login} (member of {GROUP_ROLES[client]})")


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
    for table, rows in purge_nominative(libpq_url(settings.database_url_for("purge")), limit).items():
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
    processes: Annotated[int | None, typer.Option(
        "--processes", min=1, help="gateway processes sharing the MLLP port (LABFLOW_GATEWAY_PROCESSES)",
    )] = None,
    process_index: Annotated[int, typer.Option("--process-index", hidden=True)] = 0,
) -> None:
    """MLLP listener (default 127.0.0.1:2575), and with --http the HTTP intake (default port 8080)."""
    from services.gateway.app import run_gateway

    overrides = {"gateway_processes": processes} if processes else {}
    run_gateway(load_settings(gateway_process_index=process_index, **overrides), http=http)


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
def status(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line, for scripts")] = False,
) -> None:
    """The whole pipeline on one screen: readiness, consumer lag, open-data age, rejections and tracing
    failures in the last hour. Exits 1 when anything is down or needs a look."""
    from dataclasses import asdict

    from services.status import collect, render

    lines = collect(load_settings())
    typer.echo("\n".join(json.dumps(asdict(line)) for line in lines) if as_json else render(lines))
    if any(line.state != "ok" for line in lines):
        raise typer.Exit(1)


@app.command()
def demo(
    once: Annotated[bool, typer.Option("--once", help="replay, print the summary and exit")] = False,
    labs: Annotated[int, typer.Option(help="simulated labs, one MLLP connection each")] = 30,
    messages: Annotated[int | None, typer.Option(
        help="live ORU^R01 messages to send (default: the volume of the history's last days; 2000 without)",
        min=1)] = None,
    history_days: Annotated[int, typer.Option(
        help="collection days of epidemic history backfilled first (0: none)", min=0, max=800)] = 90,
    history_peak: Annotated[int, typer.Option(
        help="tests on the busiest day of the backfilled wave", min=1)] = 500,
    seed: int = 2022,
) -> None:
    """Start the services, backfill an epidemic history, replay realistic lab traffic over MLLP and
    report what became of it."""
    from services.simulator.demo import replay, wait_for_services
    from services.supervisor import Supervisor

    settings = load_settings()
    log_dir = settings.state_dir / "logs"
    supervisor = Supervisor(log_dir=log_dir, interrupt_caller=True)
    supervisor.start()
    try:
        wait_for_services(settings, supervisor.poll_failed)
        typer.echo(f"services up (logs in {log_dir})")
        if history_days:
            typer.echo(f"backfilling {history_days} days of an epidemic wave (busiest day {history_peak} "
                       "tests) through the worker …")
        summary = replay(
            settings, labs=labs, messages=messages, seed=seed, history_days=history_days,
            history_peak=history_peak,
            progress=typer.echo,
        )
        if not history_days:
            typer.echo(f"{labs} labs sent {summary.messages_sent} messages over MLLP")
        typer.echo(json.dumps(summary.as_dict(), indent=2))
        typer.echo(
            f"{summary.results_acknowledged} results acknowledged (AA), {summary.results_stored} stored in "
            f"PostgreSQL, {summary.acks.get('AE', 0)} messages answered AE as expected; "
            f"{summary.cases_handed_over} of {summary.cases_opened} cases handed over to contact tracing"
        )
        typer.echo(
            f"open data: {summary.opendata_dir} (served on http://127.0.0.1:{settings.opendata_port}/)"
        )
        typer.echo(
            f"dashboard on http://{settings.dashboard_host}:{settings.dashboard_port}/ — log in with the "
            f"token {(settings.dashboard_tokens or SecretStr('?')).get_secret_value().split(',')[0]}"
        )
        if not summary.ok:
            raise typer.Exit(1)
        if once:
            typer.echo("--once: stopping the services (`labflow run` serves the same data again)")
            return
        typer.echo(
            f"gateway MLLP on {settings.mllp_host}:{settings.mllp_port}, metrics on "
            f"http://127.0.0.1:{settings.gateway_ops_port}/metrics; Ctrl-C to stop"
        )
        raise typer.Exit(supervisor.wait())
    finally:
        supervisor.stop()


def _explain(exc: Exception) -> str | None:
    if isinstance(exc, ValidationError):  # a setting that does not parse: name its variable
        problems = [f"LABFLOW_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()]
        return "invalid setting " + "; ".join(problems)
    try:
        settings = load_settings()
    except ValidationError:
        settings = None
    if settings is None:
        return explain(exc)
    ports = {f"LABFLOW_{name.upper()}": value for name, value in settings.model_dump().items()
             if name.endswith("_port") and isinstance(value, int)}
    return explain(exc, database_url=settings.database_url, kafka_bootstrap=settings.kafka_bootstrap,
                   ports=ports)


def main() -> None:
    """The `labflow` command: an expected condition (a server down, a bad setting, a port in use) ends
    with one line naming what to fix; anything else keeps its traceback."""
    try:
        app()
    except Exception as exc:
        message = _explain(exc)
        if message is None:
            raise
        typer.echo(f"labflow: {message}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
