"""The lab-traffic consumers: what each lab sent and what it was answered, per reception day, for the
lab portal (the dashboard reads it, always filtered by the caller's lab).

Two consumers on the shared framework (`services.core.consume`), run by the worker beside the results
consumer: the worker already owns the fenced write path to PostgreSQL (role, offsets table, readiness,
ops endpoint), so no new deployable is needed, and the gateway's hot path keeps no database write per
message — it only writes to Kafka, as before.

- `lab.results.raw.v1` → `lab_acks.messages`: every message answered on its content gets a raw copy
  (AA, and a content AE/AR beside its rejection); the lab and reception time are in its headers.
- `lab.results.rejected.v1` → `lab_rejections` (one row per gateway rejection with a lab: time,
  AE/AR, transport, the lab's control id and the reasons with their HL7 location and 0357 code, and a
  catalogue hint when the reason carries one) and `lab_acks.ae / ar / rejected_with_copy`. Consumer
  dead letters (stage worker/tracing) are the operators' business, not a lab's answer: skipped.

AA per lab and day = messages − rejected_with_copy (a rejection written with its payload had a raw
copy written with it; one over the bus limit has neither). The two consumers progress independently,
so for a moment a rejection may lag its raw copy (the page floors AA at 0). AEs the lab got while
Kafka or the lab registry was unavailable left no record, and are not counted (the lab sent again).

Exactly once: each consumer is fenced (positions in `consumer_offsets`, written in the same
transaction as the counts, its own group id); a rejection is also counted only when its row is new.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from confluent_kafka import Consumer, Message, Producer
from pydantic import ValidationError

from services.core import failpoints
from services.core.config import Settings
from services.core.consume import (
    ConsumerLoop,
    DeadLetterStep,
    LoopMetrics,
    PartitionProgress,
    Undecodable,
    json_decoder,
)
from services.core.db.engine import libpq_url
from services.core.domain.contracts import RawPayloadHeaders
from services.core.domain.rejection import Rejection
from services.core.kafka import consumer_config, producer_config
from services.core.readiness import DATABASE, GROUP, KAFKA, Readiness
from services.worker import metrics
from services.worker.fenced_store import Cursor, FencedStore

REASONS_KEPT = 20
REASON_TEXT_CHARS = 300


@dataclass(frozen=True, slots=True)
class RawCopy:
    """A raw record as the portal counts it: the lab (empty when MSH-4 could not be read), when."""

    lab: str
    received_at: datetime


def decode_raw(msg: Message) -> RawCopy:
    headers: dict[str, str] = {}
    for header in msg.headers() or []:
        name, value = header[0], header[1]
        headers[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
    try:
        contract = RawPayloadHeaders.model_validate(headers)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise Undecodable("contract-violation", "; ".join(
            f"header {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])) from None
    return RawCopy(contract.lab, contract.received_at)


LAST = "last_received_at = greatest(lab_acks.last_received_at, EXCLUDED.last_received_at)"
ADD_MESSAGES = f"""
INSERT INTO lab_acks (lab, day, messages, last_received_at)
SELECT * FROM unnest(%s::text[], %s::date[], %s::int[], %s::timestamptz[])
ON CONFLICT (lab, day) DO UPDATE SET messages = lab_acks.messages + EXCLUDED.messages, {LAST}
"""
ADD_REJECTIONS = """
INSERT INTO lab_rejections (rejection_id, lab, received_at, ack_code, transport, message_control_id, reasons)
SELECT i, l, r, a, t, c, j::jsonb
FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[])
     AS u(i, l, r, a, t, c, j)
ON CONFLICT (rejection_id) DO NOTHING
RETURNING rejection_id
"""
ADD_ANSWERS = f"""
INSERT INTO lab_acks (lab, day, ae, ar, rejected_with_copy, last_received_at)
SELECT * FROM unnest(%s::text[], %s::date[], %s::int[], %s::int[], %s::int[], %s::timestamptz[])
ON CONFLICT (lab, day) DO UPDATE SET ae = lab_acks.ae + EXCLUDED.ae, ar = lab_acks.ar + EXCLUDED.ar,
    rejected_with_copy = lab_acks.rejected_with_copy + EXCLUDED.rejected_with_copy, {LAST}
"""


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def reasons_json(rejection: Rejection) -> str:
    """The reasons as the portal shows them: location, code, severity, text (cut), and any other field
    the contract carries (the issue catalogue's hint)."""
    return json.dumps([
        {**r.model_dump(exclude_none=True, mode="json"), "text": r.text[:REASON_TEXT_CHARS]}
        for r in rejection.reasons[:REASONS_KEPT]
    ], ensure_ascii=False)


class RawCopyStore(FencedStore):
    def write(self, cur: Cursor, items: Sequence[RawCopy]) -> None:
        counted: dict[tuple[str, date], list[Any]] = {}
        for c in items:
            if c.lab:
                day_of = counted.setdefault((c.lab, c.received_at.astimezone(UTC).date()), [0, c.received_at])
                day_of[0] += 1
                day_of[1] = max(day_of[1], c.received_at)
        rows = [(lab, day, *n) for (lab, day), n in sorted(counted.items())]  # sorted: one lock order
        if rows:
            cur.execute(ADD_MESSAGES, _columns(rows, 4))


class RejectionStore(FencedStore):
    def write(self, cur: Cursor, items: Sequence[Rejection]) -> None:
        answers = {r.rejection_id: r for r in items if r.stage == "gateway" and r.lab}
        if not answers:
            return
        rows = [
            (r.rejection_id, r.lab, r.received_at, r.ack_code or "AE",
             r.transport.value if r.transport else None, r.message_control_id, reasons_json(r))
            for r in answers.values()
        ]
        new = {row[0] for row in cur.execute(ADD_REJECTIONS, _columns(rows, 7)).fetchall()}
        counted: dict[tuple[str, date], list[Any]] = {}
        for rejection_id in new:
            r = answers[rejection_id]
            key = (r.lab or "", r.received_at.astimezone(UTC).date())
            n = counted.setdefault(key, [0, 0, 0, r.received_at])
            n[0 if r.ack_code != "AR" else 1] += 1
            n[2] += 1 if r.payload_base64 else 0
            n[3] = max(n[3], r.received_at)
        totals = [(lab, day, *n) for (lab, day), n in sorted(counted.items())]
        if totals:
            cur.execute(ADD_ANSWERS, _columns(totals, 6))


class TrafficSink:
    """The handle step of a lab-traffic consumer: its counts and its offsets, atomically."""

    fenced = True

    def __init__(self, store: RawCopyStore | RejectionStore) -> None:
        self.store = store

    def write(self, items: Sequence[Any], progress: Sequence[PartitionProgress]) -> None:
        self.store.write_with_offsets(lambda cur: self.store.write(cur, items), progress)
        failpoints.hit("traffic-after-db-commit")

    def trial(self, items: Sequence[Any]) -> None:
        self.store.trial(lambda cur: self.store.write(cur, items))

    def stored_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        return self.store.stored_offsets(partitions)

    def ping(self) -> None:
        self.store.ping()

    def close(self) -> None:
        self.store.close()


def build_lab_traffic(settings: Settings) -> list[ConsumerLoop[Any]]:
    """The two consumers, ready to `run` in their threads."""
    topics, dsn = settings.topics, libpq_url(settings.database_url_for("worker"))
    loops: list[ConsumerLoop[Any]] = []
    for topic, store, decoders in (
        (topics.raw, RawCopyStore, {"decode_record": decode_raw}),
        (topics.rejected, RejectionStore, {"decode": json_decoder(Rejection)}),
    ):
        group = settings.lab_traffic_groups()[topic]
        readiness = Readiness(KAFKA, DATABASE, GROUP)
        loops.append(ConsumerLoop(
            Consumer(consumer_config(settings, group, error_cb=readiness.kafka_error)),
            TrafficSink(store(dsn, group, topic)),
            DeadLetterStep(Producer(producer_config(settings)), topics.rejected, "worker",
                           counter=metrics.REJECTED),
            topic=topic,
            batch_size=settings.worker_batch_size,
            batch_timeout_s=settings.worker_batch_timeout_s,
            readiness=readiness,
            metrics=LoopMetrics(lag=metrics.LAG, fenced=metrics.FENCED),
            **decoders,
        ))
    return loops
