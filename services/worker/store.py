"""PostgreSQL adapter of the worker: one transaction per batch, offsets included (SPEC §2, §5).

Hot path in plain psycopg: COPY into a temporary table, then one INSERT … SELECT … ON CONFLICT that
keeps the version that counts. Then every person the batch touched is re-evaluated from all their
stored results: the difference between their new and previous P/T contributions is applied to the
aggregates (so the aggregates always equal a full recomputation), their cases are reconciled and the
case events go to the outbox — all in the same transaction as the consumer offsets.

The connection is re-opened (and its temporary table re-created) after any connection error
(`services.worker.fenced_store`): the caller retries the batch, which was rolled back with the lost
session.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import EnumType
from operator import attrgetter
from typing import Any

import psycopg

from services.core.consume import PartitionProgress
from services.core.db.tables import Result
from services.core.domain.case_event import CaseEventMessage
from services.core.domain.model import LabResult, Outcome, ResultStatus, Sex, TestKind
from services.worker.dedup import (
    AggregateKey,
    CaseEvent,
    CaseStatus,
    Counts,
    StoredCase,
    diff_contributions,
    evaluate_person,
    reconcile_cases,
)
from services.worker.fenced_store import FencedStore
from services.worker.versions import STATUS_RANK, ResultVersion, version_key

# The columns the worker writes: every column of the results table (`services/core/db/tables.py`, the
# one definition; tests/integration/test_schema.py holds the migrations to it) but those PostgreSQL
# fills in. `precedence` and `version_key` are computed here, every other one is the LabResult field
# of the same name (an enum as its value).
_COMPUTED = ("precedence", "version_key")
_KEY = tuple(c.name for c in Result.__table__.primary_key)
RESULT_COLUMNS = tuple(c.name for c in Result.__table__.columns if c.server_default is None)
_COPIED = tuple(c for c in RESULT_COLUMNS if c not in _COMPUTED)
_COLS = ", ".join((*_COMPUTED, *_COPIED))
_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in RESULT_COLUMNS if c not in _KEY)


def _attribute(column: str) -> str:
    field = LabResult.model_fields.get(column)  # None: a property (collection_day)
    return f"{column}.value" if field is not None and isinstance(field.annotation, EnumType) else column


_copied_values = attrgetter(*map(_attribute, _COPIED))  # one C call per row: the hot path

# The upsert, and per lab and reception day (UTC) the results it newly stored: count, positives and
# a histogram of collection → reception delay in whole hours. Returns the persons whose results
# changed and how many rows changed.
# Which version counts is the order of versions.py (status rank, result time, version key; for
# identical content the earliest reception) in SQL: the ORDER BY picks the winner inside a batch, the
# WHERE decides against the stored row. tests/integration/test_result_precedence.py checks both
# against tests/oracles.py over generated versions.
UPSERT_RESULTS = f"""
WITH upserted AS (
INSERT INTO results ({_COLS})
SELECT DISTINCT ON (result_id, patient_pseudonym) {_COLS} FROM incoming_results
ORDER BY result_id, patient_pseudonym, precedence DESC, result_at DESC NULLS LAST, version_key DESC,
         received_at ASC
ON CONFLICT (result_id, patient_pseudonym) DO UPDATE SET {_UPDATES}, stored_at = now()
WHERE (EXCLUDED.precedence, COALESCE(EXCLUDED.result_at, '-infinity'), EXCLUDED.version_key,
       results.received_at)
    > (results.precedence, COALESCE(results.result_at, '-infinity'), results.version_key,
       EXCLUDED.received_at)
RETURNING patient_pseudonym, (xmax = 0) AS inserted, sending_facility AS lab,
          (received_at AT TIME ZONE 'UTC')::date AS day, outcome,
          greatest(floor(extract(epoch FROM received_at - collected_at) / 3600), 0)::int AS delay_hours
), daily AS (
INSERT INTO lab_daily (lab, day, results, positives)
SELECT lab, day, count(*), count(*) FILTER (WHERE outcome = 'positive')
FROM upserted WHERE inserted GROUP BY lab, day ORDER BY lab, day
ON CONFLICT (lab, day) DO UPDATE
SET results = lab_daily.results + EXCLUDED.results, positives = lab_daily.positives + EXCLUDED.positives
), delays AS (
INSERT INTO lab_delays (lab, day, delay_hours, n)
SELECT lab, day, delay_hours, count(*)
FROM upserted WHERE inserted GROUP BY lab, day, delay_hours ORDER BY lab, day, delay_hours
ON CONFLICT (lab, day, delay_hours) DO UPDATE SET n = lab_delays.n + EXCLUDED.n
)
SELECT coalesce(array_agg(DISTINCT patient_pseudonym ORDER BY patient_pseudonym), '{{}}'), count(*)
FROM upserted
"""

SELECT_PERSON_RESULTS = """
SELECT result_id, patient_pseudonym, version_key, status, result_at, received_at, outcome, test_kind,
       collected_at, collection_day, department, region, age_class, sex, sending_facility
FROM results WHERE patient_pseudonym = ANY(%s)
"""


@dataclass(frozen=True, slots=True)
class BatchWritten:
    results_changed: int
    persons: int
    aggregate_rows: int
    case_events: int


def _row(r: LabResult) -> tuple[Any, ...]:
    """The values of one result in the order of `_COLS`."""
    return (STATUS_RANK[r.status], version_key(r), *_copied_values(r))


def _version(row: tuple[Any, ...]) -> ResultVersion:
    (
        result_id,
        pseudonym,
        vkey,
        status,
        result_at,
        received_at,
        outcome,
        kind,
        collected_at,
        day,
        department,
        region,
        age_class,
        sex,
        lab,
    ) = row
    return ResultVersion(
        result_id=str(result_id),
        patient_pseudonym=str(pseudonym),
        version_key=str(vkey),
        status=_STATUSES[status],
        result_at=result_at,
        received_at=received_at,
        outcome=_OUTCOMES[outcome],
        test_kind=_KINDS[kind],
        collected_at=collected_at,
        collection_day=day,
        department=department,
        region=region,
        age_class=age_class,
        sex=_SEXES[sex],
        lab=str(lab),
    )


# plain dict look-ups: calling an Enum class per row is several times slower
_STATUSES = {s.value: s for s in ResultStatus}
_OUTCOMES = {o.value: o for o in Outcome}
_KINDS = {k.value: k for k in TestKind}
_SEXES = {s.value: s for s in Sex}


def _encode_contributions(contributions: dict[AggregateKey, Counts]) -> str:
    return json.dumps(
        [
            [k.day.isoformat(), k.department, k.age_class, k.sex.value, k.test_kind.value, c.p, c.t]
            for k, c in sorted(contributions.items(), key=lambda kv: kv[0].day)
        ]
    )


def _decode_contributions(raw: list[list[Any]]) -> dict[AggregateKey, Counts]:
    return {
        AggregateKey(date.fromisoformat(str(d)), dep, age, Sex(sex), TestKind(kind)): Counts(int(p), int(t))
        for d, dep, age, sex, kind, p, t in raw
    }


class ResultStore(FencedStore):
    def __init__(self, dsn: str, group_id: str, topic: str, cases_topic: str) -> None:
        super().__init__(dsn, group_id, topic)
        self.cases_topic = cases_topic

    def prepare(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming_results "
                "(LIKE results INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )

    def write_batch(
        self, results: Sequence[LabResult], progress: Sequence[PartitionProgress]
    ) -> BatchWritten:
        """Write results, their consequences and the offsets, atomically."""
        return self.write_with_offsets(lambda cur: self._write(cur, results), progress)

    def trial_write(self, results: Sequence[LabResult]) -> None:
        """The same write without offsets, rolled back: raises what `write_batch` would raise."""
        self.trial(lambda cur: self._write(cur, results))

    def _write(self, cur: psycopg.Cursor[tuple[Any, ...]], results: Sequence[LabResult]) -> BatchWritten:
        if not results:
            return BatchWritten(0, 0, 0, 0)
        with cur.copy(f"COPY incoming_results ({_COLS}) FROM STDIN") as copy:
            for r in results:
                copy.write_row(_row(r))
        row = cur.execute(UPSERT_RESULTS).fetchone()
        touched, changed = (list(row[0]), int(row[1])) if row else ([], 0)
        self._store_identities(cur, results)
        aggregate_rows, events = self._reevaluate(cur, touched, results) if touched else (0, 0)
        return BatchWritten(changed, len(touched), aggregate_rows, events)

    def _store_identities(self, cur: psycopg.Cursor[tuple[Any, ...]], results: Sequence[LabResult]) -> None:
        latest: dict[str, LabResult] = {}
        for r in results:
            if r.sealed_identity and (
                r.patient_pseudonym not in latest or r.received_at > latest[r.patient_pseudonym].received_at
            ):
                latest[r.patient_pseudonym] = r
        if latest:
            _bulk_insert(
                cur,
                "person_identities (patient_pseudonym, sealed_identity, received_at)",
                ("text", "text", "timestamptz"),
                [(p, r.sealed_identity, r.received_at) for p, r in sorted(latest.items())],
                "ON CONFLICT (patient_pseudonym) DO UPDATE "
                "SET sealed_identity = EXCLUDED.sealed_identity, received_at = EXCLUDED.received_at "
                "WHERE EXCLUDED.received_at > person_identities.received_at",
            )

    def _reevaluate(
        self, cur: psycopg.Cursor[tuple[Any, ...]], pseudonyms: list[str], results: Sequence[LabResult]
    ) -> tuple[int, int]:
        by_person: dict[str, list[ResultVersion]] = defaultdict(list)
        for row in cur.execute(SELECT_PERSON_RESULTS, (pseudonyms,), binary=True).fetchall():
            v = _version(row)
            by_person[v.patient_pseudonym].append(v)
        previous = {
            str(p): _decode_contributions(c)
            for p, c in cur.execute(
                "SELECT patient_pseudonym, contributions FROM persons WHERE patient_pseudonym = ANY(%s) "
                "FOR UPDATE",
                (pseudonyms,),
            ).fetchall()
        }
        stored_cases: dict[str, list[StoredCase]] = defaultdict(list)
        for row in cur.execute(
            "SELECT patient_pseudonym, case_id, onset_day, last_positive_day, status, department, region, "
            "age_class, sex, test_kind FROM cases WHERE patient_pseudonym = ANY(%s)",
            (pseudonyms,),
        ).fetchall():
            stored_cases[str(row[0])].append(
                StoredCase(
                    case_id=str(row[1]),
                    onset_day=row[2],
                    last_positive_day=row[3],
                    status=CaseStatus(row[4]),
                    department=row[5],
                    region=row[6],
                    age_class=row[7],
                    sex=Sex(row[8]),
                    test_kind=TestKind(row[9]),
                )
            )

        delta: dict[AggregateKey, list[int]] = defaultdict(lambda: [0, 0])
        person_rows: list[tuple[str, str]] = []
        case_rows: list[tuple[Any, ...]] = []
        events: list[tuple[CaseEvent, datetime]] = []
        now = datetime.now(UTC)
        for pseudonym in pseudonyms:
            evaluation = evaluate_person(by_person.get(pseudonym, ()))
            for key, counts in diff_contributions(
                previous.get(pseudonym, {}), evaluation.contributions
            ).items():
                delta[key][0] += counts.p
                delta[key][1] += counts.t
            person_rows.append((pseudonym, _encode_contributions(evaluation.contributions)))
            changes = reconcile_cases(pseudonym, stored_cases.get(pseudonym, ()), evaluation.episodes)
            onset_received = {e.onset_day: e.onset.received_at for e in evaluation.episodes}
            for case, event in zip(changes.upserts, changes.events, strict=True):
                first_received = onset_received.get(case.onset_day, now)
                case_rows.append(
                    (
                        case.case_id,
                        pseudonym,
                        case.status.value,
                        case.onset_day,
                        case.last_positive_day,
                        case.department,
                        case.region,
                        case.age_class,
                        case.sex.value,
                        case.test_kind.value,
                        first_received,
                    )
                )
                events.append((event, first_received))

        _bulk_insert(
            cur,
            "persons (patient_pseudonym, contributions)",
            ("text", "jsonb"),
            person_rows,
            "ON CONFLICT (patient_pseudonym) DO UPDATE SET contributions = EXCLUDED.contributions, "
            "updated_at = now()",
        )
        # sorted keys: concurrent workers lock shared aggregate rows in one order (no deadlock)
        aggregate_rows = [
            (k.day, k.department or "", k.age_class or "", k.sex.value, k.test_kind.value, p, t)
            for k, (p, t) in sorted(delta.items(), key=lambda kv: _sort_key(kv[0]))
            if p or t
        ]
        _bulk_insert(
            cur,
            "aggregates (day, department, age_class, sex, test_kind, p, t)",
            ("date", "text", "text", "text", "text", "int", "int"),
            aggregate_rows,
            "ON CONFLICT (day, department, age_class, sex, test_kind) DO UPDATE "
            "SET p = aggregates.p + EXCLUDED.p, t = aggregates.t + EXCLUDED.t",
        )
        outbox_rows = self._case_messages(cur, events, now)
        _bulk_insert(
            cur,
            "cases (case_id, patient_pseudonym, status, onset_day, last_positive_day, department, region, "
            "age_class, sex, test_kind, first_received_at)",
            ("text", "text", "text", "date", "date", "text", "text", "text", "text", "text", "timestamptz"),
            case_rows,
            "ON CONFLICT (case_id) DO UPDATE SET status = EXCLUDED.status, "
            "onset_day = EXCLUDED.onset_day, last_positive_day = EXCLUDED.last_positive_day, "
            "department = EXCLUDED.department, region = EXCLUDED.region, age_class = EXCLUDED.age_class, "
            "sex = EXCLUDED.sex, test_kind = EXCLUDED.test_kind, updated_at = now()",
        )
        _bulk_insert(cur, "outbox (topic, key, payload)", ("text", "text", "jsonb"), outbox_rows)
        return len(aggregate_rows), len(outbox_rows)

    def _case_messages(
        self, cur: psycopg.Cursor[tuple[Any, ...]], events: list[tuple[CaseEvent, datetime]], now: datetime
    ) -> list[tuple[str, str, str]]:
        """Outbox rows; an opened case carries the person's latest sealed identity for tracing."""
        opened = sorted({e.pseudonym for e, _ in events if e.type == "case.opened"})
        sealed = (
            dict(
                cur.execute(
                    "SELECT patient_pseudonym, sealed_identity FROM person_identities "
                    "WHERE patient_pseudonym = ANY(%s)",
                    (opened,),
                ).fetchall()
            )
            if opened
            else {}
        )
        return [
            (
                self.cases_topic,
                e.pseudonym,
                _case_message(
                    e, sealed.get(e.pseudonym) if e.type == "case.opened" else None, received, now
                ).model_dump_json(),
            )
            for e, received in events
        ]


def _bulk_insert(
    cur: psycopg.Cursor[tuple[Any, ...]],
    target: str,
    types: Sequence[str],
    rows: Sequence[Sequence[Any]],
    conflict: str = "",
) -> None:
    """One INSERT … SELECT FROM unnest(arrays) per table: one round trip whatever the row count."""
    if not rows:
        return
    arrays = ", ".join(f"%b::{t}[]" for t in types)  # binary: no text escaping of every element
    cur.execute(
        f"INSERT INTO {target} SELECT * FROM unnest({arrays}) {conflict}",
        [list(c) for c in zip(*rows, strict=True)],
    )


def _sort_key(k: AggregateKey) -> tuple[str, str, str, str, str]:
    return (k.day.isoformat(), k.department or "", k.age_class or "", k.sex.value, k.test_kind.value)


def _case_message(
    event: CaseEvent, sealed_identity: object, first_received_at: datetime, now: datetime
) -> CaseEventMessage:
    return CaseEventMessage(
        event_id=uuid.uuid4().hex,
        type=event.type,
        case_id=event.case_id,
        patient_pseudonym=event.pseudonym,
        onset_day=event.onset_day,
        last_positive_day=event.last_positive_day,
        department=event.department,
        region=event.region,
        age_class=event.age_class,
        sex=event.sex,
        test_kind=event.test_kind,
        sealed_identity=str(sealed_identity) if sealed_identity else None,
        first_received_at=first_received_at,
        occurred_at=now,
    )
