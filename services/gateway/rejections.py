"""Rejected payloads: read back from `lab.results.rejected.v1`, and replayed after a fix.

A gateway rejection is replayed through the intake exactly as if the lab had sent it again (it gets
validated by the current code, and lands in the results or again in the rejected topic); a worker
dead letter is produced again to the topic it was read from. Every replay is recorded
(`rejection_replays`: how often, when, the last outcome) so an operator sees what was already
replayed and does not replay it twice by mistake.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from sqlalchemy import Engine, func, select
from sqlalchemy.dialects.postgresql import insert

from services.core.config import Settings
from services.core.db.tables import RejectionReplay
from services.core.domain.model import Transport
from services.core.domain.rejection import Rejection
from services.core.errors import KafkaUnavailable
from services.core.kafka import broker_listens, client_config, producer_config
from services.gateway.intake import Intake, IntakeOutcome
from services.gateway.publish import KafkaPublisher, Record


def read_rejections(settings: Settings, timeout_s: float = 30.0) -> Iterator[Rejection]:
    """Every rejection kept in the topic, oldest first per partition."""
    topic = settings.topics.rejected
    if not broker_listens(settings.require_kafka()):
        raise KafkaUnavailable(settings.require_kafka())
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": f"labflow-rejected-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        ends: dict[int, int] = {}
        assignment = []
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            if high > low:
                ends[partition] = high
                assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            # consume() waits for a full batch or its timeout: short waits, an overall deadline
            for message in consumer.consume(500, 0.2):
                if message.error() is not None:
                    continue
                partition, offset = message.partition(), message.offset()
                if partition is None or offset is None:
                    continue
                yield Rejection.model_validate_json(message.value() or b"")
                if offset + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
        if ends:
            raise TimeoutError(f"{topic}: partitions {sorted(ends)} not read to the end in {timeout_s:.0f} s")
    finally:
        consumer.close()


def find_rejection(settings: Settings, rejection_id: str) -> Rejection | None:
    return next((r for r in read_rejections(settings) if r.rejection_id == rejection_id), None)


REPLAYABLE = (Transport.MLLP, Transport.HTTP_HL7)


async def replay(settings: Settings, intake: Intake, publisher: KafkaPublisher, rejection: Rejection) -> str:
    """Submit a rejected payload again; returns what became of it (ACK code, `requeued`, or why not)."""
    if rejection.stage in ("worker", "tracing"):  # a consumer's dead letter: back to where it was read
        await publisher.publish(
            [Record(rejection.source_topic or settings.topics.results, rejection.payload)]
        )
        return "requeued"
    if not rejection.payload_kept:
        return "not replayable: the payload was over the size limit, only its SHA-256 was kept"
    transport = rejection.transport or Transport.MLLP
    if transport not in REPLAYABLE:
        # FHIR and CSV items are tied to the lab's HTTP submission: the lab (or an operator with its
        # token) posts the corrected document again
        return f"not replayable here ({transport.value}): post it again to the HTTP intake"
    outcome: IntakeOutcome = await intake.receive_hl7(rejection.payload, transport, None)
    return outcome.ack_code


def replay_publisher(settings: Settings) -> KafkaPublisher:
    return KafkaPublisher(producer_config(settings))


@dataclass(frozen=True, slots=True)
class Replayed:
    replays: int
    last_outcome: str
    last_replayed_at: datetime


class ReplayLog:
    """The `rejection_replays` table (written with the gateway's role)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def find(self, rejection_ids: Iterable[str]) -> dict[str, Replayed]:
        t = RejectionReplay
        query = select(t.rejection_id, t.replays, t.last_outcome, t.last_replayed_at).where(
            t.rejection_id.in_(list(rejection_ids))
        )
        with self.engine.connect() as conn:
            return {r[0]: Replayed(r[1], r[2], r[3]) for r in conn.execute(query).all()}

    def record(self, rejection_id: str, outcome: str) -> None:
        t = RejectionReplay
        statement = insert(t).values(rejection_id=rejection_id, last_outcome=outcome)
        statement = statement.on_conflict_do_update(
            index_elements=[t.rejection_id],
            set_={"replays": t.replays + 1, "last_outcome": outcome, "last_replayed_at": func.now()},
        )
        with self.engine.begin() as conn:
            conn.execute(statement)
