"""Which version of a result counts: status and result time decide, never arrival order (SPEC §5)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.domain import model
from services.core.domain.model import (
    LabResult,
    Outcome,
    PseudonymBasis,
    ResultStatus,
    Sex,
    Transport,
)
from services.worker.versions import ResultVersion
from tests.oracles import precedence, version_of, winning_version

F, C, P = ResultStatus.FINAL, ResultStatus.CORRECTED, ResultStatus.PRELIMINARY
X, D, W = ResultStatus.CANCELLED, ResultStatus.DELETED, ResultStatus.WRONG_PATIENT
POS, NEG = Outcome.POSITIVE, Outcome.NEGATIVE
T0 = datetime(2021, 3, 1, 10, 0, tzinfo=UTC)
PSEUDONYM = "a" * 64


def version(
    status: ResultStatus,
    outcome: Outcome = POS,
    result_h: int | None = 2,
    received_h: int = 5,
    department: str | None = "75",
    collected_at: datetime = T0,
    result_id: str = "result-0001",
    pseudonym: str = PSEUDONYM,
) -> ResultVersion:
    return version_of(
        LabResult(
            result_id=result_id,
            sending_application="LIS",
            sending_facility="LAB1",
            message_control_id=f"m{received_h}",
            transport=Transport.MLLP,
            received_at=T0 + timedelta(hours=received_h),
            patient_pseudonym=pseudonym,
            pseudonym_basis=PseudonymBasis.INS,
            sex=Sex.FEMALE,
            age_class="39",
            department=department,
            region="11" if department else None,
            collected_at=collected_at,
            loinc="94500-6",
            test_kind=model.TestKind.RT_PCR,
            outcome=outcome,
            status=status,
            result_at=None if result_h is None else T0 + timedelta(hours=result_h),
        )
    )


# (name, versions, index of the expected winner, whether the winner counts)
WINNER_CASES = [
    ("final alone", [version(F)], 0, True),
    ("preliminary alone never counts", [version(P)], 0, False),
    ("final beats preliminary sent later", [version(F, result_h=1), version(P, result_h=9)], 0, True),
    ("correction replaces final", [version(F, POS, 2), version(C, NEG, 3)], 1, True),
    (
        "correction beats final even with an earlier result time",
        [version(F, POS, 5), version(C, NEG, 3)],
        1,
        True,
    ),
    (
        "latest correction by result time",
        [version(C, NEG, 4, received_h=6), version(C, POS, 3, received_h=9)],
        0,
        True,
    ),
    ("correction with a result time beats one without", [version(C, NEG, None), version(C, POS, 1)], 1, True),
    ("latest final by result time", [version(F, NEG, 4), version(F, POS, 3)], 0, True),
    ("cancellation beats a later correction", [version(X, POS, 1), version(C, POS, 9)], 0, False),
    ("deletion retracts", [version(F), version(D, result_h=3)], 1, False),
    ("wrong patient retracts", [version(F), version(W, result_h=3)], 1, False),
    ("re-send: the earliest received copy", [version(F, received_h=8), version(F, received_h=6)], 1, True),
]


@pytest.mark.parametrize(
    ("versions", "winner", "counts"), [c[1:] for c in WINNER_CASES], ids=[c[0] for c in WINNER_CASES]
)
def test_winner(versions: list[ResultVersion], winner: int, counts: bool) -> None:
    for order in (versions, versions[::-1]):
        won = winning_version(order)
        assert won == versions[winner]
        assert won.counts is counts


def test_tie_on_status_and_result_time_is_broken_by_content_not_arrival() -> None:
    pos_first = [version(C, POS, 3, received_h=6), version(C, NEG, 3, received_h=7)]
    neg_first = [version(C, POS, 3, received_h=7), version(C, NEG, 3, received_h=6)]
    assert winning_version(pos_first) == winning_version(pos_first[::-1])
    assert winning_version(pos_first).outcome is winning_version(neg_first).outcome


def test_version_key_recognises_resends_and_tells_contents_apart() -> None:
    first, resend = version(F, received_h=5), version(F, received_h=9)
    assert first.version_key == resend.version_key
    assert first != resend
    assert version(F, department="13").version_key != first.version_key
    assert version(F, NEG).version_key != first.version_key
    assert version(C).version_key != first.version_key
    # the same instant written in another offset is the same version
    paris = version(F, collected_at=T0.astimezone(timezone(timedelta(hours=1))))
    assert paris.version_key == first.version_key


def test_a_version_takes_the_paris_collection_day() -> None:
    v = version(F, collected_at=datetime(2021, 3, 1, 23, 30, tzinfo=UTC))
    assert v.collection_day == date(2021, 3, 2)
    assert (v.lab, v.department, v.region, v.age_class, v.sex) == ("LAB1", "75", "11", "39", Sex.FEMALE)


def test_winning_version_rejects_nothing_and_mixtures() -> None:
    with pytest.raises(ValueError):
        winning_version([])
    with pytest.raises(ValueError):
        winning_version([version(F), version(F, result_id="result-0002")])
    # a W under one person must not cancel the same specimen re-sent under another person
    with pytest.raises(ValueError):
        winning_version([version(W), version(F, pseudonym="b" * 64)])


versions_st = st.lists(
    st.builds(
        version,
        status=st.sampled_from(list(ResultStatus)),
        outcome=st.sampled_from(list(Outcome)),
        result_h=st.none() | st.integers(0, 3),
        received_h=st.integers(0, 3),
        department=st.sampled_from(["75", "13", None]),
    ),
    min_size=1,
    max_size=8,
)


@given(versions_st, st.data())
def test_winner_ignores_arrival_order_and_duplicates(
    versions: list[ResultVersion], data: st.DataObject
) -> None:
    arrival = data.draw(st.permutations(versions)) + data.draw(
        st.lists(st.sampled_from(versions), max_size=6)
    )
    assert winning_version(arrival) == winning_version(versions)


@given(versions_st)
def test_winner_follows_the_status_then_result_time_rule(versions: list[ResultVersion]) -> None:
    won = winning_version(versions)
    for group in ({X, D, W}, {C}, {F}, {P}):
        candidates = [v for v in versions if v.status in group]
        if candidates:
            assert won.status in group
            times = [v.result_at for v in candidates if v.result_at is not None]
            assert won.result_at == (max(times) if times else None)
            assert precedence(won) == max(precedence(v) for v in versions)
            break
