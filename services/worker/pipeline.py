"""The results worker on the shared consumer framework (`services.core.consume`).

Commit policy: fenced. PostgreSQL is the source of truth for positions: each batch's results and
the next offsets of its partitions are written in one transaction, guarded by the previous offset;
on assignment the consumer seeks to the positions stored there. The Kafka commit that follows is
only informational (lag tools), so a crash between the two loses and doubles nothing. Dead letters
(undecodable or unstorable records) are confirmed by Kafka before the database commit: a crash in
between re-sends a dead letter, never loses one.

Routing (SPEC §8.1): the results a lab in test mode sent (`lab_mode == test`, marked by the gateway)
go to test storage (`services.worker.test_storage`), the rest to the result store. Test results are
written first, idempotently, in their own transaction; the offsets go with the production results, so
a batch of test results only still advances them. Nothing of a test-mode lab reaches the tables that
are counted, exported or handed to tracing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from confluent_kafka import Consumer, Producer

from services.core import failpoints
from services.core.consume import ConsumerLoop, DeadLetterStep, LoopMetrics, PartitionProgress, json_decoder
from services.core.domain.model import LabMode, LabResult
from services.core.readiness import Readiness
from services.worker import metrics
from services.worker.store import ResultStore
from services.worker.test_storage import TestResultStore


def by_mode(items: Sequence[LabResult]) -> tuple[list[LabResult], list[LabResult]]:
    """(production results, test-mode results), each in batch order."""
    production = [r for r in items if r.lab_mode is not LabMode.TEST]
    if len(production) == len(items):
        return production, []
    return production, [r for r in items if r.lab_mode is LabMode.TEST]


class ResultSink:
    """The handle step of the worker: results, their consequences and the offsets, atomically."""

    fenced = True

    def __init__(self, store: ResultStore, test_store: TestResultStore) -> None:
        self.store = store
        self.test_store = test_store

    def write(self, items: Sequence[LabResult], progress: Sequence[PartitionProgress]) -> None:
        production, test = by_mode(items)
        failpoints.hit("before-db-commit")
        if test:
            metrics.ROWS_WRITTEN.labels("test_results").inc(self.test_store.write(test))
        written = self.store.write_batch(production, progress)
        failpoints.hit("after-db-commit")
        metrics.ROWS_WRITTEN.labels("results").inc(written.results_changed)
        metrics.ROWS_WRITTEN.labels("aggregates").inc(written.aggregate_rows)
        metrics.ROWS_WRITTEN.labels("outbox").inc(written.case_events)
        now = datetime.now(UTC)
        for r in items:
            metrics.END_TO_END.observe((now - r.received_at).total_seconds())

    def trial(self, items: Sequence[LabResult]) -> None:
        production, test = by_mode(items)
        self.test_store.trial(test)
        self.store.trial_write(production)

    def stored_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        return self.store.stored_offsets(partitions)

    def ping(self) -> None:
        self.store.ping()

    def close(self) -> None:
        self.store.close()
        self.test_store.close()


class ResultsWorker:
    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        store: ResultStore,
        *,
        topic: str,
        rejected_topic: str,
        batch_size: int,
        batch_timeout_s: float,
        readiness: Readiness | None = None,
        test_store: TestResultStore | None = None,
    ) -> None:
        """`test_store` defaults to the `test_results` table of the store's database."""
        self.loop: ConsumerLoop[LabResult] = ConsumerLoop(
            consumer,
            ResultSink(store, test_store or TestResultStore(store.dsn)),
            DeadLetterStep(producer, rejected_topic, "worker", counter=metrics.REJECTED),
            topic=topic,
            decode=json_decoder(LabResult),
            batch_size=batch_size,
            batch_timeout_s=batch_timeout_s,
            readiness=readiness,
            metrics=LoopMetrics(
                batch_size=metrics.BATCH_SIZE,
                batch_seconds=metrics.BATCH_LATENCY,
                fenced=metrics.FENCED,
                lag=metrics.LAG,
            ),
        )
        self.readiness = self.loop.readiness

    def ready(self) -> bool:
        return self.readiness.ready()

    def run(self) -> None:
        self.loop.run()

    def stop(self) -> None:
        self.loop.stop()
