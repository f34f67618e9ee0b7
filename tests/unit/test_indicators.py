"""The pure SI-DEP indicators: rollups, all-ages rows, sex split, unknowns, sliding windows."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.config import Settings
from services.core.domain.geography import AGE_CLASSES
from services.core.domain.indicators import (
    ALL_AGES,
    CL_AGE90,
    FRANCE,
    CountRow,
    Geography,
    History,
    build_history,
    incidence_rate,
    is_small_count,
    positivity_rate,
    sliding_indicators,
    sliding_sum,
    sum_series,
)
from services.core.reference import load_geography

D0 = date(2022, 1, 3)


def mini_geography() -> Geography:
    """01 and 02 in region 84, 975 in no region, region 11 with no department here."""
    population = {}
    for dep, per_class in (("01", 100.0), ("02", 10.0), ("975", 0.5)):
        for age in AGE_CLASSES:
            population[(dep, age)] = per_class
        population[(dep, ALL_AGES)] = per_class * 10
    return Geography.from_reference({"01": "84", "02": "84"}, population, ["11", "84"])


def history(counts: list[CountRow], days: int = 3) -> History:
    return build_history(counts, mini_geography(), D0, D0 + timedelta(days=days - 1))


def test_no_counts_gives_every_row_with_zeros() -> None:
    h = build_history([], mini_geography(), D0, D0 + timedelta(days=2))
    assert h.length == 3 and h.days() == [D0, D0 + timedelta(days=1), D0 + timedelta(days=2)]
    assert set(h.departments.series) == {(d, a) for d in ("01", "02", "975") for a in CL_AGE90}
    assert set(h.regions.series) == {(r, a) for r in ("11", "84") for a in CL_AGE90}
    assert set(h.france.series) == {(FRANCE, a) for a in CL_AGE90}
    for level in (h.departments, h.regions, h.france):
        for s in level.series.values():
            assert s.p == s.t == s.p_f == s.p_h == s.t_f == s.t_h == [0, 0, 0]


def test_rollups_sex_split_and_all_ages_by_hand() -> None:
    h = build_history([
        (D0, "01", "29", "F", 1, 3),
        (D0, "01", "29", "M", 2, 5),
        (D0, "01", "29", "U", 4, 7),       # unknown sex: totals only
        (D0, "01", "", "F", 8, 9),          # unknown age: all-ages rows only
        (D0, "02", "29", "M", 16, 20),
        (D0, "975", "90", "F", 32, 40),     # no region: department and France
        (D0 + timedelta(days=1), "", "29", "F", 64, 70),   # unknown department: France only
        (D0 + timedelta(days=1), "", "", "M", 128, 130),   # unknown department and age
        (D0 + timedelta(days=2), "99", "29", "F", 256, 300),  # not a reference department: France only
        (D0 + timedelta(days=2), "02", "x", "M", 512, 600),   # not an age class: all ages only
    ], mini_geography(), D0, D0 + timedelta(days=2))

    dep = h.departments.series
    assert (dep[("01", "29")].p, dep[("01", "29")].t) == ([7, 0, 0], [15, 0, 0])
    assert (dep[("01", "29")].p_f, dep[("01", "29")].p_h) == ([1, 0, 0], [2, 0, 0])
    assert (dep[("01", "29")].t_f, dep[("01", "29")].t_h) == ([3, 0, 0], [5, 0, 0])
    all_ages = dep[("01", "0")]
    assert (all_ages.p, all_ages.t, all_ages.p_f) == ([15, 0, 0], [24, 0, 0], [9, 0, 0])
    assert (dep[("02", "0")].p, dep[("02", "0")].p_h) == ([16, 0, 512], [16, 0, 512])
    assert dep[("975", "90")].p == dep[("975", "0")].p == [32, 0, 0]

    reg = h.regions.series
    assert reg[("84", "29")].p == [23, 0, 0] and reg[("84", "29")].p_h == [18, 0, 0]
    assert reg[("84", "0")].p == [31, 0, 512] and reg[("84", "0")].t == [44, 0, 600]
    assert reg[("84", "90")].p == [0, 0, 0]  # 975 is in no region
    assert reg[("11", "0")].p == [0, 0, 0]

    fra = h.france.series
    assert fra[(FRANCE, "29")].p == [23, 64, 256]
    assert fra[(FRANCE, "29")].p_f == [1, 64, 256]
    assert fra[(FRANCE, "90")].p == [32, 0, 0]
    assert fra[(FRANCE, "0")].p == [63, 192, 768]
    assert fra[(FRANCE, "0")].p_f == [41, 64, 256] and fra[(FRANCE, "0")].p_h == [18, 128, 512]
    assert fra[(FRANCE, "0")].t == [84, 200, 900]


def test_populations_sum_up_the_departments() -> None:
    h = history([])
    assert h.departments.population[("02", "0")] == 100.0
    assert h.regions.population[("84", "09")] == 110.0 and h.regions.population[("84", "0")] == 1100.0
    assert h.regions.population[("11", "0")] == 0.0
    assert h.france.population[(FRANCE, "09")] == 110.5


def test_counts_outside_the_range_are_ignored() -> None:
    h = history([(D0 - timedelta(days=1), "01", "29", "F", 1, 1),
                 (D0 + timedelta(days=3), "01", "29", "F", 1, 1)])
    assert h.france.series[(FRANCE, "0")].t == [0, 0, 0]


def test_a_range_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError):
        build_history([], mini_geography(), D0, D0 - timedelta(days=1))


def test_real_reference_geography() -> None:
    geography, _ = load_geography(Settings().reference_dir)
    assert len(geography.departments) == 104 and geography.departments[:2] == ("01", "02")
    assert {"2A", "2B", "971", "975", "977", "978"} <= set(geography.departments)
    assert len(geography.regions) == 18
    h = build_history([], geography, D0, D0)
    assert h.france.population[(FRANCE, ALL_AGES)] == 67_114_995
    assert h.regions.population[("94", "0")] == 162_421 + 182_258  # Corsica = 2A + 2B
    assert round(h.france.population[(FRANCE, "09")]) == round(
        sum(geography.population[(d, "09")] for d in geography.departments)
    )


def test_sliding_sum_by_hand() -> None:
    assert sliding_sum([1, 2, 3, 4, 5, 6, 7, 8, 9]) == [1, 3, 6, 10, 15, 21, 28, 35, 42]
    assert sliding_sum([5, 0, 1], window=2) == [5, 5, 1]
    assert sliding_sum([]) == []


def test_rates_by_hand() -> None:
    assert incidence_rate(35, 162_421) == 21.55  # 100000 × 35 / 162421 = 21.548...
    assert positivity_rate(1, 3) == 33.33
    assert positivity_rate(0, 0) is None
    assert incidence_rate(3, 0) is None


def test_sliding_indicators_by_hand() -> None:
    s = sum_series([], 8)
    s.p[:] = [1, 0, 0, 0, 0, 0, 1, 2]
    s.t[:] = [4, 0, 0, 0, 0, 0, 4, 2]
    out = sliding_indicators(s, 200_000)
    assert out.p[6:] == [2, 3] and out.t[6:] == [8, 6]
    assert out.incidence[6:] == [1.0, 1.5]
    assert out.positivity[6:] == [25.0, 50.0]


def test_small_count_masking_rule() -> None:
    assert [is_small_count(v, 5) for v in (0, 1, 4, 5, 11)] == [False, True, True, False, False]
    assert not is_small_count(1, 0)


row = st.tuples(
    st.integers(0, 4).map(lambda k: D0 + timedelta(days=k)),
    st.sampled_from(["01", "02", "975", "", "99"]),
    st.sampled_from([*AGE_CLASSES, ""]),
    st.sampled_from(["F", "M", "U"]),
    st.integers(0, 50),
    st.integers(0, 50),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(row, max_size=40))
def test_totals_are_conserved(rows: list[CountRow]) -> None:
    h = build_history(rows, mini_geography(), D0, D0 + timedelta(days=4))
    fra = h.france.series[(FRANCE, ALL_AGES)]
    assert sum(fra.p) == sum(r[4] for r in rows) and sum(fra.t) == sum(r[5] for r in rows)
    assert sum(fra.p_f) == sum(r[4] for r in rows if r[3] == "F")
    for dep in ("01", "02", "975"):
        expected = sum(r[5] for r in rows if r[1] == dep)
        assert sum(h.departments.series[(dep, ALL_AGES)].t) == expected
        classes = sum(sum(h.departments.series[(dep, a)].t) for a in AGE_CLASSES)
        assert classes == sum(r[5] for r in rows if r[1] == dep and r[2])
    assert sum(h.regions.series[("84", ALL_AGES)].p) == sum(r[4] for r in rows if r[1] in ("01", "02"))
