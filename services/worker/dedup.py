"""Person deduplication of Santé publique France (SPEC §5), for one person. Pure domain, no I/O.

The input is the winning version of each of the person's results (the one PostgreSQL kept, by the
order of `versions.py`). The output depends only on that set, never on the order results arrived in:

- person-days: the counting results (F/C) of one collection day; positive if any positive, else
  negative if any negative, else no person-day;
- coverage: a person-day on D is covered by a positive person-day on D-k, 1 <= k <= 60;
- contributions to the P/T aggregates: an uncovered positive counts in P and T, an uncovered negative
  in T, a covered person-day in neither;
- episodes (cases): an uncovered positive and the positives that follow each other within 60 days.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from typing import NamedTuple, TypeVar

from services.core.domain.case_event import CaseEventType
from services.core.domain.model import VIROLOGICAL_KINDS, Outcome, Sex, TestKind
from services.worker.versions import ResultVersion

WINDOW_DAYS = 60

_OUTCOME_RANK: dict[Outcome, int] = {Outcome.POSITIVE: 0, Outcome.NEGATIVE: 1}
_KIND_RANK: dict[TestKind, int] = {
    TestKind.RT_PCR: 0,
    TestKind.ANTIGEN: 1,
    TestKind.SEROLOGY: 2,
    TestKind.OTHER: 3,
}


class PersonDay(NamedTuple):
    """One person-day with a decided outcome. `deciding` is the test whose attributes it takes."""

    day: date
    outcome: Outcome
    deciding: ResultVersion
    covered: bool
    counted_p: bool
    counted_t: bool


class AggregateKey(NamedTuple):
    day: date
    department: str | None
    age_class: str | None
    sex: Sex
    test_kind: TestKind


class Counts(NamedTuple):
    p: int
    t: int


@dataclass(frozen=True, slots=True)
class Episode:
    """A case as computed from the results; `onset` is the deciding test of the onset person-day."""

    onset_day: date
    last_positive_day: date
    positive_days: tuple[date, ...]
    onset: ResultVersion


@dataclass(frozen=True, slots=True)
class PersonEvaluation:
    person_days: tuple[PersonDay, ...]
    contributions: dict[AggregateKey, Counts]
    episodes: tuple[Episode, ...]


def evaluate_person(results: Iterable[ResultVersion]) -> PersonEvaluation:
    """Person-days, P/T contributions and episodes of one person, from the winner of each result."""
    best: dict[date, tuple[tuple[int, int, datetime, str], ResultVersion]] = {}
    for r in results:
        outcome_rank = _OUTCOME_RANK.get(r.outcome)
        # P and T count virological tests only (RT-PCR, antigen), as Santé publique France's do
        if outcome_rank is None or not r.counts or r.test_kind not in VIROLOGICAL_KINDS:
            continue
        # the deciding test: the decided outcome first, then RT-PCR > antigen > serology > other
        key = (outcome_rank, _KIND_RANK[r.test_kind], r.collected_at, r.result_id)
        current = best.get(r.collection_day)
        if current is None or key < current[0]:
            best[r.collection_day] = (key, r)

    person_days: list[PersonDay] = []
    contributions: dict[AggregateKey, Counts] = {}
    runs: list[list[PersonDay]] = []
    last_positive: date | None = None
    for day in sorted(best):
        r = best[day][1]
        positive = r.outcome is Outcome.POSITIVE
        covered = last_positive is not None and (day - last_positive).days <= WINDOW_DAYS
        pd = PersonDay(day, r.outcome, r, covered, positive and not covered, not covered)
        person_days.append(pd)
        if not covered:
            # one person-day per day and the key holds the day: no two person-days share a key
            contributions[AggregateKey(day, r.department, r.age_class, r.sex, r.test_kind)] = Counts(
                int(positive), 1
            )
        if positive:
            if covered:
                runs[-1].append(pd)
            else:
                runs.append([pd])
            last_positive = day
    episodes = tuple(
        Episode(run[0].day, run[-1].day, tuple(p.day for p in run), run[0].deciding) for run in runs
    )
    return PersonEvaluation(tuple(person_days), contributions, episodes)


K = TypeVar("K", bound=Hashable)


def diff_contributions(old: Mapping[K, Counts], new: Mapping[K, Counts]) -> dict[K, Counts]:
    """What to add to the aggregates to replace a person's `old` contributions by `new`; no zeros.

    Whatever the form of the key: an `AggregateKey`, or the stored form the worker compares in."""
    delta: dict[K, Counts] = {}
    for key, n in new.items():
        o = old.get(key)
        dp, dt = (n.p, n.t) if o is None else (n.p - o.p, n.t - o.t)
        if dp or dt:
            delta[key] = Counts(dp, dt)
    for key, o in old.items():
        if key not in new and (o.p or o.t):
            delta[key] = Counts(-o.p, -o.t)
    return delta


class CaseStatus(StrEnum):
    OPEN = "open"
    RETRACTED = "retracted"


@dataclass(frozen=True, slots=True)
class StoredCase:
    case_id: str
    onset_day: date
    last_positive_day: date
    status: CaseStatus
    department: str | None
    region: str | None
    age_class: str | None
    sex: Sex
    test_kind: TestKind


@dataclass(frozen=True, slots=True)
class CaseEvent:
    type: CaseEventType
    case_id: str
    pseudonym: str
    onset_day: date
    last_positive_day: date
    department: str | None
    region: str | None
    age_class: str | None
    sex: Sex
    test_kind: TestKind


@dataclass(frozen=True, slots=True)
class CaseChanges:
    """The cases to upsert and one event per upserted case, in the same order."""

    upserts: tuple[StoredCase, ...]
    events: tuple[CaseEvent, ...]


def case_id(pseudonym: str, onset_day: date, salt: int = 0) -> str:
    material = f"{pseudonym}\x1f{onset_day.isoformat()}" + (f"\x1f{salt}" if salt else "")
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def reconcile_cases(
    pseudonym: str, existing: Sequence[StoredCase], episodes: Sequence[Episode]
) -> CaseChanges:
    """Match the person's episodes to the cases already stored; the changes to store and publish.

    A stored case (open or retracted) matches an episode when their [onset, last positive] ranges
    overlap. Episodes are taken in onset order, and each takes the free overlapping case that is open
    first, then of earliest onset: a case stays with the episode that holds its onset, and of two cases
    bridged by a late positive the earliest is kept. A retracted case is reopened only for an episode
    that no open case fits. An episode left without a case takes the free case whose id is its own
    deterministic id (a case first opened with the same onset day), else it is a new case, handed to
    tracing: e.g. the later part of a case split by a cancelled middle positive, which is a new case
    in P too. Stored open cases left unmatched are retracted.
    """
    eps = sorted(episodes, key=lambda e: e.onset_day)
    taken: set[str] = set()
    matched: list[StoredCase | None] = []
    for e in eps:
        choice: StoredCase | None = None
        choice_key: tuple[bool, date, str] | None = None
        for c in existing:
            if (
                c.onset_day <= e.last_positive_day
                and e.onset_day <= c.last_positive_day
                and c.case_id not in taken
            ):
                key = (c.status is CaseStatus.RETRACTED, c.onset_day, c.case_id)
                if choice_key is None or key < choice_key:
                    choice, choice_key = c, key
        if choice is not None:
            taken.add(choice.case_id)
        matched.append(choice)

    by_id = {c.case_id: c for c in existing}
    upserts: list[StoredCase] = []
    events: list[CaseEvent] = []
    for e, stored in zip(eps, matched, strict=True):
        if stored is None:
            cid = case_id(pseudonym, e.onset_day)
            salt = 0
            while cid in taken:
                salt += 1
                cid = case_id(pseudonym, e.onset_day, salt)
            stored = by_id.get(cid)
            taken.add(cid)
        else:
            cid = stored.case_id
        o = e.onset
        case = StoredCase(
            case_id=cid,
            onset_day=e.onset_day,
            last_positive_day=e.last_positive_day,
            status=CaseStatus.OPEN,
            department=o.department,
            region=o.region,
            age_class=o.age_class,
            sex=o.sex,
            test_kind=o.test_kind,
        )
        if case != stored:
            upserts.append(case)
            events.append(_event("case.opened" if stored is None else "case.updated", pseudonym, case))

    dropped = [c for c in existing if c.case_id not in taken and c.status is CaseStatus.OPEN]
    for c in sorted(dropped, key=lambda c: (c.onset_day, c.case_id)):
        upserts.append(replace(c, status=CaseStatus.RETRACTED))
        events.append(_event("case.retracted", pseudonym, c))
    return CaseChanges(tuple(upserts), tuple(events))


def _event(kind: CaseEventType, pseudonym: str, c: StoredCase) -> CaseEvent:
    return CaseEvent(
        type=kind,
        case_id=c.case_id,
        pseudonym=pseudonym,
        onset_day=c.onset_day,
        last_positive_day=c.last_positive_day,
        department=c.department,
        region=c.region,
        age_class=c.age_class,
        sex=c.sex,
        test_kind=c.test_kind,
    )
