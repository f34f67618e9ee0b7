"""Test oracles: the rules production applies elsewhere (in SQL), written plainly in Python.

Production picks the version of a result that counts inside PostgreSQL (`services/worker/store.py`
UPSERT_RESULTS). The order it implements is stated once, in `services/worker/versions.py`; this is
the same order as a Python sort key, for the tests to say which version must have won — and
`tests/integration/test_result_precedence.py` checks the SQL against it over generated versions.
Nothing in `services/` may import this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from services.core.domain.model import LabResult
from services.worker.versions import STATUS_RANK, ResultVersion, version_key

_NO_TIME = datetime.min.replace(tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Precedence = tuple[int, datetime, str, timedelta]


def version_of(r: LabResult) -> ResultVersion:
    """The version the worker reads back from PostgreSQL for a stored result, built in memory."""
    return ResultVersion(
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


def precedence(v: ResultVersion) -> Precedence:
    """Sort key of a version: the greatest wins (the order of `services/worker/versions.py`)."""
    return (
        STATUS_RANK[v.status],
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


def expected_winners(stream: Iterable[LabResult]) -> dict[tuple[str, str], str]:
    """(result_id, pseudonym) -> version_key of the version that must count."""
    versions: dict[tuple[str, str], list[ResultVersion]] = {}
    for r in stream:
        versions.setdefault((r.result_id, r.patient_pseudonym), []).append(version_of(r))
    return {key: winning_version(vs).version_key for key, vs in versions.items()}
