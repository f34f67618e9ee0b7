"""Kafka producer for asyncio: a write counts only once the broker confirmed it (`acks=all`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: Sequence[tuple[str, str | bytes | None]] = ()


class DeliveryFailed(Exception):
    """Kafka did not confirm the write in time: the lab must not get an AA."""


class KafkaPublisher:
    def __init__(self, config: dict[str, object]) -> None:
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def publish(self, records: Sequence[Record]) -> None:
        """Write all records and wait until every one is confirmed; raise DeliveryFailed otherwise."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in records]

        def callback_for(future: asyncio.Future[None]):  # type: ignore[no-untyped-def]
            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                loop.call_soon_threadsafe(_settle, future, err)

            return on_delivery

        for record, future in zip(records, futures, strict=True):
            while True:
                try:
                    self._producer.produce(
                        record.topic, record.value, record.key, headers=list(record.headers),
                        on_delivery=callback_for(future),
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain
                    await asyncio.sleep(0.01)
        await asyncio.gather(*futures)

    def flush(self, timeout_s: float = 10.0) -> int:
        return int(self._producer.flush(timeout_s))

    def close(self) -> None:
        self.flush()
        self._stop.set()
        self._poller.join(timeout=2)


def _settle(future: asyncio.Future[None], err: KafkaError | None) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(DeliveryFailed(err.str()))
