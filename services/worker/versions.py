"""Which version of one result counts (SPEC §5): decided by status and result time, never by arrival.

Pure domain, no I/O. A result is identified by its `result_id`; all versions received of it (F, C, P,
X/D/W, re-sends) are reduced to one winner by `winning_version`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from services.core.domain.model import LabResult, Outcome, ResultStatus, Sex, TestKind

_RANK: dict[ResultStatus, int] = {
    ResultStatus.PRELIMINARY: 0,
    ResultStatus.FINAL: 1,
    ResultStatus.CORRECTED: 2,
    ResultStatus.CANCELLED: 3,
    ResultStatus.DELETED: 3,
    ResultStatus.WRONG_PATIENT: 3,
}
_COUNTING = frozenset((ResultStatus.FINAL, ResultStatus.CORRECTED))
_NO_TIME = datetime.min.replace(tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Precedence = tuple[int, datetime, str, timedelta]


@dataclass(frozen=True, slots=True)
class ResultVersion:
    """One received version of one result, reduced to what the worker decides on."""

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

    @classmethod
    def from_lab_result(cls, r: LabResult) -> ResultVersion:
        return cls(
            result_id=r.result_id,
            patient_pseudonym=r.patient_pseudonym,
            version_key=version_key(r),
            status=r.status,
            result_at=r.result_at,
            received_at=r.received_at,
            outcome=r.outcome,
            test_kind=r.test_kind,
            collected_at=r.collected_at,
            collection_day=r.collection_day,
            department=r.department,
            region=r.region,
            age_class=r.age_class,
            sex=r.sex,
            lab=r.sending_facility,
        )


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


def precedence(v: ResultVersion) -> Precedence:
    """Sort key of a version: the greatest wins.

    Cancellation (X/D/W) > correction (C) > final (F) > preliminary (P); within a status the latest
    result time (OBR-22; a missing one loses), then the version key (content, not arrival). Only
    re-sends of identical content are left, and the earliest received of those wins, so the winner's
    `received_at` is when the lab first reported it.
    """
    return (
        _RANK[v.status],
        v.result_at if v.result_at is not None else _NO_TIME,
        v.version_key,
        _EPOCH - v.received_at,
    )


def winning_version(versions: Iterable[ResultVersion]) -> ResultVersion:
    """The version of one result that counts, whatever the order the versions arrived in.

    All versions must share `result_id` and `patient_pseudonym`: a W (wrong patient) under one person
    must not cancel the re-send of the same specimen under the right person.
    """
    it = iter(versions)
    try:
        best = next(it)
    except StopIteration:
        raise ValueError("no version to choose from") from None
    best_key = precedence(best)
    for v in it:
        if v.result_id != best.result_id or v.patient_pseudonym != best.patient_pseudonym:
            raise ValueError("versions of different results or persons")
        key = precedence(v)
        if key > best_key:
            best, best_key = v, key
    return best
