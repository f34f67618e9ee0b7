"""Worker bootstrap: wires the results consumers, the PostgreSQL store and the pipeline, the outbox relay,
and the lab-traffic consumers of the lab portal (`services.worker.lab_traffic`), each in its thread.
The worker is ready when every consumer is.

`worker_consumers` results consumers run in one process, each a member of the consumer group with its
own partitions and its own PostgreSQL session, exactly as if each were a process of its own (the
fenced offsets keep a partition to one of them). The point is overlap: a consumer waiting for
PostgreSQL releases the GIL, so another decodes and deduplicates its batch meanwhile. When one of them
ends, all stop, and a bug in one is raised here (the process exits loudly)."""

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


def build_workers(settings: Settings) -> list[ResultsWorker]:
    return [build_worker(settings) for _ in range(settings.worker_consumers)]


def worker_ready(results: Sequence[Readiness], lab_traffic: Sequence[Readiness]) -> bool:
    """A results consumer holds partitions, and every consumer reaches Kafka and PostgreSQL. A consumer
    may hold no partition (more consumers than the topic has partitions): that is no reason to take
    the worker out of service."""
    return any(r.ready() for r in results) and all(
        r.ready(ignoring=frozenset({GROUP})) for r in (*results, *lab_traffic)
    )


def run_consumers(workers: Sequence[ResultsWorker]) -> None:
    """Each results consumer in its thread until one ends; then all stop, and a bug is raised here."""
    errors: list[BaseException] = []

    def run(worker: ResultsWorker) -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)
        finally:
            for each in workers:
                each.stop()

    threads = [threading.Thread(target=run, args=(w,), name=f"results-consumer-{i}")
               for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # a timed join: the main thread handles SIGTERM in between
            thread.join(0.5)
    if errors:
        raise errors[0]


def run_worker(settings: Settings) -> None:
    configure_logging("worker", settings.log_level)
    workers = build_workers(settings)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        for worker in workers:
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
        return worker_ready([w.readiness for w in workers], [loop.readiness for loop in traffic])

    ops = OpsServer(settings.ops_host, settings.worker_ops_port, ready=ready).start()
    tune_garbage_collector()
    try:
        run_consumers(workers)
    finally:
        for loop in traffic:
            loop.stop()
        relay.stop()
        relay_thread.join(10)
        for thread in traffic_threads:
            thread.join(10)
        ops.stop()
