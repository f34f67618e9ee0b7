"""Dashboard API response times over 3 years of national data.

    .venv/bin/python load_tests/bench_dashboard.py [--days 1096] [--labs 300] [--runs 15]

Creates a fresh database on the configured PostgreSQL (`load_settings()`: the local stack) and fills,
with set-based INSERTs: `aggregates` with every day × 104 departments (plus unknown) × 10 age classes
(plus unknown) × sex F/M/U × RT-PCR/antigen; `lab_daily` for `--labs` labs every day; `lab_delays`
with about 24 one-hour buckets (0–47 h) per lab and day. Then refreshes the dashboard rollups and
times each endpoint in process through the FastAPI app (HTTP stack, JSON/CSV included, no network):
median, 95th percentile and worst of `--runs` calls after one warm-up. Prints the figures and writes
`load_tests/results/bench_dashboard.json`; the database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import psycopg
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.core.config import load_settings
from services.core.db.engine import libpq_url, make_engine
from services.core.db.migrate import upgrade
from services.core.reference import load_geography
from services.dashboard.app import build_app
from services.dashboard.queries import refresh_rollups

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_dashboard.json")
FIRST_DAY = date(2020, 5, 13)
BUDGET_MS = 200
TOKEN = "bench"

FILL_AGGREGATES = """
INSERT INTO aggregates (day, department, age_class, sex, test_kind, p, t)
SELECT day, dep, age, sex, kind, t / (4 + abs(hashtext(dep || day::text)) %% 30), t
FROM (
    SELECT d::date AS day, dep, age, sex, kind,
           abs(hashtext(dep || d::text || age || sex || kind))
               %% (CASE WHEN dep = '' OR age = '' OR sex = 'U' THEN 8 ELSE 400 END) AS t
    FROM generate_series(%(first)s::date, %(last)s::date, '1 day') AS d,
         unnest(%(departments)s::text[]) AS dep, unnest(%(ages)s::text[]) AS age,
         unnest(ARRAY['F', 'M', 'U']) AS sex, unnest(ARRAY['rt-pcr', 'antigen']) AS kind
) AS cells
"""
FILL_LAB_DAILY = """
INSERT INTO lab_daily (lab, day, results, positives)
SELECT lab, d::date, n, n / 8 FROM (
    SELECT 'LAB-' || lpad(i::text, 4, '0') AS lab, d, 50 + abs(hashtext(i::text || d::text)) %% 2000 AS n
    FROM generate_series(1, %(labs)s) AS i, generate_series(%(first)s::date, %(last)s::date, '1 day') AS d
    -- a few labs stopped reporting 3 days before the end
    WHERE NOT (i %% 97 = 0 AND d > %(last)s::date - 3)
) AS labs
"""
FILL_LAB_DELAYS = """
INSERT INTO lab_delays (lab, day, delay_hours, n)
SELECT lab, day, h, 1 + abs(hashtext(lab || day::text || h::text)) %% 40
FROM lab_daily, generate_series(0, 47) AS h
WHERE abs(hashtext(lab || day::text || h::text)) %% 2 = 0
"""


def timed(client: TestClient, path: str, params: dict[str, str], runs: int) -> dict[str, float | int]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    first = client.get(path, params=params, headers=headers)
    assert first.status_code == 200, first.text
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path, params=params, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 1),
        "max_ms": round(times[-1], 1),
        "bytes": len(first.content),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=1096)
    parser.add_argument("--labs", type=int, default=300)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    base = load_settings()
    server_url = base.require_database()
    db_name = f"labflow_bench_dashboard_{uuid.uuid4().hex[:8]}"
    admin = libpq_url(server_url.rpartition("/")[0] + "/postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    database_url = server_url.rpartition("/")[0] + "/" + db_name
    last = FIRST_DAY + timedelta(days=args.days - 1)
    figures: dict[str, object] = {}
    try:
        upgrade(database_url)
        geography, _ = load_geography(base.reference_dir)
        params = {"first": FIRST_DAY, "last": last, "labs": args.labs,
                  "departments": [*geography.departments, ""],
                  "ages": ["09", "19", "29", "39", "49", "59", "69", "79", "89", "90", ""]}
        started = time.perf_counter()
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            for sql in (FILL_AGGREGATES, FILL_LAB_DAILY, FILL_LAB_DELAYS):
                conn.execute(sql, params)
            for table in ("aggregates", "lab_daily", "lab_delays"):
                conn.execute(f"VACUUM ANALYZE {table}")
            sizes: dict[str, int] = {}
            for table in ("aggregates", "lab_daily", "lab_delays"):
                counted = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                assert counted is not None, f"no count(*) row for {table}"
                sizes[table] = counted[0]
        fill_s = time.perf_counter() - started
        print(f"filled in {fill_s:.0f} s: " + ", ".join(f"{t} {n:,} rows" for t, n in sizes.items()))

        engine = make_engine(database_url, pool_size=4)
        started = time.perf_counter()
        refresh_rollups(engine)
        refresh_s = time.perf_counter() - started
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            for view in ("dashboard_region_daily", "dashboard_national_daily"):
                conn.execute(f"VACUUM ANALYZE {view}")
        print(f"rollups refreshed (CONCURRENTLY) in {refresh_s:.1f} s")

        settings = base.with_owner_database(database_url).model_copy(
            update={"dashboard_tokens": SecretStr(TOKEN)}
        )
        client = TestClient(build_app(settings, engine, clock=lambda: datetime.combine(
            last, datetime.min.time(), tzinfo=UTC) + timedelta(hours=15)))
        whole = {"from": FIRST_DAY.isoformat(), "to": last.isoformat()}
        quarter = {"from": (last - timedelta(days=89)).isoformat(), "to": last.isoformat()}
        cases: list[tuple[str, str, dict[str, str]]] = [
            ("indicators France, 3 years", "/api/v1/indicators", {"level": "fra", **whole}),
            ("indicators France, 3 years, CSV", "/api/v1/indicators",
             {"level": "fra", **whole, "format": "csv"}),
            ("indicators France, 90 days, women 20-29 antigen", "/api/v1/indicators",
             {"level": "fra", **quarter, "age": "29", "sex": "F", "kind": "antigen"}),
            ("indicators region 84 (12 departments), 3 years", "/api/v1/indicators",
             {"level": "reg", "code": "84", **whole}),
            ("indicators region 76, 3 years, 60-69", "/api/v1/indicators",
             {"level": "reg", "code": "76", **whole, "age": "69"}),
            ("indicators department 75, 3 years", "/api/v1/indicators",
             {"level": "dep", "code": "75", **whole}),
            ("indicators department 13, 3 years, men RT-PCR", "/api/v1/indicators",
             {"level": "dep", "code": "13", **whole, "sex": "M", "kind": "rt-pcr"}),
            ("map (104 departments, week on week)", "/api/v1/map", {"day": last.isoformat()}),
            ("map, CSV, 80-89", "/api/v1/map", {"day": last.isoformat(), "age": "89", "format": "csv"}),
            ("labs reporting, 7 days", "/api/v1/labs/reporting",
             {"from": (last - timedelta(days=6)).isoformat(), "to": last.isoformat()}),
            ("labs reporting, 14 days (the maximum)", "/api/v1/labs/reporting",
             {"from": (last - timedelta(days=13)).isoformat(), "to": last.isoformat()}),
            ("labs reporting, 7 days, CSV", "/api/v1/labs/reporting",
             {"from": (last - timedelta(days=6)).isoformat(), "to": last.isoformat(), "format": "csv"}),
            ("meta (filters, data bounds)", "/api/v1/meta", {}),
        ]
        endpoints = {}
        for name, path, query in cases:
            endpoints[name] = result = timed(client, path, query, args.runs)
            flag = "" if result["p95_ms"] <= BUDGET_MS else f"  ABOVE {BUDGET_MS} ms"
            print(f"  {name:52s} median {result['median_ms']:6.1f} ms  p95 {result['p95_ms']:6.1f} ms  "
                  f"max {result['max_ms']:6.1f} ms  {result['bytes'] / 1000:7.1f} kB{flag}")
        engine.dispose()
        figures = {"rows": sizes, "fill_seconds": round(fill_s, 1),
                   "rollup_refresh_seconds": round(refresh_s, 2), "endpoints": endpoints}
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')

    report = {
        "benchmark": "dashboard API", "days": args.days, "first_day": FIRST_DAY.isoformat(),
        "last_day": last.isoformat(), "labs": args.labs, "runs": args.runs, "budget_ms": BUDGET_MS,
        **figures,
        "machine": {
            "python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()
        },
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
