"""PostgreSQL adapter of the worker: one transaction per batch, offsets included (SPEC §2).

Hot path in plain psycopg: COPY into a temporary table, then one INSERT … SELECT … ON CONFLICT.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg

from services.core.domain.model import LabResult, ResultStatus

RESULT_COLUMNS = (
    "result_id", "precedence", "version_key", "status", "outcome", "test_kind", "loinc",
    "patient_pseudonym", "pseudonym_basis", "sex", "birth_year", "age_class", "postal_code",
    "department", "region", "sending_application", "sending_facility", "lab_finess", "performing_lab",
    "message_control_id", "transport", "specimen_id", "specimen_type", "collected_at", "collection_day",
    "observed_at", "result_at", "received_at",
)
_COLS = ", ".join(RESULT_COLUMNS)
_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in RESULT_COLUMNS if c != "result_id")

# Which version of a result counts (SPEC §5): a cancellation beats everything, then the latest
# correction by result time, then the final result; a preliminary never counts.
PRECEDENCE = {
    ResultStatus.PRELIMINARY: 0,
    ResultStatus.FINAL: 1,
    ResultStatus.CORRECTED: 2,
    ResultStatus.CANCELLED: 3,
    ResultStatus.DELETED: 3,
    ResultStatus.WRONG_PATIENT: 3,
}

UPSERT_RESULTS = f"""
INSERT INTO results ({_COLS})
SELECT DISTINCT ON (result_id) {_COLS} FROM incoming_results
ORDER BY result_id, precedence DESC, result_at DESC NULLS LAST, version_key DESC
ON CONFLICT (result_id) DO UPDATE SET {_UPDATES}, stored_at = now()
WHERE (EXCLUDED.precedence, COALESCE(EXCLUDED.result_at, '-infinity'), EXCLUDED.version_key)
    > (results.precedence, COALESCE(results.result_at, '-infinity'), results.version_key)
RETURNING result_id
"""


class Fenced(Exception):
    """Another worker committed this partition past where this one started: discard the batch."""


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    partition: int
    start_offset: int  # where this worker believes the stored offset is
    next_offset: int  # after this batch


def version_key(r: LabResult) -> str:
    material = "|".join((
        r.status.value, r.result_at.isoformat() if r.result_at else "", r.outcome.value,
        r.collected_at.isoformat(), r.test_kind.value, r.loinc, r.patient_pseudonym,
    ))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _row(r: LabResult) -> tuple[object, ...]:
    return (
        r.result_id, PRECEDENCE[r.status], version_key(r), r.status.value, r.outcome.value,
        r.test_kind.value, r.loinc, r.patient_pseudonym, r.pseudonym_basis.value, r.sex.value,
        r.birth_year, r.age_class, r.postal_code, r.department, r.region, r.sending_application,
        r.sending_facility, r.lab_finess, r.performing_lab, r.message_control_id, r.transport.value,
        r.specimen_id, r.specimen_type, r.collected_at, r.collection_day, r.observed_at, r.result_at,
        r.received_at,
    )


class ResultStore:
    def __init__(self, dsn: str, group_id: str, topic: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=False)
        self.group_id = group_id
        self.topic = topic
        with self.conn.transaction():
            self.conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming_results "
                "(LIKE results INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )

    def close(self) -> None:
        self.conn.close()

    def stored_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        with self.conn.transaction():
            rows = self.conn.execute(
                "SELECT partition, next_offset FROM consumer_offsets "
                "WHERE group_id = %s AND topic = %s AND partition = ANY(%s)",
                (self.group_id, self.topic, list(partitions)),
            ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def write_batch(self, results: Sequence[LabResult], progress: Sequence[PartitionProgress]) -> int:
        """Write results and move the offsets, atomically. Returns the number of rows that changed."""
        with self.conn.transaction():
            self._advance_offsets(progress)
            if not results:
                return 0
            with self.conn.cursor() as cur:
                with cur.copy(f"COPY incoming_results ({_COLS}) FROM STDIN") as copy:
                    for r in results:
                        copy.write_row(_row(r))
                cur.execute(UPSERT_RESULTS)
                return cur.rowcount

    def _advance_offsets(self, progress: Sequence[PartitionProgress]) -> None:
        with self.conn.cursor() as cur:
            for p in progress:
                cur.execute(
                    "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) "
                    "VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (group_id, topic, partition) DO UPDATE "
                    "SET next_offset = EXCLUDED.next_offset, updated_at = now() "
                    "WHERE consumer_offsets.next_offset = %s "
                    "RETURNING partition",
                    (self.group_id, self.topic, p.partition, p.next_offset, p.start_offset),
                )
                if cur.fetchone() is None:
                    raise Fenced(f"partition {p.partition} moved past offset {p.start_offset}")

