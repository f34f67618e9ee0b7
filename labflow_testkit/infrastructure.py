"""Isolated infrastructure for one test or benchmark: a fresh database and topics on the real servers."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from nacl.public import PrivateKey

from services.core.config import DATABASE_CLIENTS, REPO_ROOT, Settings
from services.core.db.engine import libpq_url
from services.core.db.migrate import upgrade
from services.core.db.roles import GROUP_ROLES, drop_login_roles, sync_login_roles, with_credentials
from services.core.kafka import create_topics


def with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def isolated_settings(
    kafka_bootstrap: str, database_url: str, partitions: int = 3, replication: int = 1
) -> Iterator[Settings]:
    """A fresh database (migrated) and fresh topics on the real servers, dropped afterwards.

    Every database client connects as a login role of its own (member of its service's group role),
    so whatever a test runs through the services proves their grants are enough.
    """
    tag = uuid.uuid4().hex[:10]
    db_name = f"labflow_test_{tag}"
    admin = libpq_url(with_database(database_url, "postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    url = with_database(database_url, db_name)
    logins = {client: f"{GROUP_ROLES[client]}_{tag}" for client in DATABASE_CLIENTS}
    client_urls: dict[str, Any] = {
        f"{client}_database_url": with_credentials(url, login, secrets.token_hex(16))
        for client, login in logins.items()
    }
    key = PrivateKey.generate()
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=url,
        **client_urls,
        topic_prefix=f"test-{tag}.",
        topic_partitions=partitions,
        topic_replication=replication,
        pseudonym_key=secrets.token_hex(32),
        tracing_public_key=bytes(key.public_key).hex(),
        tracing_private_key=bytes(key).hex(),
        worker_group=f"test-worker-{tag}",
        worker_batch_timeout_s=0.2,
    )
    upgrade(url)
    sync_login_roles(settings)
    create_topics(settings)
    try:
        yield settings
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        drop_login_roles(admin, list(logins.values()))




def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a service process needs to run against `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABFLOW_")}
    values: dict[str, Any] = settings.model_dump()
    for key, value in values.items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"LABFLOW_{key.upper()}"] = str(value)
    env.update(extra)
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


