"""Kill -9 the worker at random instants, restart it: PostgreSQL ends exactly as if nothing happened."""

from __future__ import annotations

import random
import time
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import ServiceProcess, free_port, wait_until
from labflow_testkit.results import full_recomputation, random_result_stream, stored_aggregates
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.kafka import producer_config
from tests.oracles import expected_winners

pytestmark = pytest.mark.integration
N = 20_000


def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.require_kafka(), "group.id": "offsets-probe"})
    try:
        ends = {}
        for partition in range(settings.topic_partitions):
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(settings.topics.results, partition), 10
            )
            ends[partition] = high
        return ends
    finally:
        consumer.close()


def stored_offsets(settings: Settings) -> dict[int, int]:
    """partition -> next offset the worker stored for the results topic."""
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        return dict(conn.execute(
            "SELECT partition, next_offset FROM consumer_offsets WHERE topic = %s", (settings.topics.results,)
        ).fetchall())


def test_worker_killed_repeatedly_loses_and_doubles_nothing(fresh_settings: Settings, tmp_path: Path) -> None:
    settings = fresh_settings.model_copy(update={"worker_batch_size": 400})
    stream = random_result_stream(N, persons=6_000, seed=11)
    producer = Producer(producer_config(settings))
    for r in stream:
        producer.produce(settings.topics.results, r.model_dump_json().encode(), r.patient_pseudonym.encode())
        producer.poll(0)
    assert producer.flush(60) == 0
    ends = {p: o for p, o in end_offsets(settings).items() if o > 0}
    assert sum(ends.values()) == N

    rng = random.Random(3)
    kills = 0
    # crashes at random instants, and at the two failpoints around the database commit
    for failpoints in ["", "after-db-commit=0.3", "", "before-db-commit=0.3", "", "after-db-commit=0.5"]:
        env = settings_env(settings, LABFLOW_WORKER_OPS_PORT=str(free_port()), LABFLOW_FAILPOINTS=failpoints)
        worker = ServiceProcess("worker", env, tmp_path)
        deadline = time.monotonic() + rng.uniform(1.0, 4.0)
        while time.monotonic() < deadline and worker.proc.poll() is None:
            time.sleep(0.05)
        if worker.proc.poll() is None:
            worker.kill()
        worker.stop()
        kills += 1
    assert stored_offsets(settings) != ends, "the worker finished before the crashes: raise N"

    final = ServiceProcess(
        "worker", settings_env(settings, LABFLOW_WORKER_OPS_PORT=str(free_port())), tmp_path
    )
    try:
        wait_until(
            lambda: stored_offsets(settings) == ends,
            timeout_s=240,
            interval_s=0.5,
            what="the restarted worker to reach the end of every partition",
        )
        time.sleep(1.0)  # let the relay publish the last outbox rows
    finally:
        final.stop()

    url = settings.require_database()
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute("SELECT result_id, patient_pseudonym, version_key FROM results").fetchall()
        duplicate_openings = conn.execute(
            "SELECT payload->>'case_id' FROM outbox WHERE payload->>'type' = 'case.opened' "
            "GROUP BY 1 HAVING count(*) > 1"
        ).fetchall()
        open_cases = conn.execute("SELECT count(*) FROM cases WHERE status = 'open'").fetchone()
        persons_with_cases = conn.execute("SELECT count(DISTINCT patient_pseudonym) FROM cases").fetchone()
    assert {(r[0], r[1]): r[2] for r in rows} == expected_winners(stream)
    assert len(rows) == len(expected_winners(stream)), "a result is stored twice"
    aggregates = stored_aggregates(url)
    assert aggregates == full_recomputation(url)
    total_p = sum(p for p, _ in aggregates.values())
    assert open_cases is not None and open_cases[0] == total_p, "one open case per counted new positive"
    assert duplicate_openings == [], "a case was opened twice"
    assert persons_with_cases is not None and persons_with_cases[0] > 0
    assert kills == 6
