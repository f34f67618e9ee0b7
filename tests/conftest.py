"""Fixtures: Kafka and PostgreSQL are real. They come from LABFLOW_KAFKA_BOOTSTRAP and
LABFLOW_DATABASE_URL when both are set; from testcontainers when LABFLOW_TEST_CONTAINERS=1 and a
Docker engine answers (`LABFLOW_TEST_CONTAINERS=1 make test`: podman's Docker API, the locally built
Kafka and PostgreSQL images of `make images`, a clean throw-away stack); otherwise the local stack is
started (`labflow stack up`). A missing
service fails the run with the reason — it never skips a test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from labflow_testkit.infrastructure import isolated_settings
from services.core.config import Settings, load_settings

# Hypothesis' per-example deadline is a timing bound: on a loaded 2-core machine a slow example says
# nothing about correctness (speed is measured in load_tests/), so no test of the suite has one.
hypothesis_settings.register_profile("labflow", deadline=None)
hypothesis_settings.load_profile("labflow")


@dataclass(frozen=True)
class Infrastructure:
    kafka_bootstrap: str
    database_url: str


def _from_testcontainers() -> Iterator[Infrastructure]:
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        pytest.fail(f"LABFLOW_TEST_CONTAINERS=1 but no Docker engine answers: {exc}", pytrace=False)
    from tests.support import throwaway_containers

    with throwaway_containers() as (kafka_bootstrap, database_url):
        yield Infrastructure(kafka_bootstrap, database_url)


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    kafka, database = os.environ.get("LABFLOW_KAFKA_BOOTSTRAP"), os.environ.get("LABFLOW_DATABASE_URL")
    if kafka and database:
        yield Infrastructure(kafka, database)
    elif os.environ.get("LABFLOW_TEST_CONTAINERS") == "1":
        yield from _from_testcontainers()
    else:
        from services.stack import local

        try:
            info = local.up(load_settings())
        except Exception as exc:
            pytest.fail(f"could not start the local Kafka + PostgreSQL stack: {exc}", pytrace=False)
        yield Infrastructure(info.kafka_bootstrap, info.database_url)


@pytest.fixture(scope="session")
def shared_settings(infrastructure: Infrastructure) -> Iterator[Settings]:
    """One isolated database and topic set for the session; tests keep to their own labs/ids."""
    with isolated_settings(infrastructure.kafka_bootstrap, infrastructure.database_url) as settings:
        yield settings


@pytest.fixture
def fresh_settings(infrastructure: Infrastructure) -> Iterator[Settings]:
    """A database and topics of its own, for tests that assert on whole-table state."""
    with isolated_settings(infrastructure.kafka_bootstrap, infrastructure.database_url) as settings:
        yield settings


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path
