"""The one consumer framework of LabFlow: a short pipeline of small steps, in the style of arroyo.

    poll (bounded batch) → decode (undecodable → dead letter) → dead-letter (confirmed) → handle
    (the sink makes the batch durable; unstorable records are isolated and dead-lettered) → commit

The decode step reads a record's value (`decode`), or the whole record (`decode_record`) for a topic
whose contract lives in its headers (the raw payloads).

Commit policy. A batch is committed only once all of it is accounted for: every record either made
durable by the sink or confirmed by Kafka on the rejected topic (an `on_delivery` report per record,
never the return value of `flush`, which also returns 0 after records timed out). Two commit modes:

- fenced (the results worker): the sink writes the results and the next offsets in ONE PostgreSQL
  transaction, guarded by the previous offset (`Fenced` when another consumer moved the partition);
  PostgreSQL is the source of truth for positions and assignment seeks there. The Kafka commit that
  follows is informational (lag tools). A crash at any instant neither loses nor doubles a result.
- Kafka (the tracing consumer): the sink stores idempotently (unique event id), then the offsets are
  committed to Kafka; a crash in between re-reads records the sink ignores.

Dead letters are confirmed before the commit: a crash in between sends one again (same
`rejection_id`), never loses one. A dead letter that Kafka does not confirm fails the batch.

Failures. Data errors of one record (psycopg DataError / IntegrityError) are isolated by bisecting
the batch with rolled-back trial writes until each poison record is alone; those are dead-lettered
with the reason and the rest commits with offsets covering the whole batch (contiguous). This costs
nothing on the happy path: the search only starts after a failed write. Transient errors (PostgreSQL
or Kafka unreachable, a dead letter not confirmed) follow ONE retry policy — tenacity, exponential
backoff with jitter, forever, interruptible by `stop`: nothing of the batch is committed, the
partitions are rewound to the last committed offsets and the batch is read again at the next
attempt (so the consumer keeps polling and stays in its group). A session lost during COMMIT leaves
the outcome unknown: if it did commit, the retry finds the offsets moved, is discarded as `Fenced`
and the consumer re-seeks to the stored offsets. Anything else (a bug) ends the loop loudly rather
than dead-lettering every record. Readiness (`services.core.readiness`) follows every failure and
every success, and a probe every few seconds checks Kafka and the store even when idle.

Backpressure: at most `batch_size` records are in hand; the next batch is polled only once this one
is committed (librdkafka's own prefetch is bounded by its queue settings); a dead-letter producer
whose queue is full waits for deliveries instead of dropping.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Literal, Protocol, TypeVar

import psycopg
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_when_event_set,
    wait_exponential_jitter,
)

from services.core.domain.rejection import Rejection, RejectionReason
from services.core.logs import get_logger
from services.core.readiness import DATABASE, DEAD_LETTERS, GROUP, KAFKA, Readiness

log = get_logger(__name__)
T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Undecodable(Exception):
    """Raised by a decode function: the record can never become an item (reason, safe detail)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


M = TypeVar("M", bound=BaseModel)


def json_decoder(model: type[M]) -> Callable[[bytes | None], M]:
    """The decode step of a topic whose contract is a pydantic model."""
    validate = model.model_validate_json

    def decode(value: bytes | None) -> M:
        if not value:
            raise Undecodable("empty", "record has no value")
        try:
            return validate(value)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)  # no input: it may be identity
            kind = "not-json" if errors and errors[0]["type"] == "json_invalid" else "contract-violation"
            detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
            raise Undecodable(kind, detail) from None

    return decode


class Fenced(Exception):
    """Another consumer stored this partition past where this one started: discard the batch."""


class DeadLetterFailed(Exception):
    """Kafka did not confirm every dead letter: the batch must not be committed."""


TRANSIENT: tuple[type[BaseException], ...] = (
    psycopg.OperationalError, KafkaException, DeadLetterFailed, BufferError,
)
DATA_ERRORS: tuple[type[BaseException], ...] = (psycopg.DataError, psycopg.IntegrityError)

# The one backoff: 0.2 s doubling up to 30 s, plus up to 1 s of jitter (consumers restarted together
# by an outage do not come back in lockstep). 30 s keeps a retrying consumer well inside
# max.poll.interval.ms, so it stays in its group however long the outage lasts.
WAIT = wait_exponential_jitter(multiplier=0.2, max=30.0, jitter=1.0)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


def backoff_s(failures: int) -> float:
    """The policy's wait after `failures` consecutive failures (for loops that pace themselves)."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = max(failures, 1)
    return float(WAIT(state))


def retrying(
    stopping: threading.Event, what: str, on_retry: Callable[[BaseException], None] | None = None
) -> Retrying:
    """Retry transient errors forever with the policy's backoff; `stopping` interrupts the wait and
    ends the retries (the last error is then raised)."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is not None and on_retry is not None:
            on_retry(exc)
        log.warning("retrying", what=what, error=describe(exc), attempt=state.attempt_number,
                    wait_s=round(state.upcoming_sleep, 2))

    return Retrying(
        retry=retry_if_exception(is_transient),
        wait=WAIT,
        stop=stop_when_event_set(stopping),
        sleep=lambda seconds: _wait(stopping, seconds),
        before_sleep=before_sleep,
        reraise=True,
    )


def _wait(stopping: threading.Event, seconds: float) -> None:
    stopping.wait(seconds)


_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'|\([^()]*\)=\([^()]*\)")


def describe(exc: BaseException | None) -> str:
    """An error as text safe for logs and rejection reasons: PostgreSQL's primary message only (its
    DETAIL and CONTEXT quote the data), with quoted values masked."""
    if exc is None:
        return ""
    if isinstance(exc, psycopg.Error):
        primary = exc.diag.message_primary or (str(exc).splitlines() or [""])[0]
        state = f" [{exc.sqlstate}]" if exc.sqlstate else ""
        return f"{type(exc).__name__}{state}: {_QUOTED.sub('…', primary)}"[:300]
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return f"KafkaException: {exc.args[0].str()}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


# -- ports: the clients are built by the service and injected (tests pass fakes) --------------
@dataclass(frozen=True, slots=True)
class PartitionProgress:
    partition: int
    start_offset: int  # the committed position this batch starts from
    next_offset: int  # after this batch


class Sink(Protocol[T_contra]):
    """The handle step: makes a batch durable.

    `fenced`: `write` stores `progress` in the same transaction as the items (raising `Fenced` when a
    partition moved elsewhere) and `stored_offsets` says where to resume; otherwise positions are
    Kafka's committed offsets and `stored_offsets` returns None.
    """

    fenced: bool

    def write(self, items: Sequence[T_contra], progress: Sequence[PartitionProgress]) -> None: ...
    def trial(self, items: Sequence[T_contra]) -> None: ...  # the same write, rolled back
    def stored_offsets(self, partitions: Sequence[int]) -> dict[int, int] | None: ...
    def ping(self) -> None: ...  # one cheap round trip to the store
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    value: bytes
    reason: str  # short kind: not-json, contract-violation, empty, unstorable
    detail: str  # never carries identity
    code: str = "102"  # HL7 table 0357: 102 data type error, 207 application internal error


@dataclass(frozen=True)
class LoopMetrics:
    batch_size: Histogram | None = None
    batch_seconds: Histogram | None = None
    dead_letters: Counter | None = None  # label: reason
    fenced: Counter | None = None
    lag: Gauge | None = None  # labels: topic, partition


# -- the dead-letter step ----------------------------------------------------------------------
class DeadLetterStep:
    """Sends dead letters to the rejected topic; returns only once Kafka confirmed each one."""

    def __init__(self, producer: Producer, topic: str, stage: Literal["worker", "tracing"],
                 timeout_s: float = 30.0, counter: Counter | None = None) -> None:
        self.producer = producer
        self.topic = topic
        self.stage: Literal["worker", "tracing"] = stage
        self.timeout_s = timeout_s
        self.counter = counter

    def send(self, dead_letters: Sequence[DeadLetter]) -> None:
        if not dead_letters:
            return
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err.str())

        now = datetime.now(UTC)
        for dl in dead_letters:
            rejection = Rejection(
                rejection_id=f"{dl.topic}:{dl.partition}:{dl.offset}",
                stage=self.stage,
                received_at=now,
                reasons=[RejectionReason(code=dl.code, text=f"{dl.reason}: {dl.detail}")],
                payload_base64=base64.b64encode(dl.value).decode(),
                source_topic=dl.topic,
                source_partition=dl.partition,
                source_offset=dl.offset,
            )
            value, key = rejection.model_dump_json().encode(), rejection.rejection_id.encode()
            while True:
                try:
                    self.producer.produce(self.topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:  # the producer's queue is full: wait for deliveries, drop nothing
                    self.producer.poll(0.1)
        remaining = self.producer.flush(self.timeout_s)
        if remaining or failures:
            raise DeadLetterFailed(
                f"{len(failures)} dead letter(s) refused, {remaining} unconfirmed: {failures[:1]}"
            )
        if self.counter is not None:
            for dl in dead_letters:
                self.counter.labels(dl.reason).inc()
        log.warning("records dead-lettered", topic=self.topic, count=len(dead_letters),
                    reasons=sorted({dl.reason for dl in dead_letters}))


# -- the loop ----------------------------------------------------------------------------------
@dataclass
class Batch(Generic[T]):
    items: list[T] = field(default_factory=list)
    sources: list[Message] = field(default_factory=list)  # the record of each item
    dead_letters: list[DeadLetter] = field(default_factory=list)
    progress: dict[int, PartitionProgress] = field(default_factory=dict)


_NOT_ASSIGNED = -2  # sentinel of `positions.get`


class ConsumerLoop(Generic[T]):
    def __init__(
        self,
        consumer: Consumer,
        sink: Sink[T],
        dead_letters: DeadLetterStep,
        *,
        topic: str,
        decode: Callable[[bytes | None], T] | None = None,
        decode_record: Callable[[Message], T] | None = None,
        batch_size: int,
        batch_timeout_s: float,
        readiness: Readiness | None = None,
        metrics: LoopMetrics | None = None,
        probe_interval_s: float = 5.0,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self.consumer = consumer
        self.sink = sink
        self.dead_letters = dead_letters
        self.topic = topic
        if decode_record is None:
            if decode is None:
                raise TypeError("ConsumerLoop needs `decode` (value) or `decode_record` (value, headers)")
            decode_value = decode

            def decode_record(msg: Message) -> T:
                return decode_value(msg.value())

        self.decode_record = decode_record
        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_s
        self.readiness = readiness or Readiness(KAFKA, DATABASE, GROUP)
        self.metrics = metrics or LoopMetrics()
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        # assigned partition -> next offset known committed (-1: Kafka's committed offset, unknown here)
        self.positions: dict[int, int] = {}
        self.stopping = threading.Event()
        self._in_hand: Batch[T] | None = None
        self._next_probe = 0.0

    # -- lifecycle --------------------------------------------------------------------------------
    def run(self) -> None:
        self.consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        try:
            while not self.stopping.is_set():
                try:
                    for attempt in retrying(self.stopping, f"batch from {self.topic}", self._failed):
                        with attempt, self.readiness.step():
                            self.step()
                except TRANSIENT:
                    if not self.stopping.is_set():
                        raise
        finally:
            self.readiness.fail(GROUP, "stopped")
            self.consumer.close()
            self.dead_letters.producer.flush(5)
            self.sink.close()

    def stop(self) -> None:
        self.stopping.set()

    # -- assignment -------------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored: dict[int, int] | None = {}
        if partitions:
            stored = self._stored_offsets([tp.partition for tp in partitions])
        if stored is not None:
            for tp in partitions:
                tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
        consumer.incremental_assign(partitions)
        for tp in partitions:
            self.positions[tp.partition] = -1 if stored is None else stored.get(tp.partition, 0)
        self.readiness.ok(GROUP)
        log.info("partitions assigned", topic=self.topic,
                 partitions=sorted(tp.partition for tp in partitions))

    def _stored_offsets(self, partitions: list[int]) -> dict[int, int] | None:
        # Inside the rebalance callback: an unreachable store is waited for here (the partitions are
        # useless without their positions); a wait beyond max.poll.interval.ms costs a rejoin, and
        # the fenced offsets keep that correct.
        for attempt in retrying(self.stopping, "reading stored offsets", self._failed):
            with attempt:
                stored = self.sink.stored_offsets(partitions)
        self.readiness.ok(DATABASE)
        return stored

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(consumer, partitions, "partitions revoked")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(consumer, partitions, "partitions lost")

    def _drop(self, consumer: Consumer, partitions: list[TopicPartition], what: str) -> None:
        consumer.incremental_unassign(partitions)
        for tp in partitions:
            self.positions.pop(tp.partition, None)
        self.readiness.fail(GROUP, what)
        log.info(what, topic=self.topic, partitions=sorted(tp.partition for tp in partitions))

    # -- one batch --------------------------------------------------------------------------------
    def step(self) -> None:
        """Poll one batch and carry it through to its commit (or raise, nothing committed)."""
        self._probe()
        messages = self.consumer.consume(self.batch_size, self.batch_timeout_s)
        if not messages:
            return
        started = time.perf_counter()
        batch = self.decode(messages)
        if not batch.progress:
            return
        self._in_hand = batch  # rewound by `_failed` if anything below raises a transient error
        self.dead_letters.send(batch.dead_letters)
        try:
            self._write(batch)
        except Fenced as exc:
            self._in_hand = None
            if self.metrics.fenced is not None:
                self.metrics.fenced.inc()
            log.warning("batch discarded: partition owned elsewhere", error=str(exc))
            self._reseek(batch)
            return
        self._in_hand = None
        self.readiness.ok(DATABASE)
        self.readiness.ok(DEAD_LETTERS)
        self._commit(batch)
        size = len(batch.items) + len(batch.dead_letters)
        if self.metrics.batch_size is not None:
            self.metrics.batch_size.observe(size)
        if self.metrics.batch_seconds is not None:
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self._track_lag(batch)

    def decode(self, messages: Sequence[Message]) -> Batch[T]:
        batch: Batch[T] = Batch()
        items, sources, spans = batch.items, batch.sources, batch.progress
        positions, decode = self.positions, self.decode_record
        starts: dict[int, int] = {}
        ends: dict[int, int] = {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", topic=self.topic, error=error.str())
                continue
            partition, offset = msg.partition(), msg.offset()
            known = positions.get(partition, _NOT_ASSIGNED)  # type: ignore[arg-type]
            if known == _NOT_ASSIGNED or offset is None:  # revoked while in flight
                continue
            if partition not in starts:
                starts[partition] = offset if known < 0 else known  # type: ignore[index]
            ends[partition] = offset + 1  # type: ignore[index]
            try:
                item = decode(msg)
            except Undecodable as exc:
                batch.dead_letters.append(
                    DeadLetter(self.topic, partition, offset, msg.value() or b"", exc.reason, exc.detail)  # type: ignore[arg-type]
                )
                continue
            items.append(item)
            sources.append(msg)
        for partition, start in starts.items():
            spans[partition] = PartitionProgress(partition, start, ends[partition])
        return batch

    def _write(self, batch: Batch[T]) -> None:
        progress = list(batch.progress.values())
        try:
            self.sink.write(batch.items, progress)
            return
        except DATA_ERRORS as exc:
            log.warning("batch holds unstorable records: isolating them", topic=self.topic,
                        records=len(batch.items), error=describe(exc))
            error = exc
        good, poison = self._isolate(batch, error)
        self.dead_letters.send(poison)
        self.sink.write(good, progress)

    def _isolate(self, batch: Batch[T], error: BaseException) -> tuple[list[T], list[DeadLetter]]:
        """Bisect with rolled-back trial writes until each poison record is alone. Records that fail
        only together (each half passes) are then found by adding the rest one at a time."""
        items = batch.items
        poison: dict[int, BaseException] = {}

        def search(lo: int, hi: int, failed_with: BaseException) -> None:  # items[lo:hi] fails
            if hi - lo == 1:
                poison[lo] = failed_with
                return
            mid = (lo + hi) // 2
            for a, b in ((lo, mid), (mid, hi)):
                try:
                    self.sink.trial(items[a:b])
                except DATA_ERRORS as exc:
                    search(a, b, exc)

        search(0, len(items), error)
        kept = [i for i in range(len(items)) if i not in poison]
        try:
            self.sink.trial([items[i] for i in kept])
        except DATA_ERRORS:
            together: list[int] = []
            for i in kept:
                try:
                    self.sink.trial([items[j] for j in together] + [items[i]])
                    together.append(i)
                except DATA_ERRORS as alone:
                    poison[i] = alone
            kept = together
        dead = []
        for i, exc in sorted(poison.items()):
            msg = batch.sources[i]
            dead.append(DeadLetter(self.topic, int(msg.partition() or 0), int(msg.offset() or 0),
                                   msg.value() or b"", "unstorable", describe(exc), code="207"))
        return [items[i] for i in kept], dead

    def _commit(self, batch: Batch[T]) -> None:
        for p in batch.progress.values():
            if p.partition in self.positions:
                self.positions[p.partition] = p.next_offset
        offsets = [TopicPartition(self.topic, p.partition, p.next_offset) for p in batch.progress.values()]
        try:
            if self.sink.fenced:  # informational only (lag tools): the positions are in the store
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # stored: reading these records again is harmless
            log.warning("offset commit failed", topic=self.topic, error=describe(exc))

    # -- failures ---------------------------------------------------------------------------------
    def _failed(self, exc: BaseException) -> None:
        """Before the backoff: mark what is down and rewind the batch in hand (nothing committed)."""
        if isinstance(exc, psycopg.Error):
            self.readiness.fail(DATABASE, describe(exc))
        elif isinstance(exc, DeadLetterFailed):  # brokers may answer metadata yet refuse the topic
            self.readiness.fail(DEAD_LETTERS, describe(exc))
        elif isinstance(exc, KafkaException | BufferError):
            self.readiness.fail(KAFKA, describe(exc))
        batch, self._in_hand = self._in_hand, None
        if batch is not None:
            self._seek({p.partition: p.start_offset for p in batch.progress.values()})

    def _reseek(self, batch: Batch[T]) -> None:
        stored = self.sink.stored_offsets(list(batch.progress)) or {}
        self._seek(stored)

    def _seek(self, offsets: dict[int, int]) -> None:
        for partition, offset in offsets.items():
            if partition not in self.positions:
                continue
            try:
                self.consumer.seek(TopicPartition(self.topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: its new owner starts from the store
                log.warning("seek failed", topic=self.topic, partition=partition, error=describe(exc))
                continue
            if self.sink.fenced:
                self.positions[partition] = offset

    def _probe(self) -> None:
        """Every few seconds, even when idle: one metadata request to Kafka, one round trip to the
        store. Readiness follows the dependencies without waiting for traffic."""
        now = time.monotonic()
        if now < self._next_probe:
            return
        self._next_probe = now + self.probe_interval_s
        try:
            self.consumer.list_topics(self.topic, timeout=self.probe_timeout_s)
        except KafkaException as exc:
            self.readiness.fail(KAFKA, describe(exc))
        else:
            self.readiness.ok(KAFKA)
        try:
            self.sink.ping()
        except psycopg.Error as exc:
            self.readiness.fail(DATABASE, describe(exc))
        else:
            self.readiness.ok(DATABASE)
        if self.positions:
            self.readiness.ok(GROUP)

    def _track_lag(self, batch: Batch[T]) -> None:
        if self.metrics.lag is None:
            return
        for p in batch.progress.values():
            # cached: the high watermark the client already knows, no broker round trip
            _low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, p.partition), cached=True
            )
            if high >= 0:
                self.metrics.lag.labels(self.topic, str(p.partition)).set(max(high - p.next_offset, 0))
