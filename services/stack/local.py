"""`labflow stack up|down|status`: Kafka and PostgreSQL for a laptop, CI and the tests."""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass

from nacl.public import PrivateKey

from services.core.config import DATABASE_CLIENTS, ENV_FILE_NAME, Settings
from services.core.errors import OperatorError
from services.core.kafka import broker_answers
from services.stack.kafka import LocalKafka, started_stacks
from services.stack.postgres import LocalPostgres


@dataclass(frozen=True)
class StackInfo:
    kafka_bootstrap: str
    database_url: str
    started: tuple[str, ...]
    env_file: str


def _client_database_urls(current: dict[str, str], database_url: str) -> dict[str, str]:
    """One login role per database client on the local server; its password generated once, kept.

    `labflow db upgrade` creates the roles with these passwords (services/core/db/roles.py).
    """
    from services.core.db.roles import GROUP_ROLES, credentials, with_credentials

    urls = {}
    for client in DATABASE_CLIENTS:
        key = f"LABFLOW_{client.upper()}_DATABASE_URL"
        _, password = credentials(current[key]) if key in current else (None, None)
        login = f"{GROUP_ROLES[client]}_login"
        urls[key] = with_credentials(database_url, login, password or secrets.token_hex(24))
    return urls


def _write_env(settings: Settings, values: dict[str, str], local_database: str | None = None) -> str:
    """Merge into `<state>/labflow.env`: connection settings, and local secrets generated once."""
    path = settings.state_dir / ENV_FILE_NAME
    current: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                current[key] = value
    if "LABFLOW_PSEUDONYM_KEY" not in current:
        current["LABFLOW_PSEUDONYM_KEY"] = secrets.token_hex(32)
    if "LABFLOW_TRACING_PRIVATE_KEY" not in current:
        private = PrivateKey.generate()
        current["LABFLOW_TRACING_PRIVATE_KEY"] = bytes(private).hex()
        current["LABFLOW_TRACING_PUBLIC_KEY"] = bytes(private.public_key).hex()
    if "LABFLOW_TRACING_SIGNING_SECRET" not in current:
        current["LABFLOW_TRACING_SIGNING_SECRET"] = secrets.token_hex(32)
    if "LABFLOW_DASHBOARD_TOKENS" not in current:
        current["LABFLOW_DASHBOARD_TOKENS"] = f"demo-{secrets.token_urlsafe(12)}"
    current.update(values)
    if local_database is not None:
        current.update(_client_database_urls(current, local_database))
    else:  # an external server: its roles are the operator's, ours would point at the wrong server
        for client in DATABASE_CLIENTS:
            current.pop(f"LABFLOW_{client.upper()}_DATABASE_URL", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "# written by `labflow stack up`; environment variables override these\n"
    body += "".join(f"{k}={v}\n" for k, v in sorted(current.items()))
    path.write_text(body)
    path.chmod(0o600)
    return str(path)


def up(
    settings: Settings, wait_s: float = 120.0, brokers: int | None = None, use_environment: bool = True
) -> StackInfo:
    """Start what is not running and wait until it answers. `brokers` > 1: a KRaft cluster of that many
    nodes (services/stack/kafka.py), whose topics `labflow topics create` then replicates min(N, 3)
    times. `use_environment=False` ignores servers named in the environment (the chaos harness
    starts a stack of its own whatever the developer's shell says)."""
    # Only servers named in the real environment are external; labflow.env is our own record.
    kafka_bootstrap = (os.environ.get("LABFLOW_KAFKA_BOOTSTRAP") or None) if use_environment else None
    database_url = (os.environ.get("LABFLOW_DATABASE_URL") or None) if use_environment else None
    if kafka_bootstrap and database_url:
        env = _write_env(settings, {})
        return StackInfo(kafka_bootstrap, database_url, (), env)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    started: list[str] = []
    local_database = database_url is None
    external_kafka = kafka_bootstrap is not None
    kafka = LocalKafka(settings, brokers)
    cluster_values: dict[str, str] = {}
    if kafka_bootstrap is None:
        for node in kafka.nodes:
            if not node.process.running():
                _require_free_port(node.broker_port, "LABFLOW_KAFKA_PORT")
                _require_free_port(node.controller_port, "LABFLOW_KAFKA_CONTROLLER_PORT")
                if node.proxied_port is not None:
                    _require_free_port(node.proxied_port, "LABFLOW_KAFKA_PROXY_PORT")
                started.append(node.process.name)
        kafka.start()
        kafka_bootstrap = kafka.bootstrap
        cluster_values = {
            "LABFLOW_KAFKA_BROKERS": str(kafka.brokers),
            "LABFLOW_TOPIC_REPLICATION": str(kafka.replication),
        }
    if database_url is None:
        postgres = LocalPostgres(settings)
        if not postgres.process.running():
            _require_free_port(settings.postgres_port, "LABFLOW_POSTGRES_PORT")
            postgres.start()
            started.append("postgres")
        database_url = postgres.url
    deadline = time.monotonic() + wait_s
    wait_kafka(kafka_bootstrap, deadline, None if external_kafka else kafka)
    _wait_database(database_url, deadline)
    env = _write_env(
        settings,
        {"LABFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap, "LABFLOW_DATABASE_URL": database_url, **cluster_values},
        local_database=database_url if local_database else None,
    )
    return StackInfo(kafka_bootstrap, database_url, tuple(started), env)


def wait_kafka(bootstrap: str, deadline: float, local: LocalKafka | None = None) -> None:
    """Until every broker answers (for a local cluster: each node on its own address)."""
    addresses = [node.address for node in local.nodes] if local is not None else [bootstrap]
    for address in addresses:
        while not broker_answers(address):
            dead = local is not None and next((n for n in local.nodes if not n.process.running()), None)
            if time.monotonic() > deadline or dead:
                log = dead.process.log_file if dead else (local.nodes[0].process.log_file if local else "")
                raise RuntimeError(f"Kafka did not answer on {address}; see {log}")
            time.sleep(0.5)


def _require_free_port(port: int, variable: str) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return
    raise OperatorError(f"port {port} is already used by another process: stop it or set {variable}")


def _wait_database(url: str, deadline: float) -> None:
    import psycopg

    from services.core.db.engine import libpq_url

    while True:
        try:
            with psycopg.connect(libpq_url(url), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def down(settings: Settings) -> list[str]:
    """Stop every Kafka node found under the state dir (single node and cluster), then PostgreSQL."""
    stopped = []
    for kafka in started_stacks(settings):
        for node in kafka.nodes:
            if node.process.stop(timeout_s=30):
                stopped.append(node.process.name)
    if LocalPostgres(settings).stop():
        stopped.append("postgres")
    return stopped


def status(settings: Settings) -> dict[str, int | None]:
    """Pid (None: stopped) of the single Kafka node, of each cluster node present, and of PostgreSQL."""
    pids: dict[str, int | None] = {}
    for kafka in started_stacks(settings):
        for node in kafka.nodes:
            pids[node.process.name] = node.process.pid()
    pids["postgres"] = LocalPostgres(settings).process.pid()
    return pids
