"""Load profiles for the lab simulator: offered results per second as a function of time.

A profile is a piecewise-linear rate curve (results/s against seconds from the start). The simulator
turns it into send times: message n leaves when the integral of the rate reaches the results of the
messages before it plus a random share (exponential), i.e. Poisson-like arrivals whose mean follows
the curve.

`replay` scales a real day of SI-DEP: the national test count of that day (daily_national_volume.csv)
× `scale`, sent in `minutes` with an intraday shape. SI-DEP publishes daily totals only, so the shape
is an assumption: results leave labs mostly in opening hours, with a late-morning peak (morning swabs,
antigen tests) and an evening peak (PCR runs validated at the end of the day), and a trickle at night
from the large 24/7 platforms.
"""

from __future__ import annotations

import bisect
import csv
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

# share of a day's results sent in each hour (0h … 23h, Europe/Paris): an assumption, see above
HOURLY_WEIGHTS = (
    1.0, 0.7, 0.5, 0.4, 0.4, 0.6, 1.2, 2.5, 4.5, 6.0, 7.0, 7.5,
    7.0, 6.5, 6.5, 6.8, 7.2, 7.5, 7.0, 5.5, 4.0, 3.0, 2.0, 1.5,
)  # fmt: skip
RECORD_DAY = date(2022, 1, 10)
_GRID_S = 0.05


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    points: tuple[tuple[float, float], ...]
    """(seconds from the start, offered results/s), linear in between; the last point ends the run."""
    positivity: float = 0.12

    @property
    def duration_s(self) -> float:
        return self.points[-1][0]

    def rate(self, t: float) -> float:
        if t <= self.points[0][0]:
            return self.points[0][1]
        for (t0, r0), (t1, r1) in zip(self.points, self.points[1:], strict=False):
            if t <= t1:
                return r0 + (r1 - r0) * (t - t0) / (t1 - t0) if t1 > t0 else r1
        return self.points[-1][1]

    @property
    def total_results(self) -> float:
        return sum((t1 - t0) * (r0 + r1) / 2 for (t0, r0), (t1, r1) in zip(self.points, self.points[1:],
                                                                            strict=False))

    def send_times(self, results_per_message: Iterable[int], seed: int) -> Iterator[float]:
        """Send time of each message (its result count given in order) until the profile ends."""
        rng = random.Random(seed)
        steps = int(self.duration_s / _GRID_S) + 1
        cumulative = [0.0]
        for i in range(steps):
            t = i * _GRID_S
            cumulative.append(cumulative[-1] + (self.rate(t) + self.rate(t + _GRID_S)) / 2 * _GRID_S)
        target = 0.0
        for results in results_per_message:
            target += results * rng.expovariate(1.0)
            if target >= cumulative[-1]:
                return
            i = bisect.bisect_right(cumulative, target) - 1
            step = cumulative[i + 1] - cumulative[i]
            yield (i + ((target - cumulative[i]) / step if step else 0.0)) * _GRID_S


def constant(rate: float, seconds: float, name: str = "constant") -> Profile:
    return Profile(name, f"{rate:,.0f} results/s for {seconds:.0f} s", ((0.0, rate), (seconds, rate)))


def ramp(start: float, end: float, seconds: float, name: str = "ramp") -> Profile:
    return Profile(
        name, f"{start:,.0f} → {end:,.0f} results/s over {seconds:.0f} s", ((0.0, start), (seconds, end))
    )


def daily_volume(reference_dir: Path, day: date) -> tuple[int, int]:
    """(P, T) of one day of the national series."""
    with (reference_dir / "daily_national_volume.csv").open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter=";"):
            if row["jour"] == day.isoformat():
                return int(row["P"]), int(row["T"])
    raise ValueError(f"{day} is not in daily_national_volume.csv")


def replay(reference_dir: Path, scale: float, minutes: float, day: date = RECORD_DAY) -> Profile:
    """`day`'s national volume × `scale` in `minutes`, with the intraday shape above."""
    positives, tests = daily_volume(reference_dir, day)
    seconds = minutes * 60
    hour_s = seconds / 24
    total = sum(HOURLY_WEIGHTS)
    # each hour's mean rate at its middle, flat to the day's edges: integrates to the day's volume
    # up to the small error of linear interpolation
    middles = [((h + 0.5) * hour_s, tests * scale * w / total / hour_s) for h, w in enumerate(HOURLY_WEIGHTS)]
    points = ((0.0, middles[0][1]), *middles, (seconds, middles[-1][1]))
    return Profile(
        "replay",
        f"{day}: {tests:,} tests × {scale:g} = {tests * scale:,.0f} results in {minutes:g} min "
        f"({1440 / minutes:,.0f}× faster than real time), intraday shape",
        points,
        positivity=positives / tests,
    )
