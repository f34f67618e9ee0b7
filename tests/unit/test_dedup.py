"""Person deduplication (SPEC §5): person-days, P/T contributions and cases, as the users see them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.domain import model
from services.core.domain.model import LabResult, Outcome, PseudonymBasis, ResultStatus, Sex, Transport
from services.worker.dedup import (
    WINDOW_DAYS,
    AggregateKey,
    CaseEvent,
    CaseStatus,
    Counts,
    Episode,
    PersonEvaluation,
    StoredCase,
    case_id,
    diff_contributions,
    evaluate_person,
    reconcile_cases,
)
from services.worker.versions import ResultVersion
from tests.oracles import version_of, winning_version

F, C, P = ResultStatus.FINAL, ResultStatus.CORRECTED, ResultStatus.PRELIMINARY
X, W = ResultStatus.CANCELLED, ResultStatus.WRONG_PATIENT
POS, NEG, INC = Outcome.POSITIVE, Outcome.NEGATIVE, Outcome.INCONCLUSIVE
PCR, AG, SERO = model.TestKind.RT_PCR, model.TestKind.ANTIGEN, model.TestKind.SEROLOGY
BASE = date(2021, 1, 4)
PSEUDONYM = "p" * 64
OPENED, UPDATED, RETRACTED = "case.opened", "case.updated", "case.retracted"


def day(n: int) -> date:
    return BASE + timedelta(days=n)


def res(
    rid: str,
    d: int,
    outcome: Outcome = POS,
    kind: model.TestKind = PCR,
    status: ResultStatus = F,
    result_h: int | None = 12,
    collected_h: int = 8,
    department: str | None = "75",
    received_h: int = 20,
) -> ResultVersion:
    """One version of result `rid`, collected on day `d` (08:00 UTC is the same day in Paris)."""
    collected_at = datetime.combine(day(d), time(collected_h), tzinfo=UTC)
    return version_of(
        LabResult(
            result_id=f"result-{rid}",
            sending_application="LIS",
            sending_facility="LAB1",
            message_control_id=f"{rid}-{received_h}",
            transport=Transport.MLLP,
            received_at=collected_at + timedelta(hours=received_h),
            patient_pseudonym=PSEUDONYM,
            pseudonym_basis=PseudonymBasis.INS,
            sex=Sex.FEMALE,
            age_class="39",
            department=department,
            region={"75": "11", "13": "93"}.get(department or ""),
            collected_at=collected_at,
            loinc="94500-6",
            test_kind=kind,
            outcome=outcome,
            status=status,
            result_at=None if result_h is None else collected_at + timedelta(hours=result_h),
        )
    )


def winners(versions: Sequence[ResultVersion]) -> list[ResultVersion]:
    by_result: dict[str, list[ResultVersion]] = defaultdict(list)
    for v in versions:
        by_result[v.result_id].append(v)
    return [winning_version(vs) for vs in by_result.values()]


def evaluate(versions: Sequence[ResultVersion]) -> PersonEvaluation:
    return evaluate_person(winners(versions))


def offset(d: date) -> int:
    return (d - BASE).days


def person_days(ev: PersonEvaluation) -> list[tuple[int, Outcome, model.TestKind, bool, bool, bool]]:
    return [
        (offset(pd.day), pd.outcome, pd.deciding.test_kind, pd.covered, pd.counted_p, pd.counted_t)
        for pd in ev.person_days
    ]


def contributions(c: dict[AggregateKey, Counts]) -> dict[tuple[int, model.TestKind], tuple[int, int]]:
    return {(offset(k.day), k.test_kind): (v.p, v.t) for k, v in c.items()}


def episodes(ev: PersonEvaluation) -> list[tuple[int, ...]]:
    return [tuple(offset(d) for d in e.positive_days) for e in ev.episodes]


@dataclass
class Worker:
    """What the results worker does for one person, in memory, batch after batch."""

    versions: list[ResultVersion] = field(default_factory=list)
    contributions: dict[AggregateKey, Counts] = field(default_factory=dict)
    aggregates: dict[AggregateKey, Counts] = field(default_factory=dict)
    cases: dict[str, StoredCase] = field(default_factory=dict)
    events: list[CaseEvent] = field(default_factory=list)
    evaluation: PersonEvaluation = field(default_factory=lambda: evaluate_person([]))

    def arrive(self, batch: Sequence[ResultVersion]) -> tuple[dict[AggregateKey, Counts], list[CaseEvent]]:
        self.versions.extend(batch)
        self.evaluation = evaluate(self.versions)
        delta = diff_contributions(self.contributions, self.evaluation.contributions)
        self.contributions = self.evaluation.contributions
        for key, d in delta.items():
            old = self.aggregates.pop(key, Counts(0, 0))
            new = Counts(old.p + d.p, old.t + d.t)
            if new != Counts(0, 0):
                self.aggregates[key] = new
        changes = reconcile_cases(PSEUDONYM, list(self.cases.values()), self.evaluation.episodes)
        assert [c.case_id for c in changes.upserts] == [e.case_id for e in changes.events]
        self.cases.update((c.case_id, c) for c in changes.upserts)
        self.events.extend(changes.events)
        return delta, list(changes.events)


def events(evs: Sequence[CaseEvent]) -> list[tuple[str, str, int, int]]:
    return [(e.type, e.case_id, offset(e.onset_day), offset(e.last_positive_day)) for e in evs]


def cid(n: int) -> str:
    """The id of a case first opened with its onset on day n."""
    return case_id(PSEUDONYM, day(n))


# --- person-days and P/T ------------------------------------------------------------------------

PDay = tuple[int, Outcome, model.TestKind, bool, bool, bool]
# name, all versions received, person-days (day, outcome, kind, covered, in P, in T), P/T, episodes
SCENARIOS: list[
    tuple[
        str,
        list[ResultVersion],
        list[PDay],
        dict[tuple[int, model.TestKind], tuple[int, int]],
        list[tuple[int, ...]],
    ]
] = [
    (
        "reinfection on day 61 is a new case",
        [res("a", 0), res("b", 61)],
        [(0, POS, PCR, False, True, True), (61, POS, PCR, False, True, True)],
        {(0, PCR): (1, 1), (61, PCR): (1, 1)},
        [(0,), (61,)],
    ),
    (
        "a positive on day 60 is covered",
        [res("a", 0), res("b", 60)],
        [(0, POS, PCR, False, True, True), (60, POS, PCR, True, False, False)],
        {(0, PCR): (1, 1)},
        [(0, 60)],
    ),
    (
        "chained positives on days 0/45/90: one case, only day 0 counted",
        [res("a", 0), res("b", 45), res("c", 90)],
        [
            (0, POS, PCR, False, True, True),
            (45, POS, PCR, True, False, False),
            (90, POS, PCR, True, False, False),
        ],
        {(0, PCR): (1, 1)},
        [(0, 45, 90)],
    ),
    (
        "a negative inside the window is not counted in T",
        [res("a", 0), res("b", 30, NEG), res("c", 60, NEG)],
        [
            (0, POS, PCR, False, True, True),
            (30, NEG, PCR, True, False, False),
            (60, NEG, PCR, True, False, False),
        ],
        {(0, PCR): (1, 1)},
        [(0,)],
    ),
    (
        "a negative after the window counts in T",
        [res("a", 0), res("b", 61, NEG)],
        [(0, POS, PCR, False, True, True), (61, NEG, PCR, False, False, True)],
        {(0, PCR): (1, 1), (61, PCR): (0, 1)},
        [(0,)],
    ),
    (
        "a negative before a positive is not covered",
        [res("a", 0, NEG), res("b", 10)],
        [(0, NEG, PCR, False, False, True), (10, POS, PCR, False, True, True)],
        {(0, PCR): (0, 1), (10, PCR): (1, 1)},
        [(10,)],
    ),
    (
        "same-day positive antigen and PCR: one person-day, kind rt-pcr",
        [res("ag", 0, kind=AG, collected_h=7), res("pcr", 0, kind=PCR)],
        [(0, POS, PCR, False, True, True)],
        {(0, PCR): (1, 1)},
        [(0,)],
    ),
    (
        "same-day positive antigen and negative PCR: positive, kind antigen",
        [res("ag", 0, kind=AG), res("pcr", 0, NEG, kind=PCR)],
        [(0, POS, AG, False, True, True)],
        {(0, AG): (1, 1)},
        [(0,)],
    ),
    (
        "same-day negatives: antigen before serology",
        [res("sero", 0, NEG, kind=SERO, collected_h=1), res("ag", 0, NEG, kind=AG)],
        [(0, NEG, AG, False, False, True)],
        {(0, AG): (0, 1)},
        [],
    ),
    (
        "a correction turning a positive negative: T only",
        [res("a", 0), res("a", 0, NEG, status=C, result_h=30)],
        [(0, NEG, PCR, False, False, True)],
        {(0, PCR): (0, 1)},
        [],
    ),
    (
        "a cancellation removes the result",
        [res("a", 0), res("a", 0, status=X, result_h=30)],
        [],
        {},
        [],
    ),
    (
        "wrong patient removes the result from this person",
        [res("a", 0), res("a", 0, status=W, result_h=30)],
        [],
        {},
        [],
    ),
    ("a preliminary never counts", [res("a", 0, status=P)], [], {}, []),
    (
        "a preliminary positive does not cover a later final negative",
        [res("a", 0, status=P), res("b", 30, NEG)],
        [(30, NEG, PCR, False, False, True)],
        {(30, PCR): (0, 1)},
        [],
    ),
    ("inconclusive alone is no person-day", [res("a", 0, INC)], [], {}, []),
    (
        "inconclusive and negative on one day: negative",
        [res("a", 0, INC), res("b", 0, NEG, kind=AG)],
        [(0, NEG, AG, False, False, True)],
        {(0, AG): (0, 1)},
        [],
    ),
    (
        "a late earlier positive moves the onset and covers the later day",
        [res("late", 10), res("early", 0, received_h=400)],
        [(0, POS, PCR, False, True, True), (10, POS, PCR, True, False, False)],
        {(0, PCR): (1, 1)},
        [(0, 10)],
    ),
]


@pytest.mark.parametrize(
    ("versions", "days", "counts", "eps"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
def test_person_days_and_counts(
    versions: list[ResultVersion],
    days: list[PDay],
    counts: dict[tuple[int, model.TestKind], tuple[int, int]],
    eps: list[tuple[int, ...]],
) -> None:
    for order in (versions, versions[::-1], versions + versions):
        ev = evaluate(order)
        assert person_days(ev) == days
        assert contributions(ev.contributions) == counts
        assert episodes(ev) == eps


def test_person_day_takes_the_attributes_of_the_deciding_test() -> None:
    ev = evaluate(
        [
            res("ag", 0, kind=AG, department="13", collected_h=1),
            res("pcr-late", 0, department="13", collected_h=9),
            res("pcr-early", 0, department=None, collected_h=7),
        ]
    )
    (pd,) = ev.person_days
    assert pd.deciding.result_id == "result-pcr-early"
    assert ev.contributions == {AggregateKey(day(0), None, "39", Sex.FEMALE, PCR): Counts(1, 1)}
    (episode,) = ev.episodes
    assert (episode.onset.department, episode.onset.region, episode.onset.test_kind) == (None, None, PCR)


def test_same_kind_same_time_is_decided_by_result_id_not_arrival() -> None:
    tests = [res("b", 0, department="13"), res("a", 0, department="75")]
    for order in (tests, tests[::-1]):
        (pd,) = evaluate(order).person_days
        assert pd.deciding.result_id == "result-a"


def test_serology_is_stored_but_neither_counted_nor_a_case() -> None:
    evaluation = evaluate([res("sero", 0, POS, kind=SERO)])
    assert (evaluation.person_days, evaluation.contributions, evaluation.episodes) == ((), {}, ())


def test_diff_contributions_omits_zeros() -> None:
    k0, k1, k2 = (AggregateKey(day(n), "75", "39", Sex.FEMALE, PCR) for n in range(3))
    old = {k0: Counts(1, 1), k1: Counts(0, 1)}
    new = {k0: Counts(0, 1), k2: Counts(1, 1), k1: Counts(0, 1)}
    assert diff_contributions(old, new) == {k0: Counts(-1, 0), k2: Counts(1, 1)}
    assert diff_contributions(new, new) == {}
    assert diff_contributions(old, {}) == {k0: Counts(-1, -1), k1: Counts(0, -1)}


# --- cases over a sequence of arrivals ----------------------------------------------------------

Delta = dict[tuple[int, model.TestKind], tuple[int, int]]
# name, then per batch: versions arriving, expected P/T delta, expected events (type, id, onset, last)
CASE_SCENARIOS: list[tuple[str, list[tuple[list[ResultVersion], Delta, list[tuple[str, str, int, int]]]]]] = [
    (
        "reinfection after 60 days: two cases",
        [
            (
                [res("a", 0), res("b", 61)],
                {(0, PCR): (1, 1), (61, PCR): (1, 1)},
                [(OPENED, cid(0), 0, 0), (OPENED, cid(61), 61, 61)],
            )
        ],
    ),
    (
        "late earlier positive: the onset moves, same case, day 10 becomes covered",
        [
            ([res("d10", 10)], {(10, PCR): (1, 1)}, [(OPENED, cid(10), 10, 10)]),
            ([res("d0", 0)], {(0, PCR): (1, 1), (10, PCR): (-1, -1)}, [(UPDATED, cid(10), 0, 10)]),
        ],
    ),
    (
        "a later positive within 60 days extends the case",
        [
            ([res("a", 0)], {(0, PCR): (1, 1)}, [(OPENED, cid(0), 0, 0)]),
            ([res("b", 50)], {}, [(UPDATED, cid(0), 0, 50)]),
            ([res("b", 50, received_h=90)], {}, []),
        ],
    ),
    (
        "correction turning the positive negative: case retracted, P moves to T only",
        [
            ([res("a", 0)], {(0, PCR): (1, 1)}, [(OPENED, cid(0), 0, 0)]),
            ([res("a", 0, NEG, status=C, result_h=40)], {(0, PCR): (-1, 0)}, [(RETRACTED, cid(0), 0, 0)]),
        ],
    ),
    (
        "cancellation: case retracted, nothing counted",
        [
            ([res("a", 0)], {(0, PCR): (1, 1)}, [(OPENED, cid(0), 0, 0)]),
            ([res("a", 0, status=X, result_h=40)], {(0, PCR): (-1, -1)}, [(RETRACTED, cid(0), 0, 0)]),
        ],
    ),
    (
        "a retracted case matching again is reopened, not opened twice",
        [
            ([res("a", 0)], {(0, PCR): (1, 1)}, [(OPENED, cid(0), 0, 0)]),
            ([res("a", 0, NEG, status=C, result_h=40)], {(0, PCR): (-1, 0)}, [(RETRACTED, cid(0), 0, 0)]),
            ([res("a", 0, status=C, result_h=50)], {(0, PCR): (1, 0)}, [(UPDATED, cid(0), 0, 0)]),
        ],
    ),
    (
        "preliminary then final: the case opens with the final",
        [
            ([res("a", 0, status=P)], {}, []),
            ([res("a", 0, status=F, result_h=20)], {(0, PCR): (1, 1)}, [(OPENED, cid(0), 0, 0)]),
        ],
    ),
    (
        "two cases bridged by a late positive: the earliest is kept; un-bridged: both back, none opened",
        [
            (
                [res("a", 0), res("c", 90)],
                {(0, PCR): (1, 1), (90, PCR): (1, 1)},
                [(OPENED, cid(0), 0, 0), (OPENED, cid(90), 90, 90)],
            ),
            ([res("b", 45)], {(90, PCR): (-1, -1)}, [(UPDATED, cid(0), 0, 90), (RETRACTED, cid(90), 90, 90)]),
            (
                [res("b", 45, status=X, result_h=40)],
                {(90, PCR): (1, 1)},
                [(UPDATED, cid(0), 0, 0), (UPDATED, cid(90), 90, 90)],
            ),
        ],
    ),
    (
        "the onset test corrected to antigen: case updated",
        [
            ([res("a", 0)], {(0, PCR): (1, 1)}, [(OPENED, cid(0), 0, 0)]),
            (
                [res("a", 0, kind=AG, status=C, result_h=40)],
                {(0, PCR): (-1, -1), (0, AG): (1, 1)},
                [(UPDATED, cid(0), 0, 0)],
            ),
        ],
    ),
    (
        "a cancelled middle positive splits the case: the later part is a new case",
        [
            ([res("a", 0), res("b", 45), res("c", 90)], {(0, PCR): (1, 1)}, [(OPENED, cid(0), 0, 90)]),
            (
                [res("b", 45, status=X, result_h=40)],
                {(90, PCR): (1, 1)},
                [(UPDATED, cid(0), 0, 0), (OPENED, cid(90), 90, 90)],
            ),
        ],
    ),
    (
        "a split case stays with its onset, a retracted case is not reopened in its place",
        [
            ([res("a", 0)], {(0, PCR): (1, 1)}, [(OPENED, cid(0), 0, 0)]),
            ([res("a", 0, NEG, status=C, result_h=40)], {(0, PCR): (-1, 0)}, [(RETRACTED, cid(0), 0, 0)]),
            ([res("b", 30), res("c", 90), res("d", 120)], {(30, PCR): (1, 1)}, [(OPENED, cid(30), 30, 120)]),
            (
                [res("a", 0, status=C, result_h=50), res("c", 90, status=X, result_h=40)],
                {(0, PCR): (1, 0), (30, PCR): (-1, -1), (120, PCR): (1, 1)},
                [(UPDATED, cid(30), 0, 30), (OPENED, cid(120), 120, 120)],
            ),
        ],
    ),
    (
        "a positive again on the onset day of a retracted case reopens it",
        [
            ([res("a", 0), res("b", 50)], {(0, PCR): (1, 1)}, [(OPENED, cid(0), 0, 50)]),
            (
                [res("a", 0, NEG, status=C, result_h=40)],
                {(0, PCR): (-1, 0), (50, PCR): (1, 1)},
                [(UPDATED, cid(0), 50, 50)],
            ),
            ([res("b", 50, status=X, result_h=40)], {(50, PCR): (-1, -1)}, [(RETRACTED, cid(0), 50, 50)]),
            ([res("a2", 0, kind=AG)], {(0, PCR): (0, -1), (0, AG): (1, 1)}, [(UPDATED, cid(0), 0, 0)]),
        ],
    ),
    (
        "a new case whose natural id is taken by a moved case gets another id",
        [
            ([res("a", 0), res("b", 50), res("c", 100)], {(0, PCR): (1, 1)}, [(OPENED, cid(0), 0, 100)]),
            (
                [res("a", 0, NEG, status=C, result_h=40), res("b", 50, NEG, status=C, result_h=40)],
                {(0, PCR): (-1, 0), (50, PCR): (0, 1), (100, PCR): (1, 1)},
                [(UPDATED, cid(0), 100, 100)],
            ),
            (
                [res("a2", 0)],
                {(0, PCR): (1, 0), (50, PCR): (0, -1)},
                [(OPENED, case_id(PSEUDONYM, day(0), 1), 0, 0)],
            ),
        ],
    ),
]


@pytest.mark.parametrize("steps", [s[1] for s in CASE_SCENARIOS], ids=[s[0] for s in CASE_SCENARIOS])
def test_cases_over_arrivals(
    steps: list[tuple[list[ResultVersion], Delta, list[tuple[str, str, int, int]]]],
) -> None:
    worker = Worker()
    for batch, delta, expected in steps:
        got_delta, got_events = worker.arrive(batch)
        assert contributions(got_delta) == delta
        assert events(got_events) == expected
        assert worker.aggregates == {k: v for k, v in worker.contributions.items() if v != Counts(0, 0)}
        assert_one_open_case_per_episode(worker)
        assert worker.arrive([]) == ({}, []), "the same input twice must change nothing"


def test_case_event_carries_the_onset_attributes() -> None:
    worker = Worker()
    worker.arrive([res("a", 3, kind=AG, department="13")])
    (event,) = worker.events
    assert event == CaseEvent(
        type="case.opened",
        case_id=cid(3),
        pseudonym=PSEUDONYM,
        onset_day=day(3),
        last_positive_day=day(3),
        department="13",
        region="93",
        age_class="39",
        sex=Sex.FEMALE,
        test_kind=AG,
    )
    assert worker.cases[cid(3)].status is CaseStatus.OPEN


# --- properties ---------------------------------------------------------------------------------

BOUNDARY_DAYS = [0, 1, 30, 59, 60, 61, 90, 119, 120, 121, 150, 181]
days_st = st.sampled_from(BOUNDARY_DAYS) | st.integers(0, 200)
outcomes_st = st.sampled_from([POS, POS, POS, NEG, NEG, INC, Outcome.INVALID])
kinds_st = st.sampled_from(list(model.TestKind))
statuses_st = st.sampled_from([F, F, F, F, C, C, C, P, X, ResultStatus.DELETED, W])


@st.composite
def person_versions(draw: st.DrawFn) -> list[ResultVersion]:
    """All versions received for one person: a few results, each with a few versions.

    A version mostly keeps its result's collection day and kind; corrections may change them.
    """
    versions = []
    for i in range(draw(st.integers(1, 8))):
        d, kind = draw(days_st), draw(kinds_st)
        for _ in range(draw(st.integers(1, 3))):
            versions.append(
                res(
                    str(i),
                    draw(st.just(d) | st.just(d) | days_st),
                    draw(outcomes_st),
                    draw(st.just(kind) | kinds_st),
                    draw(statuses_st),
                    draw(st.none() | st.integers(0, 3)),
                    draw(st.integers(6, 9)),
                    draw(st.sampled_from(["75", "13", None])),
                    draw(st.integers(20, 22)),
                )
            )
    return versions


@st.composite
def arrivals(draw: st.DrawFn, versions: list[ResultVersion]) -> list[list[ResultVersion]]:
    """The versions, with duplicates (re-sends), in any order, cut into batches."""
    resent = draw(st.lists(st.sampled_from(versions), max_size=4))
    order = draw(st.permutations(versions + resent))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=len(order))))
    bounds = [0, *cuts, len(order)]
    return [order[a:b] for a, b in pairwise(bounds) if a < b]


def assert_one_open_case_per_episode(worker: Worker) -> None:
    open_cases = sorted(
        (c.onset_day, c.last_positive_day, c.department, c.region, c.age_class, c.sex, c.test_kind)
        for c in worker.cases.values()
        if c.status is CaseStatus.OPEN
    )
    expected = sorted(
        (
            e.onset_day,
            e.last_positive_day,
            e.onset.department,
            e.onset.region,
            e.onset.age_class,
            e.onset.sex,
            e.onset.test_kind,
        )
        for e in worker.evaluation.episodes
    )
    assert open_cases == expected


def reference_person_days(versions: Sequence[ResultVersion]) -> list[tuple[date, Outcome, bool]]:
    """SPEC §5 read literally, quadratic: (day, outcome, covered) of each person-day."""
    counting = [
        w for w in winners(versions)
        if w.counts and w.outcome in (POS, NEG) and w.test_kind in (PCR, AG)
    ]
    outcome = {
        d: POS if any(w.outcome is POS for w in counting if w.collection_day == d) else NEG
        for d in {w.collection_day for w in counting}
    }
    positives = [d for d, o in outcome.items() if o is POS]
    return [
        (d, o, any(1 <= (d - p).days <= WINDOW_DAYS for p in positives)) for d, o in sorted(outcome.items())
    ]


@given(person_versions())
def test_person_days_follow_the_rule_read_literally(versions: list[ResultVersion]) -> None:
    ev = evaluate(versions)
    assert [(pd.day, pd.outcome, pd.covered) for pd in ev.person_days] == reference_person_days(versions)
    for pd in ev.person_days:
        assert (pd.counted_p, pd.counted_t) == (pd.outcome is POS and not pd.covered, not pd.covered)
    assert len(ev.episodes) == sum(pd.counted_p for pd in ev.person_days)
    assert sum(c.p for c in ev.contributions.values()) == len(ev.episodes)
    assert sum(c.t for c in ev.contributions.values()) == sum(pd.counted_t for pd in ev.person_days)


@given(person_versions(), st.data())
def test_arrival_order_and_resends_change_nothing(versions: list[ResultVersion], data: st.DataObject) -> None:
    received = [v for batch in data.draw(arrivals(versions)) for v in batch]
    assert sorted(winners(received), key=lambda w: w.result_id) == sorted(
        winners(versions), key=lambda w: w.result_id
    )
    assert evaluate(received) == evaluate(versions)


@settings(max_examples=200)
@given(person_versions(), st.data())
def test_incremental_arrivals_match_a_full_recomputation(
    versions: list[ResultVersion], data: st.DataObject
) -> None:
    """Whatever the order, batching and re-sends of arrivals:

    - the aggregates, kept by applying each batch's delta, equal the contributions of a full
      recomputation (after every batch, hence at the end);
    - after every batch there is exactly one open case per current episode, with its range and onset
      attributes, and every other case ever opened is retracted;
    - a case id gets at most one case.opened, and any case.updated/retracted follows it;
    - re-running on the same state changes nothing.
    Not guaranteed: one case.opened per final episode. Positives more than 60 days apart known at
    some point are rightly two cases then, and both are handed to tracing; a late positive bridging
    them retracts the later one (and a later cancellation of the bridge reopens it). Likewise a
    cancelled middle positive splits an episode and opens a case for the later part, a new case in P.
    """
    worker = Worker()
    for batch in data.draw(arrivals(versions)):
        worker.arrive(batch)
        assert worker.aggregates == worker.contributions
        assert_one_open_case_per_episode(worker)
    assert worker.contributions == evaluate(versions).contributions
    assert worker.arrive([]) == ({}, [])

    opened: set[str] = set()
    for e in worker.events:
        if e.type == OPENED:
            assert e.case_id not in opened, "a case is handed to tracing once"
            opened.add(e.case_id)
        else:
            assert e.case_id in opened
    assert opened == set(worker.cases)


@st.composite
def additions(draw: st.DrawFn) -> list[ResultVersion]:
    """Results that are only ever added: one final version each, maybe after a preliminary."""
    versions = []
    for i in range(draw(st.integers(1, 8))):
        d, outcome, kind = (
            draw(days_st),
            draw(st.sampled_from([POS, NEG, INC])),
            draw(st.sampled_from([PCR, AG])),
        )
        if draw(st.booleans()):
            versions.append(res(str(i), d, draw(outcomes_st), kind, status=P, result_h=1))
        versions.append(res(str(i), d, outcome, kind, result_h=2))
    return versions


@given(additions(), st.data())
def test_results_arriving_in_collection_order_open_one_case_per_episode(
    versions: list[ResultVersion], data: st.DataObject
) -> None:
    """When results only add up and arrive in collection-day order, in any batches: exactly one
    case.opened per final episode, with the id of its onset day, and nothing is retracted."""
    ordered = sorted(data.draw(st.permutations(versions)), key=lambda v: v.collection_day)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(ordered)))))
    worker = Worker()
    for a, b in pairwise([0, *cuts, len(ordered)]):
        worker.arrive(ordered[a:b])
    final: tuple[Episode, ...] = worker.evaluation.episodes
    assert sorted(e.case_id for e in worker.events if e.type == OPENED) == sorted(
        cid(offset(e.onset_day)) for e in final
    )
    assert not [e for e in worker.events if e.type == RETRACTED]


@given(person_versions())
def test_everything_in_one_batch_opens_one_case_per_episode(versions: list[ResultVersion]) -> None:
    worker = Worker()
    _, evs = worker.arrive(versions)
    assert events(evs) == [
        (OPENED, cid(offset(e.onset_day)), offset(e.onset_day), offset(e.last_positive_day))
        for e in worker.evaluation.episodes
    ]
