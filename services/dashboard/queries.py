"""Dashboard queries: small grouped reads of the aggregates, then the open-data indicator functions.

- France and regions read the rollups `dashboard_national_daily` / `dashboard_region_daily` (materialized
  views of `aggregates`, refreshed by `refresh_rollups`); departments, the map and the labs read live.
- The counts go through `services.core.domain.indicators` exactly as the open-data files do, so a
  department, region or France gives the same P, T, 7-day sums, incidence and positivity as the files.
- Delays come from the `lab_delays` histograms (whole hours, floored): a percentile is the smallest
  delay bucket whose cumulative count reaches that share of the results.
- Silent labs: `lab_daily` only knows reception *days* (UTC). A lab is silent when its last reception
  day ended at least 24 h before the reference instant, so it is certainly silent for more than 24 h;
  it is flagged between 24 h and 48 h after its last result, never too early.
- Provisional days: the last `PROVISIONAL_DAYS` collection days (today and the two before, UTC) are not
  consolidated yet: labs have 24 h to transmit and results keep arriving for a collection day during
  the next two days (median collection → validation delay 0.4 day, SPEC §1), so their P and T still rise.
- Small counts: a department with fewer than `SMALL_COUNT_P7` positive people over 7 days has a rate
  too imprecise to rank (Poisson: the 95 % interval of 20 positives is about ±45 %, of 1 it is ×0.03–×5.6).
- Lab counts (`lab_daily`, written by the worker with each upsert): `results` are the results stored for
  the first time, on their reception day (UTC), of every test kind and status: a result sent again is
  not counted again, a correction of a stored result neither; it is not T, which counts people
  (deduplicated per collection day). `positives` are those among them whose outcome was positive.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg
from sqlalchemy import Engine

from services.core.domain.indicators import (
    ALL_AGES,
    CL_AGE90,
    WINDOW_DAYS,
    DayCountRow,
    Geography,
    Series,
    geography_population,
    geography_series,
    incidence_rate,
    positivity_rate,
    sliding_indicators,
)
from services.core.domain.model import VIROLOGICAL_KINDS
from services.core.logs import get_logger
from services.dashboard.names import Names

LEVELS = ("fra", "reg", "dep")
SEXES = ("all", "F", "M")
# what each `kind` filter counts; "all" is what the open-data files count
KINDS: dict[str, list[str]] = {
    "all": sorted(k.value for k in VIROLOGICAL_KINDS), "rt-pcr": ["rt-pcr"], "antigen": ["antigen"],
}
PROVISIONAL_DAYS = 3
SMALL_COUNT_P7 = 20
INCIDENCE_THRESHOLDS = (10, 50, 150, 250, 500, 1000)
"""Per 100,000 over 7 days: Santé publique France's alert thresholds 10 / 50 / 150 / 250, and 500 / 1,000
for the 2021-2022 waves (the January 2022 peak passed 3,000)."""
MAX_AGE_WEEKS = 26
MAX_LAB_DAYS = 14  # per lab and day for 300+ labs: beyond two weeks, query it window by window
LATE_MEDIAN_HOURS = 24
SILENT_AFTER = timedelta(hours=24)

_SOURCES = {
    "fra": "dashboard_national_daily WHERE TRUE",
    "reg": "dashboard_region_daily WHERE region = %(code)s",
    "dep": "aggregates WHERE department = %(code)s",
}
_SERIES_QUERY = """
SELECT day, sex, sum(p)::int, sum(t)::int FROM {source}
AND day BETWEEN %(first)s AND %(last)s AND test_kind = ANY(%(kinds)s)
AND (%(age)s = '0' OR age_class = %(age)s)
GROUP BY day, sex
"""
_MAP_QUERY = """
SELECT department, day, sex, sum(p)::int, sum(t)::int FROM aggregates
WHERE day BETWEEN %(first)s AND %(last)s AND test_kind = ANY(%(kinds)s)
AND (%(age)s = '0' OR age_class = %(age)s)
GROUP BY department, day, sex
"""
_LAB_DELAYS = """
SELECT lab, day, delay_hours, n FROM lab_delays WHERE day BETWEEN %(first)s AND %(last)s
ORDER BY lab, day, delay_hours
"""
_AGES_QUERY = """
SELECT day, age_class, sex, sum(p)::int, sum(t)::int FROM {source}
AND day BETWEEN %(first)s AND %(last)s AND test_kind = ANY(%(kinds)s)
GROUP BY day, age_class, sex
"""
# the lab registry's public part only (the table also holds token hashes: never read them)
_LAB_NAMES = "SELECT lab_id, name FROM labs WHERE lab_id = ANY(%(labs)s)"
_LAB_DAILY = """
SELECT lab, day, results, positives FROM lab_daily WHERE day BETWEEN %(first)s AND %(last)s
"""
# every lab (a skip scan over the primary key: one index probe per lab) and its last reception day
_LAST_RECEPTIONS = """
WITH RECURSIVE labs(lab) AS (
    (SELECT lab FROM lab_daily ORDER BY lab LIMIT 1)
    UNION ALL
    SELECT (SELECT d.lab FROM lab_daily d WHERE d.lab > labs.lab ORDER BY d.lab LIMIT 1)
    FROM labs WHERE labs.lab IS NOT NULL
)
SELECT lab, (SELECT max(d.day) FROM lab_daily d WHERE d.lab = labs.lab AND d.day <= %(until)s)
FROM labs WHERE lab IS NOT NULL
"""
_REFRESH_LOCK = 0x1AB_F10_DA5  # advisory lock: one refresh at a time across dashboard replicas


log = get_logger(__name__)


class QueryError(ValueError):
    """A request that cannot be answered as asked (422)."""


@dataclass(frozen=True, slots=True)
class Filters:
    age: str = ALL_AGES
    sex: str = "all"
    kind: str = "all"

    def __post_init__(self) -> None:
        if self.age not in CL_AGE90:
            raise QueryError(f"unknown age class {self.age!r}: one of {', '.join(CL_AGE90)}")
        if self.sex not in SEXES:
            raise QueryError(f"unknown sex {self.sex!r}: one of {', '.join(SEXES)}")
        if self.kind not in KINDS:
            raise QueryError(f"unknown test kind {self.kind!r}: one of {', '.join(KINDS)}")

    def params(self) -> dict[str, Any]:
        return {"age": self.age, "kinds": KINDS[self.kind]}


@dataclass(frozen=True, slots=True)
class IndicatorDay:
    day: date
    p: int
    t: int
    p7: int
    t7: int
    incidence: float | None
    """Per 100,000 over 7 days; None with a sex filter (the reference population is not by sex)."""
    positivity: float | None
    provisional: bool
    """One of the last `PROVISIONAL_DAYS` collection days: its counts may still rise."""


@dataclass(frozen=True, slots=True)
class DepartmentWeek:
    department: str
    name: str
    region: str | None
    region_name: str | None
    p7: int
    t7: int
    incidence: float | None
    positivity: float | None
    incidence_previous_week: float | None
    incidence_change_pct: float | None
    small_count: bool
    """Fewer than `SMALL_COUNT_P7` positives over the 7 days: the rates are imprecise, never ranked first."""


@dataclass(frozen=True, slots=True)
class AgeWeek:
    """One age class over one 7-day block (blocks end on the requested day, like the 7-day incidence)."""

    first_day: date
    last_day: date
    age_class: str
    p: int
    t: int
    incidence: float | None
    positivity: float | None
    provisional: bool


@dataclass(frozen=True, slots=True)
class LabDay:
    lab: str
    name: str | None
    """From the lab registry (`labs`); None for a lab id it does not know."""
    day: date | None
    results: int
    positives: int
    median_delay_hours: int | None
    p90_delay_hours: int | None
    late: bool


@dataclass(frozen=True, slots=True)
class SilentLab:
    lab: str
    name: str | None
    last_reception_day: date
    silent_hours_at_least: int
    """From the end of the last reception day: the last result came at least that long ago."""


@dataclass(frozen=True, slots=True)
class LabReport:
    as_of: datetime
    days: list[LabDay]
    period: list[LabDay]
    """One row per lab over the whole period (delays from the summed histograms), day None."""
    silent: list[SilentLab]


@contextmanager
def connection(engine: Engine) -> Iterator[psycopg.Connection[Any]]:
    """A pooled psycopg connection, read only."""
    raw = engine.raw_connection()
    try:
        conn: psycopg.Connection[Any] = raw.driver_connection  # type: ignore[assignment]
        conn.read_only = True
        yield conn
    finally:
        raw.close()


def check_code(geography: Geography, level: str, code: str) -> None:
    if level not in LEVELS:
        raise QueryError(f"unknown level {level!r}: one of {', '.join(LEVELS)}")
    known = {"fra": ("FR",), "reg": geography.regions, "dep": geography.departments}[level]
    if code not in known:
        raise QueryError(f"unknown {level} code {code!r}")


def _series(rows: Sequence[tuple[date, str, int, int]], filters: Filters, first: date, last: date) -> Series:
    # the age filter is applied in SQL: what comes back belongs to the requested class
    age_class = "" if filters.age == ALL_AGES else filters.age
    counts: list[DayCountRow] = [(day, age_class, sex, p, t) for day, sex, p, t in rows]
    return geography_series(counts, filters.age, first, last)


def _selected(series: Series, sex: str) -> Series:
    """`series` whose p and t are those of `sex` (F women, M men, all everybody)."""
    p, t = {"all": (series.p, series.t), "F": (series.p_f, series.t_f), "M": (series.p_h, series.t_h)}[sex]
    return Series(series.p_f, series.p_h, p, series.t_f, series.t_h, t)


def indicators(
    conn: psycopg.Connection[Any], geography: Geography, level: str, code: str,
    first: date, last: date, filters: Filters, today: date | None = None,
) -> list[IndicatorDay]:
    """Per collection day from `first` to `last`: P, T, their 7-day sums, incidence, positivity, and
    whether the day is still provisional on `today` (None: none is)."""
    check_code(geography, level, code)
    start = first - timedelta(days=WINDOW_DAYS - 1)
    rows = conn.execute(
        _SERIES_QUERY.format(source=_SOURCES[level]),
        {"code": code, "first": start, "last": last, **filters.params()},
    ).fetchall()
    series = _selected(_series(rows, filters, start, last), filters.sex)
    population = geography_population(geography, level, code, filters.age)
    sliding = sliding_indicators(series, population)
    return [
        IndicatorDay(
            start + timedelta(days=i), series.p[i], series.t[i], sliding.p[i], sliding.t[i],
            sliding.incidence[i] if filters.sex == "all" else None, sliding.positivity[i],
            is_provisional(start + timedelta(days=i), today),
        )
        for i in range(WINDOW_DAYS - 1, len(series.p))
    ]


def is_provisional(day: date, today: date | None) -> bool:
    """Whether collection day `day` is one of the last `PROVISIONAL_DAYS` on `today` (or later)."""
    return today is not None and day > today - timedelta(days=PROVISIONAL_DAYS)


def age_weeks(
    conn: psycopg.Connection[Any], geography: Geography, level: str, code: str, last: date, weeks: int,
    filters: Filters, today: date | None = None,
) -> list[AgeWeek]:
    """Per age class (cl_age90, all but `0`) and 7-day block ending on `last`, going back `weeks` blocks:
    P, T, incidence per 100,000 of the class (None with a sex filter) and positivity."""
    check_code(geography, level, code)
    if not 1 <= weeks <= MAX_AGE_WEEKS:
        raise QueryError(f"weeks: between 1 and {MAX_AGE_WEEKS}")
    first = last - timedelta(days=WINDOW_DAYS * weeks - 1)
    rows = conn.execute(
        _AGES_QUERY.format(source=_SOURCES[level]),
        {"code": code, "first": first, "last": last, "kinds": KINDS[filters.kind]},
    ).fetchall()
    counts: list[DayCountRow] = [(day, age, sex, p, t) for day, age, sex, p, t in rows]
    found = []
    for age in CL_AGE90:
        if age == ALL_AGES:
            continue
        series = _selected(geography_series(counts, age, first, last), filters.sex)
        population = geography_population(geography, level, code, age)
        for w in range(weeks):
            block = slice(w * WINDOW_DAYS, (w + 1) * WINDOW_DAYS)
            p, t = sum(series.p[block]), sum(series.t[block])
            start = first + timedelta(days=w * WINDOW_DAYS)
            end = start + timedelta(days=WINDOW_DAYS - 1)
            found.append(AgeWeek(
                start, end, age, p, t,
                incidence_rate(p, population) if filters.sex == "all" else None,
                positivity_rate(p, t), is_provisional(end, today),
            ))
    return found


def department_week(
    conn: psycopg.Connection[Any], geography: Geography, day: date, filters: Filters,
    names: Names | None = None,
) -> list[DepartmentWeek]:
    """Every department on `day`: 7-day sums and rates, the incidence change from 7 days before, names
    and the small-count flag."""
    names = names or Names({}, {})
    start = day - timedelta(days=2 * WINDOW_DAYS - 1)
    rows = conn.execute(_MAP_QUERY, {"first": start, "last": day, **filters.params()}).fetchall()
    by_department: dict[str, list[tuple[date, str, int, int]]] = defaultdict(list)
    for department, day_, sex, p, t in rows:
        by_department[department].append((day_, sex, p, t))
    found = []
    for department in geography.departments:
        series = _selected(_series(by_department.get(department, []), filters, start, day), filters.sex)
        population = geography_population(geography, "dep", department, filters.age)
        sliding = sliding_indicators(series, population)
        rated = filters.sex == "all"
        now, before = sliding.incidence[-1], sliding.incidence[-1 - WINDOW_DAYS]
        change = None
        if rated and now is not None and before:
            change = round(100 * (now - before) / before, 1)
        region = geography.department_region.get(department)
        found.append(DepartmentWeek(
            department, names.department(department), region, names.region(region),
            sliding.p[-1], sliding.t[-1], now if rated else None, sliding.positivity[-1],
            before if rated else None, change, sliding.p[-1] < SMALL_COUNT_P7,
        ))
    return found


def check_period(first: date, last: date, max_days: int | None = None) -> None:
    if first > last:
        raise QueryError(f"from ({first}) is after to ({last})")
    if max_days is not None and (last - first).days + 1 > max_days:
        raise QueryError(f"at most {max_days} days at a time")


def reference_instant(last: date, now: datetime) -> datetime:
    """Silence is judged at the end of `last`, or now when `last` is today or later."""
    end = datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC)
    return min(end, now)


def silent_labs(
    last_receptions: Sequence[tuple[str, date | None]], as_of: datetime, names: dict[str, str] | None = None,
) -> list[SilentLab]:
    """Labs that reported before and whose last reception day ended at least 24 h before `as_of`."""
    names = names or {}
    found = []
    for lab, last_day in last_receptions:
        if last_day is None:
            continue
        end_of_day = datetime.combine(last_day + timedelta(days=1), time(), tzinfo=UTC)
        if end_of_day <= as_of - SILENT_AFTER:
            found.append(SilentLab(lab, names.get(lab), last_day,
                                   int((as_of - end_of_day).total_seconds() // 3600)))
    return sorted(found, key=lambda s: (s.last_reception_day, s.lab))


def lab_report(conn: psycopg.Connection[Any], first: date, last: date, now: datetime) -> LabReport:
    check_period(first, last, MAX_LAB_DAYS)
    params = {"first": first, "last": last}
    counts = {(lab, day): (n, pos) for lab, day, n, pos in conn.execute(_LAB_DAILY, params).fetchall()}
    delays, period_delays = delay_percentiles(conn.execute(_LAB_DELAYS, params, binary=True).fetchall())
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (lab, _), (n, pos) in counts.items():
        totals[lab][0] += n
        totals[lab][1] += pos
    as_of = reference_instant(last, now)
    # receptions strictly before `as_of`: at midnight, that day has not begun
    until = (as_of - timedelta(microseconds=1)).date()
    receptions = conn.execute(_LAST_RECEPTIONS, {"until": until}).fetchall()
    names = lab_names(conn, sorted({lab for lab, _ in receptions} | totals.keys()))
    return LabReport(
        as_of,
        [_lab_row(lab, names, day, counts.get((lab, day), (0, 0)), delays.get((lab, day), (None, None)))
         for lab, day in sorted(counts.keys() | delays.keys())],
        [_lab_row(lab, names, None, (n, pos), period_delays.get(lab, (None, None)))
         for lab, (n, pos) in sorted(totals.items())],
        silent_labs(receptions, as_of, names),
    )


def lab_names(conn: psycopg.Connection[Any], labs: Sequence[str]) -> dict[str, str]:
    """Names from the lab registry; none (ids shown) when this role may not read it."""
    if not labs:
        return {}
    try:
        with conn.transaction():  # a savepoint: a refused read leaves the rest of the report usable
            return dict(conn.execute(_LAB_NAMES, {"labs": list(labs)}).fetchall())
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable) as exc:
        if not _NAMES_WARNED:  # once per process, not at every rollup refresh
            _NAMES_WARNED.append(True)
            log.warning("dashboard.lab_names_unreadable", error=type(exc).__name__,
                        hint="GRANT SELECT (lab_id, name) ON labs to the dashboard's role")
        return {}


_NAMES_WARNED: list[bool] = []


Percentiles = tuple[int | None, int | None]


def _median_p90(histogram: Sequence[tuple[int, int]]) -> Percentiles:
    """The smallest delays at which half and nine tenths of the results are reached."""
    total = sum(n for _, n in histogram)
    median = p90 = None
    cumulative = 0
    for hours, n in histogram:
        cumulative += n
        if median is None and 2 * cumulative >= total:
            median = hours
        if 10 * cumulative >= 9 * total:
            p90 = hours
            break
    return median, p90


def delay_percentiles(
    rows: Sequence[tuple[str, date, int, int]],
) -> tuple[dict[tuple[str, date], Percentiles], dict[str, Percentiles]]:
    """Median and p90 delay per lab and day, and per lab over the period, from histogram rows
    (lab, day, delay_hours, n) sorted by lab, day and delay."""
    per_day: dict[tuple[str, date], Percentiles] = {}
    per_lab: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    histogram: list[tuple[int, int]] = []
    current: tuple[str, date] | None = None
    for lab, day, hours, n in rows:
        if (lab, day) != current:
            if current is not None:
                per_day[current] = _median_p90(histogram)
            current, histogram = (lab, day), []
        histogram.append((hours, n))
        per_lab[lab][hours] += n
    if current is not None:
        per_day[current] = _median_p90(histogram)
    return per_day, {lab: _median_p90(sorted(h.items())) for lab, h in per_lab.items()}


def _lab_row(
    lab: str, names: dict[str, str], day: date | None, counts: tuple[int, int], delays: tuple[Any, Any],
) -> LabDay:
    median, p90 = delays
    late = median is not None and median >= LATE_MEDIAN_HOURS
    return LabDay(lab, names.get(lab), day, counts[0], counts[1], median, p90, late)


def refresh_rollups(engine: Engine) -> bool:
    """Refresh the rollups without blocking readers; False when another replica is refreshing them."""
    raw = engine.raw_connection()
    try:
        conn: psycopg.Connection[Any] = raw.driver_connection  # type: ignore[assignment]
        conn.autocommit = True
        locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (_REFRESH_LOCK,)).fetchone()
        if not locked or not locked[0]:
            return False
        try:
            # REFRESH needs the views' owner; the dashboard's role may only run this (migration 0007)
            conn.execute("SELECT dashboard_refresh_rollups()")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_REFRESH_LOCK,))
            conn.autocommit = False
        return True
    finally:
        raw.close()
