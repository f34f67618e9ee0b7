"""Worker bootstrap: wires the results consumer, the PostgreSQL store and the pipeline, the outbox relay,
and the lab-traffic consumers of the lab portal (`services.worker.lab_traffic`), each in its thread.
The worker is ready when every consumer is."""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from types import FrameType

from confluent_kafka import Consumer, Producer

from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.kafka import consumer_config, producer_config
from services.core.logs import configure_logging
from services.core.ops_http import OpsServer
from services.core.readiness import DATABASE, GROUP, KAFKA, Readiness
from services.core.runtime import tune_garbage_collector
from services.worker.lab_traffic import build_lab_traffic
from services.worker.pipeline import ResultsWorker
from services.worker.relay import OutboxRelay
from services.worker.store import ResultStore


def build_worker(settings: Settings) -> ResultsWorker:
    topics = settings.topics
    store = ResultStore(
        libpq_url(settings.database_url_for("worker")), settings.worker_group, topics.results, topics.cases
    )
    readiness = Readiness(KAFKA, DATABASE, GROUP)
    return ResultsWorker(
        Consumer(consumer_config(settings, settings.worker_group, error_cb=readiness.kafka_error)),
        # no error_cb on this mostly idle producer: the broker closing an idle connection would read
        # as "all brokers down"; the consumer's connections are never idle
        Producer(producer_config(settings)),
        store,
        topic=topics.results,
        rejected_topic=topics.rejected,
        batch_size=settings.worker_batch_size,
        batch_timeout_s=settings.worker_batch_timeout_s,
        readiness=readiness,
    )


def build_relay(settings: Settings) -> OutboxRelay:
    return OutboxRelay(libpq_url(settings.database_url_for("worker")), Producer(producer_config(settings)))


def worker_ready(results: Readiness, lab_traffic: Sequence[Readiness]) -> bool:
    """The results consumer is ready, and the lab-traffic consumers reach Kafka and PostgreSQL. One of
    them may hold no partition (more workers than the raw or rejected topic has partitions): that is
    no reason to take the worker out of service."""
    return results.ready() and all(r.ready(ignoring=frozenset({GROUP})) for r in lab_traffic)


def run_worker(settings: Settings) -> None:
    configure_logging("worker", settings.log_level)
    worker = build_worker(settings)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    relay = build_relay(settings)
    relay_thread = threading.Thread(target=relay.run, name="outbox-relay", daemon=True)
    relay_thread.start()
    traffic = build_lab_traffic(settings)
    traffic_threads = [threading.Thread(target=loop.run, name=f"lab-traffic-{loop.topic}", daemon=True)
                       for loop in traffic]
    for thread in traffic_threads:
        thread.start()

    def ready() -> bool:
        return worker_ready(worker.readiness, [loop.readiness for loop in traffic])

    ops = OpsServer(settings.ops_host, settings.worker_ops_port, ready=ready).start()
    tune_garbage_collector()
    try:
        worker.run()
    finally:
        for loop in traffic:
            loop.stop()
        relay.stop()
        relay_thread.join(10)
        for thread in traffic_threads:
            thread.join(10)
        ops.stop()
