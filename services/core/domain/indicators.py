"""SI-DEP indicators (SPEC §7): daily P/T per geography × age class × sex, 7-day sliding rates. Pure.

The open-data files and the dashboard both build on `build_history`, so they give the same numbers:

- input: aggregate counts `(day, department, age_class, sex, p, t)` already summed over test kinds,
  with '' for an unknown department or age class and sex 'F', 'M' or 'U';
- a count whose department is unknown (or not in the reference) appears only in the national series;
  one whose age class is unknown appears only in the all-ages (`0`) series;
- `p_f`/`p_h` (women/men) leave out sex 'U', which still counts in `p`/`t`;
- departments roll up into regions (975, 977 and 978 belong to none) and everything into France;
- every day from `first_day` to `last_day` has a value, zeros included.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, timedelta
from itertools import accumulate

from services.core.domain.geography import AGE_CLASSES

ALL_AGES = "0"
CL_AGE90: tuple[str, ...] = (*AGE_CLASSES, ALL_AGES)
"""cl_age90 codes in the order of the published files: the ten classes, then all ages."""
FRANCE = "FR"
UNKNOWN = ""
WINDOW_DAYS = 7
INDICATOR_DECIMALS = 2

CountRow = tuple[date, str, str, str, int, int]
"""(day, department, age_class, sex, p, t): one row of the `aggregates` table summed over test kinds."""


@dataclass(frozen=True, slots=True)
class Geography:
    departments: tuple[str, ...]
    """Department codes in file order (every department of the reference population)."""
    regions: tuple[str, ...]
    department_region: Mapping[str, str]
    """Department → region; departments without a region are absent."""
    population: Mapping[tuple[str, str], float]
    """(department, cl_age90) → reference population, `0` included."""

    @classmethod
    def from_reference(
        cls,
        department_region: Mapping[str, str],
        population: Mapping[tuple[str, str], float],
        regions: Sequence[str],
    ) -> Geography:
        departments = tuple(dict.fromkeys(dep for dep, _ in population))
        return cls(departments, tuple(regions), dict(department_region), dict(population))


@dataclass(frozen=True, slots=True)
class Series:
    """Daily values of one geography and age class, index 0 = `History.first_day`."""

    p_f: list[int]
    p_h: list[int]
    p: list[int]
    t_f: list[int]
    t_h: list[int]
    t: list[int]

    @classmethod
    def zeros(cls, length: int) -> Series:
        return cls(*([0] * length for _ in range(6)))


_SERIES_FIELDS = tuple(f.name for f in fields(Series))


def sum_series(parts: Sequence[Series], length: int) -> Series:
    """Day-by-day sum of `parts` (zeros when there is none)."""
    if not parts:
        return Series.zeros(length)
    return Series(*(list(map(sum, zip(*(getattr(s, name) for s in parts), strict=True)))
                    for name in _SERIES_FIELDS))


@dataclass(frozen=True, slots=True)
class Level:
    """One geographic level: a series and a population per (code, cl_age90), for every code and class."""

    codes: tuple[str, ...]
    series: dict[tuple[str, str], Series]
    population: dict[tuple[str, str], float]


@dataclass(frozen=True, slots=True)
class History:
    first_day: date
    last_day: date
    departments: Level
    regions: Level
    france: Level

    @property
    def length(self) -> int:
        return (self.last_day - self.first_day).days + 1

    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=i) for i in range(self.length)]


def build_history(
    counts: Iterable[CountRow], geography: Geography, first_day: date, last_day: date
) -> History:
    """Daily series of every department, region and France from `first_day` to `last_day` (inclusive).

    Counts outside that range are ignored.
    """
    length = (last_day - first_day).days + 1
    if length < 1:
        raise ValueError(f"last_day {last_day} is before first_day {first_day}")
    day_index = {first_day + timedelta(days=i): i for i in range(length)}
    ages = (*AGE_CLASSES, UNKNOWN)
    # department or age '' = unknown; cells[(dep, age)] accumulates the raw counts
    cells = {(dep, age): Series.zeros(length) for dep in (*geography.departments, UNKNOWN) for age in ages}
    known_ages = frozenset(AGE_CLASSES)
    for day, department, age_class, sex, p, t in counts:
        i = day_index.get(day)
        if i is None:
            continue
        if age_class not in known_ages:
            age_class = UNKNOWN
        cell = cells.get((department, age_class)) or cells[(UNKNOWN, age_class)]
        cell.p[i] += p
        cell.t[i] += t
        if sex == "F":
            cell.p_f[i] += p
            cell.t_f[i] += t
        elif sex == "M":
            cell.p_h[i] += p
            cell.t_h[i] += t

    dep_series: dict[tuple[str, str], Series] = {}
    for dep in geography.departments:
        for age in AGE_CLASSES:
            dep_series[(dep, age)] = cells[(dep, age)]
        dep_series[(dep, ALL_AGES)] = sum_series([cells[(dep, age)] for age in ages], length)
    departments = Level(
        geography.departments, dep_series,
        {(dep, age): geography.population[(dep, age)] for dep in geography.departments for age in CL_AGE90},
    )

    members = {reg: [d for d in geography.departments if geography.department_region.get(d) == reg]
               for reg in geography.regions}
    regions = Level(
        geography.regions,
        {(reg, age): sum_series([dep_series[(d, age)] for d in members[reg]], length)
         for reg in geography.regions for age in CL_AGE90},
        {(reg, age): math.fsum(geography.population[(d, age)] for d in members[reg])
         for reg in geography.regions for age in CL_AGE90},
    )

    france_series = {
        age: sum_series([*(dep_series[(d, age)] for d in geography.departments), cells[(UNKNOWN, age)]],
                        length)
        for age in AGE_CLASSES
    }
    france_series[ALL_AGES] = sum_series(
        [*(dep_series[(d, ALL_AGES)] for d in geography.departments), *(cells[(UNKNOWN, a)] for a in ages)],
        length,
    )
    france = Level(
        (FRANCE,),
        {(FRANCE, age): s for age, s in france_series.items()},
        {(FRANCE, age): math.fsum(geography.population[(d, age)] for d in geography.departments)
         for age in CL_AGE90},
    )
    return History(first_day, last_day, departments, regions, france)


def sliding_sum(values: Sequence[int], window: int = WINDOW_DAYS) -> list[int]:
    """Sum over each day and the `window - 1` days before it (fewer at the start of the series)."""
    totals = [0, *accumulate(values)]
    return [totals[i + 1] - totals[max(i + 1 - window, 0)] for i in range(len(values))]


def incidence_rate(positives: int, population: float) -> float | None:
    """Positives per 100,000 inhabitants, rounded to `INDICATOR_DECIMALS`."""
    if population <= 0:
        return None
    return round(100_000 * positives / population, INDICATOR_DECIMALS)


def positivity_rate(positives: int, tested: int) -> float | None:
    """Percentage of people tested who were positive; None when nobody was tested."""
    if tested == 0:
        return None
    return round(100 * positives / tested, INDICATOR_DECIMALS)


@dataclass(frozen=True, slots=True)
class SlidingIndicators:
    """Over the `window` days ending on each day; only days with a complete window are meaningful."""

    p: list[int]
    t: list[int]
    incidence: list[float | None]
    positivity: list[float | None]


def sliding_indicators(series: Series, population: float, window: int = WINDOW_DAYS) -> SlidingIndicators:
    p, t = sliding_sum(series.p, window), sliding_sum(series.t, window)
    return SlidingIndicators(
        p, t,
        [incidence_rate(v, population) for v in p],
        [positivity_rate(pv, tv) for pv, tv in zip(p, t, strict=True)],
    )


def is_small_count(value: int, threshold: int) -> bool:
    """Whether a count must be masked: 1 ≤ value < threshold (0 stays visible; threshold 0 = off)."""
    return 0 < value < threshold


DayCountRow = tuple[date, str, str, int, int]
"""(day, age_class, sex, p, t): counts of one geography, already summed over its departments and kinds."""


def geography_series(counts: Iterable[DayCountRow], age: str, first_day: date, last_day: date) -> Series:
    """The series of cl_age90 `age` of one geography from its own counts, as `build_history` builds it.

    `ALL_AGES` takes every count (unknown age classes included); a class takes only its own counts.
    Which departments belong to the geography is the caller's part: the department itself, those of the
    region, or every count at all (unknown and unreferenced departments included) for France.
    """
    length = (last_day - first_day).days + 1
    series = Series.zeros(length)
    for day, age_class, sex, p, t in counts:
        i = (day - first_day).days
        if not 0 <= i < length or (age != ALL_AGES and age_class != age):
            continue
        series.p[i] += p
        series.t[i] += t
        if sex == "F":
            series.p_f[i] += p
            series.t_f[i] += t
        elif sex == "M":
            series.p_h[i] += p
            series.t_h[i] += t
    return series


def region_departments(geography: Geography, region: str) -> list[str]:
    return [d for d in geography.departments if geography.department_region.get(d) == region]


def geography_population(geography: Geography, level: str, code: str, age: str) -> float:
    """Reference population of a department (`dep`), region (`reg`) or France (`fra`), as in the files."""
    if level == "dep":
        return geography.population[(code, age)]
    members = region_departments(geography, code) if level == "reg" else geography.departments
    return math.fsum(geography.population[(d, age)] for d in members)
