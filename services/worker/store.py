"""PostgreSQL adapter of the worker: one transaction per batch, offsets included (SPEC §2, §5).

Hot path in plain psycopg: COPY into a temporary table, then one INSERT … SELECT … ON CONFLICT that
keeps the version that counts and returns the rows it stored. Then every person the batch touched is
re-evaluated from all their stored results: the difference between their new and previous P/T
contributions is applied to the aggregates (so the aggregates always equal a full recomputation),
their cases are reconciled and the case events go to the outbox — all in the same transaction as the
consumer offsets.

Work per batch, not per result: every table is written by one statement, each aggregate key once
(the batch's differences summed in memory). A person's stored results are read back only for the
persons already known: the worker writes a `persons` row for every person whose results it stores, in
the same transaction, so a person without one has no stored result (and no case) but those this batch
just stored, which the upsert returned. A known person's row is rewritten only when their
contributions changed. Contributions are compared in their stored JSON form (day, department, age
class, sex, kind), never decoded into domain objects.

Memory: the known persons' stored results are read and re-evaluated `persons_per_read` persons at a
time (1,000), each person's dropped once evaluated. A batch of 5,000 results whose persons have ~50 stored
results each would otherwise hold ~250,000 of them at once (≈ 140 MB, twice with two consumers): what a
worker holds then follows the histories of 1,000 persons, whatever the batch size and however often its
persons were tested (a worker catching up after an outage takes full batches of people tested weekly).

The connection is re-opened (and its temporary table re-created) after any connection error
(`services.worker.fenced_store`): the caller retries the batch, which was rolled back with the lost
session.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
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
# COPY in binary: no text formatting of every value (a quarter of the text COPY's CPU on both sides).
# The binary form of each column's Python type (the integers of `results` are smallint; text and
# varchar are sent alike).
_BINARY_TYPES: dict[type, str] = {int: "int2", str: "text", date: "date", datetime: "timestamptz"}
_COPY_TYPES = tuple(
    _BINARY_TYPES[Result.__table__.columns[c].type.python_type] for c in (*_COMPUTED, *_COPIED)
)
_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in RESULT_COLUMNS if c not in _KEY)


def _attribute(column: str) -> str:
    field = LabResult.model_fields.get(column)  # None: a property (collection_day)
    return f"{column}.value" if field is not None and isinstance(field.annotation, EnumType) else column


_copied_values = attrgetter(*map(_attribute, _COPIED))  # one C call per row: the hot path

# What the worker decides on of a stored result (`_version`), as the upsert returns it and as it is
# read back: the winner of each result of a person.
VERSION_COLUMNS = (
    "result_id, patient_pseudonym, version_key, status, result_at, received_at, outcome, test_kind, "
    "collected_at, collection_day, department, region, age_class, sex, sending_facility"
)

# The upsert. Returns the rows it stored (inserted or replaced), in the columns of `VERSION_COLUMNS`,
# and keeps in `stored_receptions` the lab, reception day (UTC), collection → reception delay in whole
# hours and positivity of each result it newly stored, which `COUNT_RECEPTIONS` adds to the lab
# statistics at the end of the transaction.
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
RETURNING {VERSION_COLUMNS}, (xmax = 0) AS inserted
), kept AS (
INSERT INTO stored_receptions (lab, day, delay_hours, positive)
SELECT sending_facility, (received_at AT TIME ZONE 'UTC')::date,
       greatest(floor(extract(epoch FROM received_at - collected_at) / 3600), 0)::int,
       outcome = 'positive'
FROM upserted WHERE inserted
)
SELECT {VERSION_COLUMNS} FROM upserted
"""

# Per lab and reception day: the results newly stored, positives and the delay histogram. Rows shared
# by every worker (like `aggregates`): written last, in key order, so their locks are held only
# until the commit that follows, and two workers always take them in the same order.
COUNT_RECEPTIONS = """
WITH daily AS (
INSERT INTO lab_daily (lab, day, results, positives)
SELECT lab, day, count(*), count(*) FILTER (WHERE positive)
FROM stored_receptions GROUP BY lab, day ORDER BY lab, day
ON CONFLICT (lab, day) DO UPDATE
SET results = lab_daily.results + EXCLUDED.results, positives = lab_daily.positives + EXCLUDED.positives
)
INSERT INTO lab_delays (lab, day, delay_hours, n)
SELECT lab, day, delay_hours, count(*)
FROM stored_receptions GROUP BY lab, day, delay_hours ORDER BY lab, day, delay_hours
ON CONFLICT (lab, day, delay_hours) DO UPDATE SET n = lab_delays.n + EXCLUDED.n
"""

SELECT_PERSON_RESULTS = f"SELECT {VERSION_COLUMNS} FROM results WHERE patient_pseudonym = ANY(%b)"


PERSONS_PER_READ = 1000
"""Known persons whose stored results are read and re-evaluated at a time (see the module docstring)."""


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
    """A row of `VERSION_COLUMNS` (fetched in binary: text as str, times as datetimes)."""
    rid, pseudonym, vkey, status, result_at, received_at, outcome, kind, collected_at, *place, sex, lab = row
    return ResultVersion._make(
        (rid, pseudonym, vkey, _STATUSES[status], result_at, received_at, _OUTCOMES[outcome], _KINDS[kind],
         collected_at, *place, _SEXES[sex], lab)
    )


# plain dict look-ups: calling an Enum class per row is several times slower
_STATUSES = {s.value: s for s in ResultStatus}
_OUTCOMES = {o.value: o for o in Outcome}
_KINDS = {k.value: k for k in TestKind}
_SEXES = {s.value: s for s in Sex}
_CASE_STATUSES = {s.value: s for s in CaseStatus}


# A contribution as stored in `persons.contributions`: [day (ISO), department, age class, sex, kind, p, t].
# Its first five values are the aggregate key in this stored form (`StoredKey`).
StoredKey = tuple[str, str | None, str | None, str, str]


def _stored_contributions(contributions: dict[AggregateKey, Counts]) -> list[list[Any]]:
    """The stored form of a person's contributions, by day (one person-day, so one key, per day)."""
    return [
        [k.day.isoformat(), k.department, k.age_class, k.sex.value, k.test_kind.value, c.p, c.t]
        for k, c in sorted(contributions.items(), key=lambda kv: kv[0].day)
    ]


def _by_stored_key(stored: list[list[Any]]) -> dict[StoredKey, Counts]:
    return {(d, dep, age, sex, kind): Counts(p, t) for d, dep, age, sex, kind, p, t in stored}


@dataclass(slots=True)
class _Reevaluated:
    """What re-evaluating a batch's persons writes, gathered person by person."""

    now: datetime
    delta: dict[StoredKey, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    """The aggregates' differences, summed: each key is written once."""
    person_rows: list[tuple[str, str]] = field(default_factory=list)
    case_rows: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[CaseEvent, datetime]] = field(default_factory=list)

    def add(
        self,
        pseudonym: str,
        versions: list[ResultVersion],
        before: list[list[Any]] | None,
        stored_cases: dict[str, list[StoredCase]],
    ) -> None:
        """One person from all their stored `versions` and their `before` contributions (None: unknown)."""
        evaluation = evaluate_person(versions)
        contributions = _stored_contributions(evaluation.contributions)
        if contributions != before:
            for key, counts in diff_contributions(
                _by_stored_key(before or []), _by_stored_key(contributions)
            ).items():
                d = self.delta[key]
                d[0] += counts.p
                d[1] += counts.t
            self.person_rows.append((pseudonym, json.dumps(contributions)))
        changes = reconcile_cases(pseudonym, stored_cases.get(pseudonym, ()), evaluation.episodes)
        if not changes.upserts:
            return
        onset_received = {e.onset_day: e.onset.received_at for e in evaluation.episodes}
        for case, event in zip(changes.upserts, changes.events, strict=True):
            first_received = onset_received.get(case.onset_day, self.now)
            self.case_rows.append(
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
            self.events.append((event, first_received))


class ResultStore(FencedStore):
    def __init__(
        self,
        dsn: str,
        group_id: str,
        topic: str,
        cases_topic: str,
        *,
        persons_per_read: int = PERSONS_PER_READ,
    ) -> None:
        super().__init__(dsn, group_id, topic)
        self.cases_topic = cases_topic
        self.persons_per_read = persons_per_read

    def prepare(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        with conn.transaction():
            # UTC, named so: psycopg then loads timestamptz with datetime's own UTC, twice as fast as
            # through a ZoneInfo (the statements name their time zone wherever a day is taken)
            conn.execute("SET TIME ZONE 'UTC'")
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming_results "
                "(LIKE results INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS stored_receptions "
                "(lab text, day date, delay_hours int, positive boolean) ON COMMIT DELETE ROWS"
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
        with cur.copy(f"COPY incoming_results ({_COLS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_COPY_TYPES)
            for r in results:
                copy.write_row(_row(r))
        stored = cur.execute(UPSERT_RESULTS, binary=True).fetchall()
        self._store_identities(cur, results)
        if not stored:
            return BatchWritten(0, 0, 0, 0)
        persons, aggregate_rows, events = self._reevaluate(cur, stored)
        # last: rows every worker writes (see COUNT_RECEPTIONS)
        _bulk_insert(
            cur,
            "aggregates (day, department, age_class, sex, test_kind, p, t)",
            ("date", "text", "text", "text", "text", "int", "int"),
            aggregate_rows,
            "ON CONFLICT (day, department, age_class, sex, test_kind) DO UPDATE "
            "SET p = aggregates.p + EXCLUDED.p, t = aggregates.t + EXCLUDED.t",
        )
        cur.execute(COUNT_RECEPTIONS)
        return BatchWritten(len(stored), persons, len(aggregate_rows), events)

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
        self, cur: psycopg.Cursor[tuple[Any, ...]], stored: list[tuple[Any, ...]]
    ) -> tuple[int, list[tuple[Any, ...]], int]:
        """Re-evaluate the persons of the `stored` rows and write them, their cases and case events;
        (persons, the aggregate rows to add in key order, case events)."""
        by_person: dict[str, list[ResultVersion]] = defaultdict(list)
        for row in stored:
            v = _version(row)
            by_person[v.patient_pseudonym].append(v)
        pseudonyms = sorted(by_person)
        # locks the known persons' rows: their re-evaluations are serialized
        previous: dict[str, list[list[Any]]] = dict(
            cur.execute(
                "SELECT patient_pseudonym, contributions FROM persons WHERE patient_pseudonym = ANY(%b) "
                "FOR UPDATE",
                (pseudonyms,),
            ).fetchall()
        )
        stored_cases = _stored_cases(cur, sorted(previous))
        written = _Reevaluated(now=datetime.now(UTC))
        for start in range(0, len(pseudonyms), self.persons_per_read):
            chunk = pseudonyms[start : start + self.persons_per_read]
            known = [p for p in chunk if p in previous]
            for p in known:  # this batch's rows come back with the ones stored before
                by_person[p] = []
            if known:
                for row in cur.execute(SELECT_PERSON_RESULTS, (known,), binary=True):
                    v = _version(row)
                    by_person[v.patient_pseudonym].append(v)
            for pseudonym in chunk:
                written.add(pseudonym, by_person.pop(pseudonym), previous.get(pseudonym), stored_cases)

        _bulk_insert(
            cur,
            "persons (patient_pseudonym, contributions)",
            ("text", "jsonb"),
            written.person_rows,
            "ON CONFLICT (patient_pseudonym) DO UPDATE SET contributions = EXCLUDED.contributions, "
            "updated_at = now()",
        )
        # sorted keys: concurrent workers lock shared aggregate rows in one order (no deadlock)
        aggregate_rows = [
            (day, department or "", age_class or "", sex, kind, p, t)
            for (day, department, age_class, sex, kind), (p, t) in written.delta.items()
            if p or t
        ]
        aggregate_rows.sort()
        outbox_rows = self._case_messages(cur, written.events, written.now)
        _bulk_insert(
            cur,
            "cases (case_id, patient_pseudonym, status, onset_day, last_positive_day, department, region, "
            "age_class, sex, test_kind, first_received_at)",
            ("text", "text", "text", "date", "date", "text", "text", "text", "text", "text", "timestamptz"),
            written.case_rows,
            "ON CONFLICT (case_id) DO UPDATE SET status = EXCLUDED.status, "
            "onset_day = EXCLUDED.onset_day, last_positive_day = EXCLUDED.last_positive_day, "
            "department = EXCLUDED.department, region = EXCLUDED.region, age_class = EXCLUDED.age_class, "
            "sex = EXCLUDED.sex, test_kind = EXCLUDED.test_kind, updated_at = now()",
        )
        _bulk_insert(cur, "outbox (topic, key, payload)", ("text", "text", "jsonb"), outbox_rows)
        return len(pseudonyms), aggregate_rows, len(outbox_rows)

    def _case_messages(
        self, cur: psycopg.Cursor[tuple[Any, ...]], events: list[tuple[CaseEvent, datetime]], now: datetime
    ) -> list[tuple[str, str, str]]:
        """Outbox rows; an opened case carries the person's latest sealed identity for tracing."""
        opened = sorted({e.pseudonym for e, _ in events if e.type == "case.opened"})
        sealed = (
            dict(
                cur.execute(
                    "SELECT patient_pseudonym, sealed_identity FROM person_identities "
                    "WHERE patient_pseudonym = ANY(%b)",
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


def _stored_cases(cur: psycopg.Cursor[tuple[Any, ...]], known: list[str]) -> dict[str, list[StoredCase]]:
    """The stored cases of the `known` persons."""
    stored_cases: dict[str, list[StoredCase]] = defaultdict(list)
    if not known:
        return stored_cases
    for row in cur.execute(
        "SELECT patient_pseudonym, case_id, onset_day, last_positive_day, status, department, "
        "region, age_class, sex, test_kind FROM cases WHERE patient_pseudonym = ANY(%b)",
        (known,),
        binary=True,
    ):
        stored_cases[row[0]].append(
            StoredCase(
                case_id=row[1],
                onset_day=row[2],
                last_positive_day=row[3],
                status=_CASE_STATUSES[row[4]],
                department=row[5],
                region=row[6],
                age_class=row[7],
                sex=_SEXES[row[8]],
                test_kind=_KINDS[row[9]],
            )
        )
    return stored_cases


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
