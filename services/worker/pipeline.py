"""The results worker: a short pipeline — poll, decode, dead-letter, write, commit.

Commit policy: PostgreSQL is the source of truth for positions. Each batch's results and the
next offsets of its partitions are written in one transaction; on assignment the consumer seeks
to the positions stored there. The Kafka commit that follows is only informational (lag tools),
so a crash between the two loses and doubles nothing. Dead letters are flushed to Kafka before
the database commit: a crash in between re-sends a dead letter, never loses one.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from services.core import failpoints
from services.core.domain.model import LabResult
from services.core.domain.rejection import Rejection, RejectionReason
from services.core.logs import get_logger
from services.worker import metrics
from services.worker.decode import DeadLetter, decode
from services.worker.store import Fenced, PartitionProgress, ResultStore

log = get_logger(__name__)


@dataclass
class Batch:
    results: list[LabResult] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    progress: dict[int, PartitionProgress] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.results) + len(self.dead_letters)


class ResultsWorker:
    def __init__(
        self,
        consumer_config: dict[str, object],
        producer_config: dict[str, object],
        store: ResultStore,
        *,
        topic: str,
        rejected_topic: str,
        batch_size: int,
        batch_timeout_s: float,
    ) -> None:
        self.topic = topic
        self.rejected_topic = rejected_topic
        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_s
        self.store = store
        self.consumer = Consumer(consumer_config)
        self.producer = Producer(producer_config)
        self.positions: dict[int, int] = {}  # partition -> next offset this worker will write
        self.stopping = threading.Event()
        self.ready = threading.Event()

    # -- assignment: positions come from PostgreSQL ------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self.store.stored_offsets(tp.partition for tp in partitions)
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
        consumer.incremental_assign(partitions)
        for tp in partitions:
            self.positions[tp.partition] = stored.get(tp.partition, 0)
        self.ready.set()
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_unassign(partitions)
        for tp in partitions:
            self.positions.pop(tp.partition, None)
        log.info("partitions revoked", partitions=sorted(tp.partition for tp in partitions))

    # -- the pipeline ---------------------------------------------------------------------------
    def run(self, on_batch: Callable[[Batch], None] | None = None) -> None:
        self.consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        try:
            while not self.stopping.is_set():
                messages = self.consumer.consume(self.batch_size, self.batch_timeout_s)
                if not messages:
                    continue
                started = time.perf_counter()
                batch = self.decode(messages)
                if batch.size == 0:
                    continue
                self.dead_letter(batch.dead_letters)
                failpoints.hit("before-db-commit")
                try:
                    self.write(batch)
                except Fenced as exc:
                    metrics.FENCED.inc()
                    log.warning("batch discarded: partition owned elsewhere", error=str(exc))
                    self._reseek(batch)
                    continue
                failpoints.hit("after-db-commit")
                self.commit(batch)
                metrics.BATCH_SIZE.observe(batch.size)
                metrics.BATCH_LATENCY.observe(time.perf_counter() - started)
                if on_batch is not None:
                    on_batch(batch)
        finally:
            self.consumer.close()
            self.producer.flush(10)
            self.store.close()

    def decode(self, messages: Sequence[Message]) -> Batch:
        batch = Batch()
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", error=error.str())
                continue
            partition, offset = msg.partition(), msg.offset()
            start = None if partition is None else self.positions.get(partition)
            if start is None or partition is None or offset is None:  # revoked while in flight
                continue
            item = decode(msg.value(), partition, offset)
            if isinstance(item, DeadLetter):
                batch.dead_letters.append(item)
            else:
                batch.results.append(item)
            previous = batch.progress.get(partition)
            batch.progress[partition] = PartitionProgress(
                partition, previous.start_offset if previous else start, offset + 1
            )
        self._track_lag(batch)
        return batch

    def dead_letter(self, dead_letters: Sequence[DeadLetter]) -> None:
        if not dead_letters:
            return
        now = datetime.now(UTC)
        for dl in dead_letters:
            rejection = Rejection(
                rejection_id=f"{self.topic}:{dl.partition}:{dl.offset}",
                stage="worker",
                received_at=now,
                reasons=[RejectionReason(code="102", text=f"{dl.reason}: {dl.detail}")],
                payload_base64=base64.b64encode(dl.value).decode(),
                source_topic=self.topic,
                source_partition=dl.partition,
                source_offset=dl.offset,
            )
            self.producer.produce(
                self.rejected_topic, rejection.model_dump_json().encode(), rejection.rejection_id.encode()
            )
            metrics.REJECTED.labels(dl.reason).inc()
        if self.producer.flush(30) != 0:
            raise RuntimeError("dead letters were not confirmed by Kafka; not committing the batch")

    def write(self, batch: Batch) -> None:
        written = self.store.write_batch(batch.results, list(batch.progress.values()))
        metrics.ROWS_WRITTEN.labels("results").inc(written.results_changed)
        metrics.ROWS_WRITTEN.labels("aggregates").inc(written.aggregate_rows)
        metrics.ROWS_WRITTEN.labels("outbox").inc(written.case_events)
        now = datetime.now(UTC)
        for r in batch.results:
            metrics.END_TO_END.observe((now - r.received_at).total_seconds())

    def commit(self, batch: Batch) -> None:
        for p in batch.progress.values():
            self.positions[p.partition] = p.next_offset
        offsets = [TopicPartition(self.topic, p.partition, p.next_offset) for p in batch.progress.values()]
        self.consumer.commit(offsets=offsets, asynchronous=True)

    def _reseek(self, batch: Batch) -> None:
        stored = self.store.stored_offsets(batch.progress)
        for partition in batch.progress:
            if partition in self.positions and partition in stored:
                self.positions[partition] = stored[partition]
                self.consumer.seek(TopicPartition(self.topic, partition, stored[partition]))

    def _track_lag(self, batch: Batch) -> None:
        for p in batch.progress.values():
            # cached: the high watermark the client already knows, no broker round trip
            _low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, p.partition), cached=True
            )
            if high >= 0:
                metrics.LAG.labels(self.topic, str(p.partition)).set(max(high - p.next_offset, 0))

    def stop(self) -> None:
        self.stopping.set()
