"""A batch stores what the same results stored one at a time store (services/worker/store.py).

The store works per batch: one statement per table, each aggregate key written once, a person's
stored results read back only when they were known before the batch (some persons at a time),
their row rewritten only when their contributions changed. None of that may show in PostgreSQL:
whatever the batching — several results of one person in one batch, the same result twice in a
batch, a result re-delivered in a later batch — the results, persons, aggregates, reception
statistics and open cases are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
import pytest

from labflow_testkit.infrastructure import isolated_settings
from labflow_testkit.results import full_recomputation, random_result_stream, stored_aggregates
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.domain.model import LabResult
from services.worker.store import PERSONS_PER_READ, ResultStore
from tests.conftest import Infrastructure

pytestmark = pytest.mark.integration

# what a reader of the database sees: every column but the storage times, and of cases those that do
# not depend on the order results came in (which case id an episode keeps does, by design). Neither do
# lab_daily's positives: they count the outcome of the version first stored, which one at a time is
# the first received and in a batch the batch's winner.
SNAPSHOT = {
    "results": "SELECT result_id, patient_pseudonym, version_key, status, outcome, received_at "
    "FROM results ORDER BY 1, 2",
    "persons": "SELECT patient_pseudonym, contributions FROM persons ORDER BY 1",
    "aggregates": "SELECT day, department, age_class, sex, test_kind, p, t FROM aggregates "
    "WHERE p <> 0 OR t <> 0 ORDER BY 1, 2, 3, 4, 5",
    "lab_daily": "SELECT lab, day, results FROM lab_daily ORDER BY 1, 2",
    "lab_delays": "SELECT lab, day, delay_hours, n FROM lab_delays ORDER BY 1, 2, 3",
    "open cases": "SELECT patient_pseudonym, onset_day, last_positive_day, department, region, age_class, "
    "sex, test_kind FROM cases WHERE status = 'open' ORDER BY 1, 2",
}


def store_in_batches(
    settings: Settings, batches: Sequence[Sequence[LabResult]], persons_per_read: int = PERSONS_PER_READ
) -> dict[str, object]:
    dsn, topics = libpq_url(settings.database_url_for("worker")), settings.topics
    store = ResultStore(dsn, "batches", topics.results, topics.cases, persons_per_read=persons_per_read)
    try:
        for batch in batches:
            store.write_batch(batch, [])
    finally:
        store.close()
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        return {table: conn.execute(sql).fetchall() for table, sql in SNAPSHOT.items()}


def test_one_batch_stores_what_one_result_at_a_time_stores(infrastructure: Infrastructure) -> None:
    stream = random_result_stream(400, persons=40, seed=16)  # ten versions per person: many per batch
    redelivered = stream[:60]  # the same results again, in the batch and after it
    with (
        isolated_settings(infrastructure.kafka_bootstrap, infrastructure.database_url) as batched,
        isolated_settings(infrastructure.kafka_bootstrap, infrastructure.database_url) as one_by_one,
    ):
        # 7 persons read at a time: a batch's persons are re-evaluated in several reads
        in_batches = store_in_batches(
            batched, [stream[:250] + redelivered, stream[250:], redelivered], persons_per_read=7
        )
        one_at_a_time = store_in_batches(one_by_one, [[r] for r in stream])
        assert in_batches["open cases"], "the stream holds positives: cases were opened"
        assert in_batches == one_at_a_time
        url = batched.require_database()
        assert stored_aggregates(url) == full_recomputation(url)
