"""The results worker on the shared consumer framework (`services.core.consume`).

Commit policy: fenced. PostgreSQL is the source of truth for positions: each batch's results and
the next offsets of its partitions are written in one transaction, guarded by the previous offset;
on assignment the consumer seeks to the positions stored there. The Kafka commit that follows is
only informational (lag tools), so a crash between the two loses and doubles nothing. Dead letters
(undecodable or unstorable records) are confirmed by Kafka before the database commit: a crash in
between re-sends a dead letter, never loses one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from confluent_kafka import Consumer, Producer

from services.core import failpoints
from services.core.consume import ConsumerLoop, DeadLetterStep, LoopMetrics, PartitionProgress, json_decoder
from services.core.domain.model import LabResult
from services.core.readiness import Readiness
from services.worker import metrics
from services.worker.store import ResultStore


class ResultSink:
    """The handle step of the worker: results, their consequences and the offsets, atomically."""

    fenced = True

    def __init__(self, store: ResultStore) -> None:
        self.store = store

    def write(self, items: Sequence[LabResult], progress: Sequence[PartitionProgress]) -> None:
        failpoints.hit("before-db-commit")
        written = self.store.write_batch(items, progress)
        failpoints.hit("after-db-commit")
        metrics.ROWS_WRITTEN.labels("results").inc(written.results_changed)
        metrics.ROWS_WRITTEN.labels("aggregates").inc(written.aggregate_rows)
        metrics.ROWS_WRITTEN.labels("outbox").inc(written.case_events)
        now = datetime.now(UTC)
        for r in items:
            metrics.END_TO_END.observe((now - r.received_at).total_seconds())

    def trial(self, items: Sequence[LabResult]) -> None:
        self.store.trial_write(items)

    def stored_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        return self.store.stored_offsets(partitions)

    def ping(self) -> None:
        self.store.ping()

    def close(self) -> None:
        self.store.close()


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
    ) -> None:
        self.loop: ConsumerLoop[LabResult] = ConsumerLoop(
            consumer,
            ResultSink(store),
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
