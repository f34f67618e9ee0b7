"""Kafka producer for asyncio: a write counts only once the broker confirmed it (`acks=all`).

Two things besides: a record larger than the producer's `message.max.bytes` is refused before any
record of its batch is produced (`RecordTooLarge`: the caller refuses the payload, it is not worth a
retry), and the publisher knows whether Kafka is reachable, for `/readyz`:

- not reachable until the first metadata answer (a gateway started while Kafka is down is not ready);
- unreachable on librdkafka's `_ALL_BROKERS_DOWN` (reported through `error_cb` as soon as the last
  broker connection drops or a reconnection fails, without waiting for a delivery to time out);
- reachable again on a successful delivery (proof without extra traffic) or on a metadata request,
  which the delivery thread makes every `PROBE_INTERVAL_S` while Kafka is unreachable, so readiness
  comes back by itself even when no lab is sending.

`Publisher` is the port the intake writes through; `NotPublishing` is the adapter for validation
(`labflow validate`, `POST /v1/validate`): it refuses what Kafka would refuse for its size, exactly
as the real one does, and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from services.core.logs import get_logger
from services.core.readiness import HINTS, KAFKA
from services.gateway import metrics

log = get_logger(__name__)

PROBE_INTERVAL_S = 2.0
PUMP_INTERVAL_S = 0.001
"""How often the loop polls the producer while records are in flight (adds at most this to an ACK)."""
IDLE_POLL_S = 0.01
DEFAULT_MAX_RECORD_BYTES = 1_000_000  # librdkafka's `message.max.bytes` default


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: Sequence[tuple[str, str | bytes | None]] = ()

    def size(self) -> int:
        """As librdkafka counts it against `message.max.bytes`, with room for header framing."""
        headers = sum(len(name) + len(value or b"") + 16 for name, value in self.headers)
        return len(self.value) + len(self.key or b"") + headers


class DeliveryFailed(Exception):
    """Kafka did not confirm the write in time: the lab must not get an AA."""


class RecordTooLarge(Exception):
    """A record exceeds what Kafka is configured to carry: nothing of the batch was produced."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a record of {size} bytes exceeds the {limit}-byte limit")
        self.size = size
        self.limit = limit


class Publisher(Protocol):
    """Where the intake writes its records (Kafka, or nowhere when only validating)."""

    @property
    def max_record_bytes(self) -> int: ...

    def fits(self, record: Record) -> bool: ...

    async def publish(self, records: Sequence[Record]) -> None: ...


class NotPublishing:
    """A publisher that writes nothing. It refuses a record too large for Kafka before writing
    anything (`RecordTooLarge`) as the real one does: `limit` is that publisher, or its limit."""

    def __init__(self, limit: Publisher | int = DEFAULT_MAX_RECORD_BYTES) -> None:
        self.limit = limit

    @property
    def max_record_bytes(self) -> int:
        return self.limit if isinstance(self.limit, int) else self.limit.max_record_bytes

    def fits(self, record: Record) -> bool:
        return record.size() <= self.max_record_bytes

    async def publish(self, records: Sequence[Record]) -> None:
        for record in records:
            if not self.fits(record):
                raise RecordTooLarge(record.size(), self.max_record_bytes)


class _Pending:
    """The deliveries of one `publish` call; only the delivery thread changes it."""

    __slots__ = ("error", "future", "remaining", "reported")

    def __init__(self, future: asyncio.Future[None], remaining: int) -> None:
        self.future = future
        self.remaining = remaining
        self.error: str | None = None
        self.reported = False


class KafkaPublisher:
    """Delivery reports are served on the event loop while records are in flight: `publish` starts a
    pump task that polls the producer every `PUMP_INTERVAL_S` until none is left, so a confirmation
    settles its future directly. Measured with `load_tests.bench_gateway`, a delivery thread handing
    reports to the loop cost more than the records themselves (thread wake-ups, GIL hand-offs and a
    loop wake-up per poll). While nothing is in flight, a thread polls instead: it serves librdkafka's
    error reports (`_ALL_BROKERS_DOWN`) and the reachability probe when no lab is sending, and hands
    any delivery report it happens to serve to the loop."""

    def __init__(self, config: dict[str, object]) -> None:
        self.max_record_bytes = int(str(config.get("message.max.bytes", DEFAULT_MAX_RECORD_BYTES)))
        self._reachable = False
        self._producer = Producer({**config, "error_cb": self._on_error})
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump: asyncio.Task[None] | None = None
        self._done: deque[_Pending] = deque()
        self._polling = threading.Lock()
        """Held by whoever polls: delivery callbacks never run in two threads at once."""
        self._poller = threading.Thread(target=self._poll_while_idle, name="kafka-delivery", daemon=True)
        self._poller.start()

    @property
    def reachable(self) -> bool:
        """Whether Kafka answered since it was last seen down (see the module docstring)."""
        return self._reachable

    def _set_reachable(self, reachable: bool) -> None:
        if reachable != self._reachable:
            self._reachable = reachable
            metrics.KAFKA_REACHABLE.set(1 if reachable else 0)
            if reachable:
                log.warning("kafka reachable")
            else:
                log.warning("kafka unreachable: messages get AE until a broker answers", hint=HINTS[KAFKA])

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._set_reachable(False)

    def _poll_while_idle(self) -> None:
        next_probe = 0.0
        while not self._stop.is_set():
            if self._pumping():  # the loop serves the producer
                self._stop.wait(IDLE_POLL_S)
            else:
                with self._polling:
                    self._producer.poll(IDLE_POLL_S)
                self._hand_over()
            if not self._reachable and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + PROBE_INTERVAL_S
                self._probe()

    def _hand_over(self) -> None:
        """Reports this thread served go to the loop, which owns the futures."""
        if self._done and self._loop is not None:
            self._loop.call_soon_threadsafe(_settle, self._take_done())

    def _take_done(self) -> list[_Pending]:
        done = []
        with contextlib.suppress(IndexError):
            while True:
                done.append(self._done.popleft())
        return done

    def _probe(self) -> None:
        try:
            self._producer.list_topics(timeout=1.0)
        except KafkaException:
            return
        self._set_reachable(True)

    def _delivered(self, pending: _Pending, err: KafkaError | None, _msg: Message) -> None:
        pending.remaining -= 1
        if err is None:
            if not self._reachable:
                self._set_reachable(True)
        elif pending.error is None:
            pending.error = err.str()
        if not pending.reported and (pending.remaining == 0 or pending.error is not None):
            pending.reported = True
            self._done.append(pending)

    def _pumping(self) -> bool:
        pump = self._pump
        return pump is not None and not pump.done() and not pump.get_loop().is_closed()

    async def _pump_deliveries(self) -> None:
        """Until librdkafka holds nothing more (records queued, in flight or reports unserved)."""
        while len(self._producer):
            await asyncio.sleep(PUMP_INTERVAL_S)
            if self._polling.acquire(blocking=False):  # else the thread polls and hands over
                try:
                    self._producer.poll(0)
                finally:
                    self._polling.release()
            if self._done:
                _settle(self._take_done())

    def fits(self, record: Record) -> bool:
        return record.size() <= self.max_record_bytes

    async def publish(self, records: Sequence[Record]) -> None:
        """Write all records and wait until every one is confirmed; raise DeliveryFailed otherwise,
        or RecordTooLarge (before producing any) when one of them is over the size limit."""
        for record in records:
            if not self.fits(record):
                raise RecordTooLarge(record.size(), self.max_record_bytes)
        loop = self._loop = asyncio.get_running_loop()
        pending = _Pending(loop.create_future(), len(records))
        on_delivery = partial(self._delivered, pending)
        try:
            for record in records:
                while True:
                    try:
                        self._producer.produce(
                            record.topic,
                            record.value,
                            record.key,
                            headers=list(record.headers),
                            on_delivery=on_delivery,
                        )
                        break
                    except BufferError:  # local queue full: let deliveries drain
                        self._start_pump(loop)
                        await asyncio.sleep(0.01)
                    except KafkaException as exc:
                        pending.reported = True  # records already produced settle nothing
                        error: KafkaError = exc.args[0]
                        if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                            raise RecordTooLarge(record.size(), self.max_record_bytes) from exc
                        raise DeliveryFailed(error.str()) from exc
        finally:  # what was produced, this call's records or others', is confirmed on the loop
            self._start_pump(loop)
        await pending.future

    def _start_pump(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._pumping() and len(self._producer):
            self._pump = loop.create_task(self._pump_deliveries())

    def flush(self, timeout_s: float = 10.0) -> int:
        return int(self._producer.flush(timeout_s))

    def close(self) -> None:
        self._stop.set()
        self._poller.join(timeout=2)
        self._producer.flush(10)


def _settle(done: list[_Pending]) -> None:
    for pending in done:
        if pending.future.done():
            continue
        if pending.error is None:
            pending.future.set_result(None)
        else:
            pending.future.set_exception(DeliveryFailed(pending.error))
