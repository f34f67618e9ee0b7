"""Canonical results for tests and benchmarks, and the checks made on what the worker stored."""

from __future__ import annotations

import random
import secrets
import uuid
import zlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from services.core.db.engine import libpq_url
from services.core.domain.model import (
    LabResult,
    Outcome,
    PseudonymBasis,
    ResultStatus,
    Sex,
    TestKind,
    Transport,
    make_result_id,
)
from services.worker.dedup import evaluate_person
from services.worker.store import SELECT_PERSON_RESULTS, _version
from services.worker.versions import ResultVersion


def make_result(**overrides: Any) -> LabResult:
    """A valid canonical result; override what the test is about."""
    lab = overrides.pop("sending_facility", "LAB-TEST")
    specimen = overrides.pop("specimen_id", uuid.uuid4().hex[:12])
    loinc = overrides.pop("loinc", "94500-6")
    collected = overrides.pop("collected_at", datetime(2022, 1, 10, 9, 30, tzinfo=UTC))
    fields: dict[str, Any] = {
        "result_id": make_result_id(lab, specimen, loinc),
        "sending_application": "LIS",
        "sending_facility": lab,
        "message_control_id": uuid.uuid4().hex[:10],
        "transport": Transport.MLLP,
        "received_at": datetime.now(UTC),
        "patient_pseudonym": secrets.token_hex(32),
        "pseudonym_basis": PseudonymBasis.INS,
        "sex": Sex.FEMALE,
        "birth_year": 1980,
        "age_class": "49",
        "postal_code": "75011",
        "department": "75",
        "region": "11",
        "specimen_id": specimen,
        "specimen_type": "258500001",
        "collected_at": collected,
        "loinc": loinc,
        "test_kind": TestKind.RT_PCR,
        "outcome": Outcome.POSITIVE,
        "status": ResultStatus.FINAL,
        "result_at": collected + timedelta(hours=20),
    }
    fields.update(overrides)
    return LabResult(**fields)


def full_recomputation(database_url: str) -> dict[tuple[object, ...], tuple[int, int]]:
    """P/T per aggregate key recomputed from every stored result, to compare with `aggregates`."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        people = [r[0] for r in conn.execute("SELECT DISTINCT patient_pseudonym FROM results").fetchall()]
        rows = conn.execute(SELECT_PERSON_RESULTS, (people,)).fetchall()
    by_person: dict[str, list[ResultVersion]] = defaultdict(list)
    for row in rows:
        v = _version(row)
        by_person[v.patient_pseudonym].append(v)
    totals: dict[tuple[object, ...], list[int]] = defaultdict(lambda: [0, 0])
    for versions in by_person.values():
        for k, c in evaluate_person(versions).contributions.items():
            key = (k.day, k.department or "", k.age_class or "", k.sex.value, k.test_kind.value)
            totals[key][0] += c.p
            totals[key][1] += c.t
    return {k: (p, t) for k, (p, t) in totals.items() if p or t}


def stored_aggregates(database_url: str) -> dict[tuple[object, ...], tuple[int, int]]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        rows = conn.execute(
            "SELECT day, department, age_class, sex, test_kind, p, t FROM aggregates WHERE p <> 0 OR t <> 0"
        ).fetchall()
    return {tuple(r[:5]): (int(r[5]), int(r[6])) for r in rows}


def random_result_stream(n: int, persons: int, seed: int) -> list[LabResult]:
    """`n` result versions over `persons` people and 120 days: re-sends, corrections, cancellations."""
    rng = random.Random(seed)
    pseudonyms = [f"{rng.getrandbits(256):064x}" for _ in range(persons)]
    departments = ["75", "13", "2A", "971", None]
    start = datetime(2021, 11, 1, 8, tzinfo=UTC)
    stream: list[LabResult] = []
    while len(stream) < n:
        roll = rng.random()
        if stream and roll < 0.08:  # a re-send of an earlier version
            stream.append(rng.choice(stream))
            continue
        if stream and roll < 0.13:  # a correction or a cancellation of an earlier result
            base = rng.choice(stream)
            status = ResultStatus.CORRECTED if rng.random() < 0.7 else ResultStatus.CANCELLED
            outcome = Outcome.NEGATIVE if base.outcome is Outcome.POSITIVE else Outcome.POSITIVE
            stream.append(base.model_copy(update={
                "status": status, "outcome": outcome,
                "result_at": (base.result_at or base.collected_at) + timedelta(hours=rng.randrange(1, 48)),
            }))
            continue
        pseudonym = rng.choice(pseudonyms)
        collected = start + timedelta(days=rng.randrange(120), minutes=rng.randrange(600))
        antigen = rng.random() < 0.3
        stream.append(make_result(
            patient_pseudonym=pseudonym,
            sending_facility=f"LAB-{rng.randrange(40):02d}",
            collected_at=collected,
            loinc="94558-4" if antigen else "94500-6",
            test_kind=TestKind.ANTIGEN if antigen else TestKind.RT_PCR,
            outcome=Outcome.POSITIVE if rng.random() < 0.15 else Outcome.NEGATIVE,
            status=ResultStatus.PRELIMINARY if rng.random() < 0.02 else ResultStatus.FINAL,
            department=(dep := departments[zlib.crc32(pseudonym.encode()) % len(departments)]),
            region=None if dep is None else "11",
            age_class=rng.choice(["09", "29", "49", "69", "89", "90"]),
            sex=Sex.FEMALE if zlib.crc32(pseudonym.encode()) % 2 else Sex.MALE,
        ))
    return stream


