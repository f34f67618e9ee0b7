"""A realistic epidemic history for the demo: the last N collection days, straight onto the results topic.

Why not through the gateway over MLLP: a gateway stamps `received_at` with the time it receives, so a
history sent today would show every result as received today, weeks after collection — the dashboard's
lab reporting (delays, late and silent labs, reception days) would be nonsense, and every lab "late".
And at ≈ 2,000 ORU^R01 per second through parse + normalize on this machine, minutes, not seconds.

So each historical test is still a real ORU^R01 message (`oru.build_oru_r01`), normalized by the
gateway's own code (`normalize_oru`: parsing, validation, LOINC → test kind, residence → department
and region, age class, keyed pseudonym of the INS or identity traits, sealed identity), with
`received_at` set to when a lab would have sent it (minutes to hours after validation, a few labs a
day or more late); the canonical results go onto `lab.results.v1` keyed by pseudonym, exactly as the
gateway publishes them, and the real worker stores them (person deduplication, aggregates, cases).
Not written: the raw topic (these payloads were never received by a gateway) — there is nothing to
replay from it.

The wave: the national daily volumes of the reference series (`daily_national_volume.csv`, default the
90 days ending 2022-02-20: the Omicron wave rising, peaking, falling), mapped onto the last N days
(the last one yesterday), scaled so the busiest day has `peak` tests, with the day's positivity P/T.
Residences are drawn by department population; each department has its own intensity and a lag of a
few days; positivity varies by age class; some people are tested again within days.
"""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.domain.geography import department_from_postal_code
from services.core.domain.model import PARIS, Transport
from services.core.kafka import producer_config
from services.core.reference import load_reference
from services.gateway.bootstrap import identity_protector
from services.gateway.hl7.normalize import normalize_oru
from services.simulator.oru import Patient, build_oru_r01, random_order, random_patient

REFERENCE_END = date(2022, 2, 20)
DEFAULT_DAYS = 90
DEFAULT_PEAK = 500
RETEST_SHARE = 0.12
"""Share of tests taken by someone already tested in the previous two weeks (contacts, confirmations)."""
AGE_POSITIVITY = {  # relative positivity by age at collection (shape of the 2022 Omicron wave)
    0: 0.85, 10: 1.25, 20: 1.3, 30: 1.15, 40: 1.05, 50: 0.9, 60: 0.75, 70: 0.7, 80: 0.8, 90: 0.9,
}


@dataclass(frozen=True, slots=True)
class WaveDay:
    day: date
    tests: int
    positivity: float


def national_series(reference_dir: Path) -> dict[date, tuple[int, int]]:
    """`daily_national_volume.csv`: day → (P, T)."""
    with (reference_dir / "daily_national_volume.csv").open(encoding="utf-8", newline="") as handle:
        return {date.fromisoformat(r["jour"]): (int(r["P"]), int(r["T"]))
                for r in csv.DictReader(handle, delimiter=";")}


def wave(reference_dir: Path, days: int, peak: int, today: date, end: date = REFERENCE_END) -> list[WaveDay]:
    """The `days` reference days ending on `end`, onto the `days` days ending yesterday, peak = `peak`.

    `end` moves back to yesterday's weekday: the reference's weekly rhythm (few tests on Sundays) stays
    on the right days of the week.
    """
    series = national_series(reference_dir)
    yesterday = today - timedelta(days=1)
    end -= timedelta(days=(end.weekday() - yesterday.weekday()) % 7)
    window = [end - timedelta(days=days - 1 - i) for i in range(days)]
    busiest = max(series[d][1] for d in window)
    return [
        WaveDay(today - timedelta(days=days - i), max(1, round(series[d][1] * peak / busiest)),
                series[d][0] / series[d][1])
        for i, d in enumerate(window)
    ]


def _age_factor(patient: Patient, day: date) -> float:
    years = (day - patient.birth_date).days // 365
    return AGE_POSITIVITY[min(years // 10 * 10, 90)]


@dataclass
class Backfill:
    days: int
    tests: int = 0
    results: int = 0
    refused: int = 0
    first_day: date | None = None
    last_day: date | None = None
    generate_s: float = 0.0
    store_s: float = 0.0
    tag: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "days": self.days, "first_day": str(self.first_day), "last_day": str(self.last_day),
            "tests": self.tests, "results": self.results, "refused": self.refused,
            "generate_s": round(self.generate_s, 2), "store_s": round(self.store_s, 2),
        }


def history_messages(
    wave_days: list[WaveDay], labs: list[str], seed: int, tag: str, now: datetime
) -> Iterator[tuple[datetime, bytes]]:
    """(received_at, ORU^R01) for every historical test, day by day."""
    rng = random.Random(seed)
    departments = sorted({dep for dep, _ in load_reference().population})
    intensity = {dep: math.exp(rng.gauss(0, 0.3)) for dep in departments}  # each its own wave height …
    lag = {dep: rng.randint(-6, 6) for dep in departments}  # … and timing
    lab_weights = [1 / (k + 1) ** 0.8 for k in range(len(labs))]
    late_labs = set(rng.sample(labs, max(1, len(labs) // 15)))
    by_day = {w.day: w for w in wave_days}
    recent: list[tuple[date, Patient]] = []
    serial = 0
    for w in wave_days:
        recent = [(d, p) for d, p in recent if (w.day - d).days <= 14]
        for _ in range(w.tests):
            if recent and rng.random() < RETEST_SHARE:
                patient = rng.choice(recent)[1]
            else:
                patient = random_patient(rng, today=w.day)
                recent.append((w.day, patient))
            department = department_from_postal_code(patient.postal_code or "") or ""
            shifted = by_day.get(w.day - timedelta(days=lag.get(department, 0)), w)
            positivity = min(
                0.6, shifted.positivity * intensity.get(department, 1.0) * _age_factor(patient, w.day)
            )
            # collected in opening hours (Paris), validated 15 min (antigen) to 30 h (RT-PCR) later
            opening = datetime.combine(w.day, datetime.min.time(), PARIS).astimezone(UTC)
            collected = opening + timedelta(minutes=rng.randrange(7 * 60, 19 * 60))
            lab = rng.choices(labs, weights=lab_weights)[0]
            order = random_order(rng, collected, observations=rng.choice((1, 1, 1, 1, 2, 3)),
                                 positivity=positivity)
            pcr = order.observations[0].loinc not in ("94558-4", "96119-3", "97097-0")
            # RT-PCR: median 8 h (SpF, January 2022: median collection → validation 0.4 day)
            if pcr:
                turnaround = min(48 * 60.0, rng.lognormvariate(math.log(8 * 60), 0.6))
            else:
                turnaround = rng.uniform(15, 60)
            validated = collected + timedelta(minutes=turnaround)
            delay = timedelta(minutes=rng.lognormvariate(3, 1))  # LIS → platform, median 20 min
            if lab in late_labs and rng.random() < 0.5:
                delay += timedelta(hours=rng.randrange(24, 72))
            received = min(validated + delay, now - timedelta(minutes=1))
            validated = min(validated, received)
            serial += 1
            order = replace(
                order, specimen_id=f"{tag}{serial:08d}", collection_time=collected,
                observations=[replace(o, result_time=validated) for o in order.observations],
            )
            yield received, build_oru_r01(lab, f"{tag}{serial:08d}", [(patient, [order])],
                                          version=rng.choice(("2.5.1", "2.5.1", "2.5")))


def stored_count(settings: Settings, tag: str) -> int:
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        row = conn.execute("SELECT count(*) FROM results WHERE specimen_id LIKE %s", (f"{tag}%",)).fetchone()
    return int(row[0]) if row else 0


def backfill(
    settings: Settings, *, labs: list[str], days: int = DEFAULT_DAYS, peak: int = DEFAULT_PEAK,
    seed: int = 2022, tag: str | None = None, wait_s: float = 300.0, now: datetime | None = None,
) -> Backfill:
    """Put `days` days of history on the results topic, then wait until the worker stored it all.

    Specimen ids start with `tag`, by default one of the seed and the first day: the same history
    backfilled twice the same day has the same result ids, which the worker upserts — nothing doubles.
    """
    from confluent_kafka import Producer

    now = now or datetime.now(UTC)
    wave_days = wave(settings.reference_dir, days, peak, now.astimezone(PARIS).date())
    tag = tag or f"H{seed % 100:02d}{wave_days[0].day:%y%m%d}"
    summary = Backfill(days, first_day=wave_days[0].day, last_day=wave_days[-1].day, tag=tag)
    protector = identity_protector(settings)
    department_region = load_reference(settings.reference_dir).department_region
    producer = Producer(producer_config(settings, **{"linger.ms": 20, "batch.num.messages": 10_000}))
    topic = settings.topics.results
    started = time.monotonic()
    for received, payload in history_messages(wave_days, labs, seed, tag, now):
        normalized = normalize_oru(payload, received_at=received, transport=Transport.MLLP,
                                   protector=protector, now=now, department_region=department_region)
        summary.tests += 1
        if normalized.ack_code != "AA":
            summary.refused += 1
            continue
        for result in normalized.results:
            while True:
                try:
                    producer.produce(
                        topic, result.model_dump_json().encode(), result.patient_pseudonym.encode()
                    )
                    break
                except BufferError:  # the local queue is full: let the broker catch up
                    producer.poll(0.1)
            summary.results += 1
        producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("Kafka did not confirm every historical result")
    summary.generate_s = time.monotonic() - started
    deadline = time.monotonic() + wait_s
    while stored_count(settings, tag) < summary.results:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker stored {stored_count(settings, tag)} of {summary.results} "
                               f"historical results within {wait_s:.0f} s")
        time.sleep(0.5)
    summary.store_s = time.monotonic() - started
    return summary
