"""Dashboard computations that need no database: the per-geography series equal `build_history`'s,
filters, periods, silent labs, and the migration's department → region table."""

from __future__ import annotations

import csv
import importlib.util
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.config import REPO_ROOT, Settings
from services.core.domain.indicators import (
    ALL_AGES,
    CL_AGE90,
    FRANCE,
    CountRow,
    build_history,
    geography_population,
    geography_series,
    region_departments,
)
from services.core.reference import load_geography
from services.dashboard.queries import (
    Filters,
    QueryError,
    check_code,
    check_period,
    delay_percentiles,
    reference_instant,
    silent_labs,
)

GEOGRAPHY, _ = load_geography(Settings().reference_dir)
FIRST = date(2022, 1, 3)
LAST = FIRST + timedelta(days=9)

count_rows = st.lists(
    st.tuples(
        st.dates(FIRST - timedelta(days=2), LAST + timedelta(days=2)),
        st.sampled_from(["75", "92", "2A", "971", "978", "", "20"]),
        st.sampled_from([*CL_AGE90[:-1], "", "7"]),
        st.sampled_from(["F", "M", "U"]),
        st.integers(0, 5),
        st.integers(0, 9),
    ),
    max_size=60,
)


def members(level: str, code: str, department: str) -> bool:
    """The dashboard's SQL membership: the department itself, the region's, everything for France."""
    if level == "dep":
        return department == code
    if level == "reg":
        return GEOGRAPHY.department_region.get(department) == code
    return True


@settings(max_examples=150, deadline=None)
@given(
    count_rows,
    st.sampled_from([("dep", "75"), ("dep", "978"), ("reg", "11"), ("reg", "94"), ("fra", FRANCE)]),
    st.sampled_from(["0", "29", "90"]),
)
def test_geography_series_is_build_history(counts: list[CountRow], geo: tuple[str, str], age: str) -> None:
    level, code = geo
    history = build_history(counts, GEOGRAPHY, FIRST, LAST)
    expected = {"dep": history.departments, "reg": history.regions, "fra": history.france}[level]
    # what SQL hands over: the geography's rows, the age class filtered (all of them for all ages)
    mine = [
        (day, a, sex, p, t)
        for day, dep, a, sex, p, t in counts
        if members(level, code, dep) and (age == ALL_AGES or a == age)
    ]
    assert geography_series(mine, age, FIRST, LAST) == expected.series[(code, age)]
    assert geography_population(GEOGRAPHY, level, code, age) == expected.population[(code, age)]


def test_region_departments() -> None:
    assert region_departments(GEOGRAPHY, "94") == ["2A", "2B"]
    assert "978" not in [d for r in GEOGRAPHY.regions for d in region_departments(GEOGRAPHY, r)]


def test_filters_and_codes_are_validated() -> None:
    Filters("29", "F", "antigen")
    for bad in ({"age": "42"}, {"sex": "U"}, {"kind": "serology"}):
        with pytest.raises(QueryError):
            Filters(**bad)
    check_code(GEOGRAPHY, "dep", "2A")
    check_code(GEOGRAPHY, "reg", "84")
    check_code(GEOGRAPHY, "fra", "FR")
    for level, code in (("dep", "20"), ("reg", "75000"), ("fra", "FX"), ("city", "FR")):
        with pytest.raises(QueryError):
            check_code(GEOGRAPHY, level, code)
    check_period(FIRST, FIRST)
    with pytest.raises(QueryError, match="is after"):
        check_period(LAST, FIRST)
    with pytest.raises(QueryError, match="at most 31 days"):
        check_period(FIRST, FIRST + timedelta(days=31), 31)


def test_silent_labs_are_judged_on_whole_days() -> None:
    now = datetime(2022, 3, 10, 15, 0, tzinfo=UTC)
    assert reference_instant(date(2022, 3, 10), now) == now
    assert reference_instant(date(2022, 3, 20), now) == now
    assert reference_instant(date(2022, 3, 1), now) == datetime(2022, 3, 2, tzinfo=UTC)
    found = silent_labs(
        [
            ("today", date(2022, 3, 10)),
            ("yesterday", date(2022, 3, 9)),
            ("two-days", date(2022, 3, 8)),
            ("never", None),
        ],
        now,
    )
    # "yesterday" may have sent at 23:59 (15 h ago): not yet certain; "two-days" ended 39 h ago
    assert [(s.lab, s.silent_hours_at_least) for s in found] == [("two-days", 39)]


def test_the_migration_has_the_reference_department_regions() -> None:
    path = REPO_ROOT / "services/core/db/migrations/versions/0005_dashboard.py"
    spec = importlib.util.spec_from_file_location("migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with (Settings().reference_dir / "departments.csv").open(encoding="utf-8", newline="") as handle:
        reference = {row["dep"]: row["reg"] for row in csv.DictReader(handle, delimiter=";") if row["reg"]}
    assert dict(module.DEPARTMENT_REGIONS) == reference


@given(
    st.lists(
        st.tuples(st.sampled_from(["L1", "L2"]), st.integers(0, 3), st.integers(0, 72), st.integers(1, 50)),
        min_size=1,
        max_size=60,
    )
)
def test_delay_percentiles_are_the_smallest_delays_reaching_half_and_nine_tenths(
    raw: list[tuple[str, int, int, int]],
) -> None:
    merged: dict[tuple[str, date, int], int] = {}
    for lab, d, hours, n in raw:
        key = (lab, date(2022, 1, 1) + timedelta(days=d), hours)
        merged[key] = merged.get(key, 0) + n
    rows = sorted((lab, day, hours, n) for (lab, day, hours), n in merged.items())
    per_day, per_lab = delay_percentiles(rows)

    def brute(delays: list[tuple[int, int]]) -> tuple[int, int]:
        expanded = sorted(h for h, n in delays for _ in range(n))
        return expanded[math.ceil(0.5 * len(expanded)) - 1], expanded[math.ceil(0.9 * len(expanded)) - 1]

    for lab, day in {(r[0], r[1]) for r in rows}:
        assert per_day[(lab, day)] == brute([(h, n) for la, d, h, n in rows if (la, d) == (lab, day)])
    for lab in {r[0] for r in rows}:
        assert per_lab[lab] == brute([(h, n) for la, _, h, n in rows if la == lab])


def test_the_last_three_collection_days_are_provisional() -> None:
    from services.dashboard.queries import PROVISIONAL_DAYS, is_provisional

    today = date(2022, 1, 20)
    assert PROVISIONAL_DAYS == 3
    assert [d for d in range(15, 22) if is_provisional(date(2022, 1, d), today)] == [18, 19, 20, 21]
    assert not is_provisional(date(2022, 1, 20), None)  # no reference day: nothing is


def test_names_from_the_vendored_geographic_code(tmp_path: Path) -> None:
    """`make install` writes geo-names.json from @etalab/decoupage-administratif; without it, codes."""
    from services.dashboard.names import GEO_NAMES, load_names

    names = load_names({"84": "Auvergne-Rhône-Alpes (reference)"})
    assert GEO_NAMES.exists(), "run `make install`"
    assert {d: names.department(d) for d in ("01", "2A", "2B", "69", "971", "976", "977", "978")} == {
        "01": "Ain", "2A": "Corse-du-Sud", "2B": "Haute-Corse", "69": "Rhône", "971": "Guadeloupe",
        "976": "Mayotte", "977": "Saint-Barthélemy", "978": "Saint-Martin",
    }
    assert all(names.department(d) != d for d in GEOGRAPHY.departments)
    assert names.region("84") == "Auvergne-Rhône-Alpes (reference)"  # the reference data's names first
    assert names.region("94") == "Corse" and names.region(None) is None
    missing = load_names({"11": "Île-de-France"}, tmp_path / "absent.json")
    assert (missing.department("69"), missing.region("11")) == ("69", "Île-de-France")


def test_silent_labs_carry_their_registry_name() -> None:
    as_of = datetime(2022, 1, 10, 12, tzinfo=UTC)
    found = silent_labs([("LAB-A", date(2022, 1, 5)), ("LAB-B", date(2022, 1, 6))], as_of, {"LAB-A": "Alpha"})
    assert [(s.lab, s.name) for s in found] == [("LAB-A", "Alpha"), ("LAB-B", None)]
