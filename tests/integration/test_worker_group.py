"""Two workers in one consumer group share the partitions; one leaves and comes back: same final state."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import ServiceProcess, free_port, wait_until
from labflow_testkit.results import full_recomputation, random_result_stream, stored_aggregates
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.kafka import producer_config
from tests.integration.test_worker_crash import end_offsets, stored_offsets
from tests.oracles import expected_winners

pytestmark = pytest.mark.integration


def test_two_workers_one_stopped_and_restarted_reach_the_same_state(
    fresh_settings: Settings, tmp_path: Path
) -> None:
    settings = fresh_settings.model_copy(update={"worker_batch_size": 200})
    stream = random_result_stream(24_000, persons=6_000, seed=21)

    # Results keep arriving while workers join and leave. The traffic is paced by what the test has
    # done, not by a clock (process starts and group joins take longer on a busy machine): a quarter
    # of the stream before the second worker has its share, half while it leaves and comes back, the
    # last quarter once it is back — each phase a chunk every 0.5 s, waiting if it runs out early.
    joined, rejoined = threading.Event(), threading.Event()
    chunks = [stream[start : start + 500] for start in range(0, len(stream), 500)]
    phases = ((len(chunks) // 4, None), (3 * len(chunks) // 4, joined), (len(chunks), rejoined))

    def lab_traffic() -> None:
        producer = Producer(producer_config(settings))
        sent = 0
        for end, gate in phases:
            if gate is not None:
                assert gate.wait(120), "the test never reached the next phase"
            for chunk in chunks[sent:end]:
                for r in chunk:
                    producer.produce(
                        settings.topics.results, r.model_dump_json().encode(), r.patient_pseudonym.encode()
                    )
                    producer.poll(0)
                time.sleep(0.5)
            sent = end
        assert producer.flush(60) == 0

    def worker() -> ServiceProcess:
        return ServiceProcess(
            "worker", settings_env(settings, LABFLOW_WORKER_OPS_PORT=str(free_port())), tmp_path
        )

    def owns_partitions(worker: ServiceProcess) -> bool:
        # not the first, empty, round of a cooperative rebalance: a worker stopped before the second
        # round ends leaves its share to the session timeout (10 s), which outlasts the traffic
        return any("partitions assigned" in line and '"partitions": []' not in line
                   for line in worker.log().splitlines())

    traffic = threading.Thread(target=lab_traffic)
    first = worker()
    traffic.start()
    second = worker()
    try:
        wait_until(lambda: owns_partitions(second), timeout_s=60, what="the second worker's share")
        joined.set()
        time.sleep(1.0)
        second.stop()  # graceful leave: its partitions move to the first worker
        assert second.proc.returncode == 0, f"the worker did not stop cleanly:\n{second.log()}"
        time.sleep(1.0)
        second = worker()  # and it joins again
        wait_until(lambda: owns_partitions(second), timeout_s=60, what="the second worker back")
        rejoined.set()
        traffic.join(120)
        assert not traffic.is_alive(), "the traffic did not finish"
        ends = {p: o for p, o in end_offsets(settings).items() if o > 0}
        assert sum(ends.values()) == len(stream)
        wait_until(
            lambda: stored_offsets(settings) == ends,
            timeout_s=180,
            interval_s=0.5,
            what="both workers to reach the end of every partition",
        )
        assert first.proc.poll() is None, first.log()
        assert second.proc.poll() is None, second.log()
    finally:
        joined.set()
        rejoined.set()
        first.stop()
        second.stop()
        traffic.join(60)

    url = settings.require_database()
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute("SELECT result_id, patient_pseudonym, version_key FROM results").fetchall()
        duplicate_openings = conn.execute(
            "SELECT payload->>'case_id' FROM outbox WHERE payload->>'type' = 'case.opened' "
            "GROUP BY 1 HAVING count(*) > 1"
        ).fetchall()
    assert {(r[0], r[1]): r[2] for r in rows} == expected_winners(stream)
    assert stored_aggregates(url) == full_recomputation(url)
    assert duplicate_openings == []
