"""The worker against the real broker and database: what lands in PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from psycopg.rows import TupleRow

from labflow_testkit.processes import wait_until
from labflow_testkit.results import make_result
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.domain.model import LabResult, Outcome, ResultStatus
from services.core.kafka import producer_config
from services.worker.app import build_worker
from tests.support import dead_letters

pytestmark = pytest.mark.integration


def produce(settings: Settings, values: Sequence[tuple[bytes | None, bytes]]) -> None:
    producer = Producer(producer_config(settings))
    for key, value in values:
        producer.produce(settings.topics.results, value, key)
    assert producer.flush(30) == 0


def encoded(result: LabResult) -> tuple[bytes, bytes]:
    return result.patient_pseudonym.encode(), result.model_dump_json().encode()


@pytest.fixture
def running_worker(fresh_settings: Settings) -> Iterator[Settings]:
    worker = build_worker(fresh_settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield fresh_settings
    worker.stop()
    thread.join(30)
    assert not thread.is_alive(), "worker did not stop"


def rows(settings: Settings, sql: str, *params: object) -> list[TupleRow]:
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        return conn.execute(sql, params).fetchall()


def test_results_are_stored_once_and_the_winning_version_counts(running_worker: Settings) -> None:
    settings = running_worker
    results = [make_result(sending_facility="LAB-A") for _ in range(200)]
    first = results[0]
    assert first.result_at is not None, "make_result gave a result without a result time"
    correction = first.model_copy(
        update={
            "status": ResultStatus.CORRECTED,
            "outcome": Outcome.NEGATIVE,
            "result_at": first.result_at + timedelta(hours=2),
        }
    )
    stale_final = first  # re-sent after the correction: must not undo it
    produce(settings, [encoded(r) for r in results] + [encoded(r) for r in results[:50]])
    produce(settings, [encoded(correction), encoded(stale_final)])

    wait_until(lambda: rows(settings, "SELECT count(*) FROM results")[0][0] == 200, what="200 rows")
    wait_until(
        lambda: (
            rows(settings, "SELECT status FROM results WHERE result_id = %s", first.result_id) == [("C",)]
        ),
        what="the correction to win",
    )
    assert rows(settings, "SELECT outcome FROM results WHERE result_id = %s", first.result_id) == [
        ("negative",)
    ]
    # offsets in PostgreSQL equal the end of each partition: everything consumed exactly once
    consumer = Consumer({"bootstrap.servers": settings.require_kafka(), "group.id": "probe"})
    ends = {}
    for partition in range(settings.topic_partitions):
        _low, high = consumer.get_watermark_offsets(TopicPartition(settings.topics.results, partition), 10)
        if high > 0:
            ends[partition] = high
    consumer.close()
    wait_until(
        lambda: dict(rows(settings, "SELECT partition, next_offset FROM consumer_offsets")) == ends,
        what="stored offsets to reach the end of every partition",
    )


def test_undecodable_record_is_dead_lettered_and_does_not_block_the_partition(
    running_worker: Settings,
) -> None:
    settings = running_worker
    good = make_result(sending_facility="LAB-B")
    key = good.patient_pseudonym.encode()
    produce(settings, [(key, b"{not json"), (key, b'{"schema_version": 1}'), encoded(good)])

    wait_until(lambda: rows(settings, "SELECT count(*) FROM results")[0][0] == 1, what="the good result")
    dead = dead_letters(settings, 2)
    assert {d.stage for d in dead} == {"worker"}
    assert sorted(d.payload for d in dead) == sorted([b"{not json", b'{"schema_version": 1}'])
    assert any("not-json" in d.reasons[0].text for d in dead)
    assert any("contract-violation" in d.reasons[0].text for d in dead)
