"""The consumer framework (services/core/consume.py) with fakes at its ports: a consumer that replays
a partition log and honours seeks, a producer whose deliveries succeed or fail on demand, a sink
that refuses poison records the way PostgreSQL does."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from services.core.consume import (
    ConsumerLoop,
    DeadLetterFailed,
    DeadLetterStep,
    PartitionProgress,
    Undecodable,
    describe,
)
from services.core.domain.rejection import Rejection
from services.core.readiness import DATABASE, GROUP, KAFKA, Readiness

TOPIC = "results"
REJECTED = "rejected"


@dataclass
class FakeMessage:
    _partition: int
    _offset: int
    _value: bytes | None

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return TOPIC


@dataclass
class FakeConsumer:
    """One topic; `consume` returns records from the current position of each assigned partition."""

    log: dict[int, list[bytes | None]]
    position: dict[int, int] = field(default_factory=dict)
    commits: list[list[tuple[int, int]]] = field(default_factory=list)
    seeks: list[tuple[int, int]] = field(default_factory=list)
    kafka_up: bool = True
    callbacks: dict[str, Callable[..., None]] = field(default_factory=dict)

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        self.callbacks = callbacks
        callbacks["on_assign"](self, [TopicPartition(TOPIC, p) for p in self.log])

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.position[tp.partition] = max(tp.offset, 0)

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.position.pop(tp.partition, None)

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        out: list[FakeMessage] = []
        for p, start in self.position.items():
            values = self.log[p][start:start + num_messages - len(out)]
            out += [FakeMessage(p, start + i, v) for i, v in enumerate(values)]
            self.position[p] = start + len(values)
        return out

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))
        self.position[tp.partition] = tp.offset

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append([(tp.partition, tp.offset) for tp in offsets])

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, len(self.log[tp.partition])

    def list_topics(self, topic: str, timeout: float) -> None:
        if not self.kafka_up:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down"))

    def close(self) -> None:
        pass


@dataclass
class FakeProducer:
    fail: int = 0  # the next `fail` deliveries report an error
    delivered: list[bytes] = field(default_factory=list)
    _pending: list[tuple[bytes, Callable[..., None]]] = field(default_factory=list)

    def produce(self, topic: str, value: bytes, key: bytes, *, on_delivery: Callable[..., None]) -> None:
        self._pending.append((value, on_delivery))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        pending, self._pending = self._pending, []
        for value, on_delivery in pending:
            if self.fail > 0:
                self.fail -= 1
                on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"), None)
            else:
                self.delivered.append(value)
                on_delivery(None, None)
        return 0  # like librdkafka after message.timeout.ms: nothing left, yet nothing delivered

    @property
    def rejections(self) -> list[Rejection]:
        return [Rejection.model_validate_json(v) for v in self.delivered]


@dataclass
class FakeSink:
    """Stores ints; refuses any write holding a poison value (or both halves of a poison pair)."""

    poison: set[int] = field(default_factory=set)
    pair: frozenset[int] = frozenset()
    fenced: bool = True
    down: int = 0  # the next `down` writes fail as PostgreSQL being unreachable
    stored: list[int] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)
    writes: int = 0
    trials: int = 0

    def _check(self, items: Sequence[int]) -> None:
        if self.poison.intersection(items) or (self.pair and self.pair <= set(items)):
            raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")

    def write(self, items: Sequence[int], progress: Sequence[PartitionProgress]) -> None:
        self.writes += 1
        if self.down:
            self.down -= 1
            raise psycopg.OperationalError("connection refused")
        self._check(items)
        for p in progress:
            assert self.offsets.get(p.partition, 0) == p.start_offset, "offsets must stay contiguous"
            self.offsets[p.partition] = p.next_offset
        self.stored += items

    def trial(self, items: Sequence[int]) -> None:
        self.trials += 1
        self._check(items)

    def stored_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        return {p: o for p, o in self.offsets.items() if p in partitions}

    def ping(self) -> None:
        if self.down:
            raise psycopg.OperationalError("connection refused")

    def close(self) -> None:
        pass


def decode(value: bytes | None) -> int:
    if value is None or not value.isdigit():
        raise Undecodable("not-json", "not a number")
    return int(value)


def make_loop(consumer: FakeConsumer, sink: FakeSink, producer: FakeProducer) -> ConsumerLoop[int]:
    loop: ConsumerLoop[int] = ConsumerLoop(
        consumer,  # type: ignore[arg-type]
        sink,
        DeadLetterStep(producer, REJECTED, "worker"),  # type: ignore[arg-type]
        topic=TOPIC, decode=decode, batch_size=1000, batch_timeout_s=0.01,
        readiness=Readiness(KAFKA, DATABASE, GROUP), probe_interval_s=0.0,
    )
    consumer.subscribe([TOPIC], on_assign=loop._on_assign)  # `run` subscribes again: a rebalance
    return loop


def run_until(loop: ConsumerLoop[Any], done: Callable[[], bool], timeout_s: float = 20.0) -> None:
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        deadline = threading.Event()
        for _ in range(int(timeout_s / 0.01)):
            if done():
                break
            deadline.wait(0.01)
        assert done(), "the loop did not get there"
    finally:
        loop.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_poison_records_are_isolated_dead_lettered_and_the_rest_commits_with_the_whole_batch() -> None:
    values = [str(i).encode() for i in range(200)]
    consumer = FakeConsumer({0: list(values), 1: list(values[:50])})
    sink = FakeSink(poison={17, 150})
    producer = FakeProducer()
    loop = make_loop(consumer, sink, producer)
    loop.step()

    assert sorted(sink.stored) == sorted([i for i in range(200) if i not in (17, 150)]
                                         + [i for i in range(50) if i != 17])
    assert sink.offsets == {0: 200, 1: 50}  # the whole batch, contiguous
    assert consumer.commits == [[(0, 200), (1, 50)]]
    dead = producer.rejections
    assert sorted((r.source_partition, r.source_offset) for r in dead) == [(0, 17), (0, 150), (1, 17)]
    assert all(r.stage == "worker" and r.source_topic == TOPIC for r in dead)
    assert {(r.reasons[0].code, r.reasons[0].text.split(":")[0]) for r in dead} == {("207", "unstorable")}
    assert "DataError" in dead[0].reasons[0].text
    assert dead[0].payload == b"17"
    assert sink.trials < 60, "bisection, not one trial per record"


def test_records_that_fail_only_together_are_found_too() -> None:
    consumer = FakeConsumer({0: [str(i).encode() for i in range(64)]})
    sink = FakeSink(pair=frozenset({3, 60}))  # each half of the batch passes alone
    producer = FakeProducer()
    make_loop(consumer, sink, producer).step()
    assert [r.source_offset for r in producer.rejections] == [60]
    assert sorted(sink.stored) == [i for i in range(64) if i != 60]
    assert sink.offsets == {0: 64}


def test_an_unconfirmed_dead_letter_fails_the_batch_which_is_retried_not_committed() -> None:
    consumer = FakeConsumer({0: [b"1", b"garbage", b"3"]})
    sink = FakeSink()
    producer = FakeProducer(fail=2)  # the first two deliveries fail (flush still returns 0)
    loop = make_loop(consumer, sink, producer)

    with pytest.raises(DeadLetterFailed):
        loop.step()
    assert sink.writes == 0 and consumer.commits == [] and sink.offsets == {}

    run_until(loop, lambda: bool(consumer.commits))
    assert consumer.seeks[0] == (0, 0), "rewound to the committed position"
    assert sorted(sink.stored) == [1, 3] and sink.offsets == {0: 3}
    assert [r.payload for r in producer.rejections] == [b"garbage"]
    assert consumer.commits == [[(0, 3)]]


def test_an_unreachable_store_is_retried_with_the_batch_rewound_and_readiness_follows() -> None:
    consumer = FakeConsumer({0: [b"1", b"2"]})
    sink = FakeSink(down=3)
    producer = FakeProducer()
    loop = make_loop(consumer, sink, producer)
    seen_not_ready = []

    def done() -> bool:
        seen_not_ready.append(not loop.readiness.ready())
        return bool(consumer.commits)

    run_until(loop, done)
    assert any(seen_not_ready)
    assert sink.stored == [1, 2] and sink.offsets == {0: 2} and sink.writes == 4
    assert consumer.seeks == [(0, 0)] * 3
    assert consumer.commits == [[(0, 2)]]


def test_readiness_follows_kafka_and_the_database_and_is_cleared_on_revoke() -> None:
    consumer = FakeConsumer({0: []})
    sink = FakeSink()
    loop = make_loop(consumer, sink, FakeProducer())
    loop.step()
    assert loop.readiness.ready()

    consumer.kafka_up = False
    loop.step()
    assert not loop.readiness.ready() and "kafka" in (loop.readiness.reason() or "")
    consumer.kafka_up = True
    loop.step()
    assert loop.readiness.ready()

    loop.readiness.kafka_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all brokers down"))
    assert not loop.readiness.ready()
    loop.step()  # the next metadata check answers: ready again by itself
    assert loop.readiness.ready()

    sink.down = 1
    loop.step()
    assert not loop.readiness.ready() and "database" in (loop.readiness.reason() or "")
    sink.down = 0
    loop.step()
    assert loop.readiness.ready()

    loop._on_revoke(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    assert not loop.readiness.ready()
    loop._on_assign(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    assert loop.readiness.ready()


def test_error_texts_mask_quoted_values() -> None:
    text = describe(psycopg.DataError('invalid input syntax for type date: "DUPONT"'))
    assert "DUPONT" not in text and text.startswith("DataError")
    assert json.dumps(text)


def test_a_step_that_never_returns_makes_the_service_unready() -> None:
    """A hung dependency (PostgreSQL stopped with SIGSTOP) raises nothing: only the step's duration
    tells, and readiness must say so while it lasts, and recover when the step returns."""
    readiness = Readiness(KAFKA)
    readiness.ok(KAFKA)
    readiness.stalled_after_s = 0.05
    with readiness.step():
        assert readiness.ready()
        time.sleep(0.1)
        assert not readiness.ready()
        assert "progress: a step has waited" in (readiness.reason() or "")
    assert readiness.ready() and readiness.reason() is None
