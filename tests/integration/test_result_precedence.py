"""The version that counts, as PostgreSQL decides it, is the one the rule of versions.py names.

The worker's upsert (services/worker/store.py UPSERT_RESULTS) decides in SQL: its ORDER BY inside a
batch, its ON CONFLICT … WHERE against the stored row. Generated versions of one result — every
status, equal and missing result times, identical re-sends received at different times — are written
in any order and cut into batches of any size through the worker's own store (its role, its
transaction); the row left in `results` must be the winner of `tests/oracles.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labflow_testkit.infrastructure import isolated_settings
from labflow_testkit.results import make_result
from services.core.db.engine import libpq_url
from services.core.domain.model import LabResult, Outcome, ResultStatus
from services.worker.store import ResultStore
from tests.conftest import Infrastructure
from tests.oracles import version_of, winning_version

T0 = datetime(2021, 3, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def database(infrastructure: Infrastructure) -> Iterator[tuple[ResultStore, psycopg.Connection[Any]]]:
    """The worker's store and an owner connection to read back, on a database of this module."""
    with isolated_settings(infrastructure.kafka_bootstrap, infrastructure.database_url) as s:
        store = ResultStore(libpq_url(s.database_url_for("worker")), s.worker_group, s.topics.results,
                            s.topics.cases)
        with psycopg.connect(libpq_url(s.require_database()), autocommit=True) as reader:
            yield store, reader
        store.close()


# (status, outcome, result hour or None, department) of one version's content, and the reception
# hours of its copies (re-sends)
version_st = st.tuples(
    st.sampled_from(list(ResultStatus)),
    st.sampled_from([Outcome.POSITIVE, Outcome.NEGATIVE]),
    st.none() | st.integers(0, 3),
    st.sampled_from(["75", "13", None]),
    st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(version_st, min_size=1, max_size=6), st.data())
def test_the_upsert_keeps_the_version_the_rule_names(
    database: tuple[ResultStore, psycopg.Connection[Any]], specs: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    store, reader = database
    specimen, pseudonym = uuid.uuid4().hex[:12], uuid.uuid4().hex * 2
    versions: list[LabResult] = [
        make_result(
            specimen_id=specimen, patient_pseudonym=pseudonym, status=status, outcome=outcome,
            collected_at=T0, result_at=None if result_h is None else T0 + timedelta(hours=result_h),
            received_at=T0 + timedelta(hours=24 + received_h), department=department,
            region=None if department is None else "11",
        )
        for status, outcome, result_h, department, received_hours in specs
        for received_h in received_hours
    ]
    arrival = data.draw(st.permutations(versions), label="arrival order")
    sizes = data.draw(st.lists(st.integers(1, 8), min_size=len(arrival), max_size=len(arrival)),
                      label="batch sizes")
    start = 0
    for size in sizes:
        if start < len(arrival):
            store.write_batch(arrival[start:start + size], [])
            start += size

    stored = reader.execute(
        "SELECT version_key, received_at FROM results WHERE result_id = %s AND patient_pseudonym = %s",
        (versions[0].result_id, pseudonym),
    ).fetchall()
    winner = winning_version(version_of(r) for r in versions)
    assert stored == [(winner.version_key, winner.received_at)]
