"""Which version of one result counts (SPEC §5): decided by status and result time, never by arrival.

Pure domain, no I/O. A result is identified by its `result_id` (with the person's pseudonym); of all
versions received of it (F, C, P, X/D/W, re-sends) the greatest by this order wins:

1. the status rank `STATUS_RANK`: cancellation (X/D/W) > correction (C) > final (F) > preliminary (P);
2. within a status, the latest result time (OBR-22; a missing one loses);
3. then the version key (content, not arrival);
4. only re-sends of identical content are left: the earliest received wins, so the winner's
   `received_at` is when the lab first reported it.

Production decides in PostgreSQL, in one statement per batch (`services/worker/store.py`
UPSERT_RESULTS: its ORDER BY picks the winner inside a batch, its ON CONFLICT … WHERE against the
stored row), on the `precedence` column the worker fills from `STATUS_RANK`. The same order written
in Python is the test oracle (`tests/oracles.py` `winning_version`); the two are compared over
generated versions on the real database (`tests/integration/test_result_precedence.py`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from typing import NamedTuple

from services.core.domain.model import LabResult, Outcome, ResultStatus, Sex, TestKind

STATUS_RANK: dict[ResultStatus, int] = {
    ResultStatus.PRELIMINARY: 0,
    ResultStatus.FINAL: 1,
    ResultStatus.CORRECTED: 2,
    ResultStatus.CANCELLED: 3,
    ResultStatus.DELETED: 3,
    ResultStatus.WRONG_PATIENT: 3,
}
_COUNTING = frozenset((ResultStatus.FINAL, ResultStatus.CORRECTED))


class ResultVersion(NamedTuple):
    """One received version of one result, reduced to what the worker decides on.

    A named tuple: the worker builds one per stored result of every person it re-evaluates, and a
    tuple is built several times faster than a frozen dataclass."""

    result_id: str
    patient_pseudonym: str
    version_key: str
    status: ResultStatus
    result_at: datetime | None
    received_at: datetime
    outcome: Outcome
    test_kind: TestKind
    collected_at: datetime
    collection_day: date
    department: str | None
    region: str | None
    age_class: str | None
    sex: Sex
    lab: str

    @property
    def counts(self) -> bool:
        """Whether this version, as the winner, decides an outcome (F or C)."""
        return self.status in _COUNTING


def version_key(r: LabResult) -> str:
    """Identifies one version by everything the worker decides on, so a re-send gets the same key.

    Covers more than status + result time + outcome: two versions that differ only in, say, the
    department must get different keys, or the tie-break between them would fall back to arrival.
    `received_at` and transport details are left out on purpose: they differ between re-sends.
    """
    parts = (
        r.result_id,
        r.patient_pseudonym,
        r.status,
        r.result_at.astimezone(UTC).isoformat() if r.result_at is not None else "",
        r.outcome,
        r.test_kind,
        r.collected_at.astimezone(UTC).isoformat(),
        r.department or "",
        r.region or "",
        r.age_class or "",
        r.sex,
        r.sending_facility,
    )
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=16).hexdigest()
