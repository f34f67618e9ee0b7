"""The worker against what the database cannot store and against outages, on the real servers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import ServiceProcess, free_port, http_status, wait_until
from labflow_testkit.results import full_recomputation, make_result, stored_aggregates
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.domain.model import LabResult
from services.core.kafka import producer_config
from services.worker.app import build_worker
from tests.integration.test_worker_crash import end_offsets, stored_offsets
from tests.support import database_refusing_connections, dead_letters

pytestmark = pytest.mark.integration


def produce_in_order(settings: Settings, results: list[LabResult | bytes], partition: int = 0) -> None:
    """To one partition, in this order: the poison lands between good records of one batch."""
    producer = Producer(producer_config(settings))
    for r in results:
        value = r if isinstance(r, bytes) else r.model_dump_json().encode()
        producer.produce(settings.topics.results, value, b"k", partition=partition)
    assert producer.flush(30) == 0


def stored_result_ids(settings: Settings) -> list[str]:
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        return [str(r[0]) for r in conn.execute("SELECT result_id FROM results").fetchall()]


@pytest.fixture
def worker_thread(fresh_settings: Settings) -> Iterator[tuple[Settings, threading.Thread]]:
    worker = build_worker(fresh_settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    yield fresh_settings, thread
    worker.stop()
    if thread.is_alive():
        thread.join(30)
    assert not thread.is_alive(), "worker did not stop"


def test_a_record_the_database_cannot_store_is_dead_lettered_and_the_rest_of_its_batch_is_stored(
    worker_thread: tuple[Settings, threading.Thread],
) -> None:
    settings, thread = worker_thread
    before = [make_result(sending_facility="LAB-P") for _ in range(40)]
    poison = make_result(sending_facility="LAB-P", specimen_id="SP\u0000001")  # NUL: PostgreSQL refuses
    after = [make_result(sending_facility="LAB-P") for _ in range(40)]
    produce_in_order(settings, [*before, poison, *after])  # one batch: produced before the worker starts
    thread.start()

    good = {r.result_id for r in before + after}
    wait_until(lambda: set(stored_result_ids(settings)) == good, what="every other record of the batch")
    (dead,) = dead_letters(settings, 1)
    assert dead.stage == "worker"
    assert (dead.source_topic, dead.source_partition, dead.source_offset) == (settings.topics.results, 0, 40)
    assert dead.payload == poison.model_dump_json().encode()
    # PostgreSQL's own reason (the worker sends text in binary COPY: the server refuses the NUL byte)
    assert dead.reasons[0].code == "207"
    assert dead.reasons[0].text.startswith("unstorable: CharacterNotInRepertoire [22021]")
    assert "0x00" in dead.reasons[0].text
    wait_until(lambda: stored_offsets(settings) == {0: 81}, what="offsets covering the whole batch")

    later = [make_result(sending_facility="LAB-P") for _ in range(10)]  # the worker keeps consuming
    produce_in_order(settings, list(later))
    wait_until(lambda: len(stored_result_ids(settings)) == 90, what="the records after the poison")
    assert thread.is_alive()
    assert stored_offsets(settings) == {0: 91}


def test_worker_survives_a_database_outage_then_stores_everything_exactly_once(
    fresh_settings: Settings, tmp_path: Path
) -> None:
    """The worker's sessions are terminated (AdminShutdown, as in a PostgreSQL restart) and the
    database refuses connections for several seconds while results keep arriving."""
    settings = fresh_settings
    ops_port = free_port()
    ready_url = f"http://127.0.0.1:{ops_port}/readyz"
    worker = ServiceProcess("worker", settings_env(settings, LABFLOW_WORKER_OPS_PORT=str(ops_port)), tmp_path)
    try:
        wait_until(lambda: http_status(ready_url) == 200, timeout_s=40, what=f"ready:\n{worker.log()}")
        first = [make_result(sending_facility="LAB-O") for _ in range(300)]
        produce_in_order(settings, list(first), partition=1)
        wait_until(lambda: len(stored_result_ids(settings)) == 300, what="the first results")

        with database_refusing_connections(settings):
            second = [make_result(sending_facility="LAB-O") for _ in range(300)]
            produce_in_order(settings, list(second[:150]), partition=1)
            produce_in_order(settings, list(second[150:]), partition=2)
            wait_until(lambda: http_status(ready_url) == 503, timeout_s=20, what="503 during the outage")
            time.sleep(4)  # retries with backoff, not an exit
            assert worker.proc.poll() is None, worker.log()
            assert http_status(ready_url) == 503

        wait_until(lambda: http_status(ready_url) == 200, timeout_s=60, what=f"200 after:\n{worker.log()}")
        ends = {p: o for p, o in end_offsets(settings).items() if o > 0}
        wait_until(lambda: stored_offsets(settings) == ends, timeout_s=60, what="every result stored")
        ids = stored_result_ids(settings)
        assert sorted(ids) == sorted(r.result_id for r in first + second), "lost or doubled"
        url = settings.require_database()
        assert stored_aggregates(url) == full_recomputation(url), "a result counted twice"
        with psycopg.connect(libpq_url(url)) as conn:  # the outbox relay came back too
            wait_until(lambda: conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
                       == (0,), timeout_s=30, what="every case event published")
            assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (600,)
        assert worker.proc.poll() is None
        assert "AdminShutdown" in worker.log_path.read_text(), "the outage was meant to cut its sessions"
    finally:
        worker.stop()
    assert worker.proc.returncode == 0, worker.log()


def test_readiness_is_503_while_kafka_is_unreachable_and_the_worker_does_not_exit(
    fresh_settings: Settings,
) -> None:
    settings = fresh_settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    worker = build_worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        def kafka_down() -> bool:
            reason = worker.readiness.reason() or ""
            return "kafka: " in reason and "kafka: not checked yet" not in reason

        wait_until(kafka_down, timeout_s=15, what="Kafka reported down")
        time.sleep(3)
        assert not worker.ready() and thread.is_alive()
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_a_dead_letter_kafka_does_not_confirm_keeps_the_batch_uncommitted_until_it_is(
    fresh_settings: Settings,
) -> None:
    """The real consumer and store; at the producer port, deliveries that report an error while
    `flush` returns 0 (what librdkafka does once message.timeout.ms expired)."""
    from confluent_kafka import Consumer as KafkaConsumer

    from services.core.kafka import consumer_config
    from services.worker.pipeline import ResultsWorker
    from services.worker.store import ResultStore
    from tests.unit.test_consume import FakeProducer

    settings = fresh_settings
    producer = FakeProducer(fail=10**9)
    worker = ResultsWorker(
        KafkaConsumer(consumer_config(settings, settings.worker_group)),
        producer,  # type: ignore[arg-type]
        ResultStore(libpq_url(settings.require_database()), settings.worker_group,
                    settings.topics.results, settings.topics.cases),
        topic=settings.topics.results, rejected_topic=settings.topics.rejected,
        batch_size=1000, batch_timeout_s=0.2,
    )
    good = make_result(sending_facility="LAB-D")
    produce_in_order(settings, [b"{not json", good])
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: producer.fail < 10**9 - 2, timeout_s=20, what="two failed dead-letter attempts")
        assert stored_result_ids(settings) == [] and stored_offsets(settings) == {}, "committed anyway"
        assert not worker.ready()
        producer.fail = 0
        wait_until(lambda: stored_offsets(settings) == {0: 2}, timeout_s=40, what="the batch committed")
        assert stored_result_ids(settings) == [good.result_id]
        assert [r.payload for r in producer.rejections] == [b"{not json"]
    finally:
        worker.stop()
        thread.join(30)
