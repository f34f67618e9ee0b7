"""Kafka producer for asyncio: a write counts only once the broker confirmed it (`acks=all`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from confluent_kafka import KafkaError, Message, Producer


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: Sequence[tuple[str, str | bytes | None]] = ()


class DeliveryFailed(Exception):
    """Kafka did not confirm the write in time: the lab must not get an AA."""


class _Pending:
    """The deliveries of one `publish` call; only the delivery thread changes it."""

    __slots__ = ("error", "future", "remaining", "reported")

    def __init__(self, future: asyncio.Future[None], remaining: int) -> None:
        self.future = future
        self.remaining = remaining
        self.error: str | None = None
        self.reported = False


class KafkaPublisher:
    """Delivery reports are collected by one thread and handed to the event loop once per poll,
    not once per record: a wake-up of the loop per record costs more than the record itself."""

    def __init__(self, config: dict[str, object]) -> None:
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: list[_Pending] = []
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)
            if self._done and self._loop is not None:
                done, self._done = self._done, []
                self._loop.call_soon_threadsafe(_settle, done)

    def _delivered(self, pending: _Pending, err: KafkaError | None, _msg: Message) -> None:
        pending.remaining -= 1
        if err is not None and pending.error is None:
            pending.error = err.str()
        if not pending.reported and (pending.remaining == 0 or pending.error is not None):
            pending.reported = True
            self._done.append(pending)

    async def publish(self, records: Sequence[Record]) -> None:
        """Write all records and wait until every one is confirmed; raise DeliveryFailed otherwise."""
        loop = self._loop = asyncio.get_running_loop()
        pending = _Pending(loop.create_future(), len(records))
        on_delivery = partial(self._delivered, pending)
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
                    await asyncio.sleep(0.01)
        await pending.future

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
