"""Time of one open-data publication over a national-scale history.

    .venv/bin/python load_tests/bench_opendata.py [--days 800] [--seed 7]

Creates a fresh database on the configured PostgreSQL (`load_settings()`: the local stack), fills
`aggregates` by COPY with `--days` days × 104 departments × 10 age classes × sex F/M × RT-PCR/antigen
(plus unknown age, unknown sex and unknown department rows every day), then publishes the four files
into a temporary folder the way `labflow opendata publish` does. Prints the figures and writes
`load_tests/results/bench_opendata.json`; the database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

from services.core.config import load_settings
from services.core.db.engine import libpq_url
from services.core.db.migrate import upgrade
from services.core.domain.geography import AGE_CLASSES
from services.core.reference import load_geography
from services.opendata.export import export, read_history
from services.opendata.files import publish

RESULTS = Path(__file__).resolve().parent / "results" / "bench_opendata.json"
FIRST_DAY = date(2020, 5, 13)


def aggregate_lines(days: int, departments: tuple[str, ...], seed: int) -> Iterator[str]:
    """COPY text lines of `aggregates`, one chunk per day."""
    rng = random.Random(seed)
    for offset in range(days):
        day = (FIRST_DAY + timedelta(days=offset)).isoformat()
        lines = []
        for dep in departments:
            for age in AGE_CLASSES:
                for sex in ("F", "M"):
                    for kind in ("rt-pcr", "antigen"):
                        t = rng.randrange(0, 400)
                        p = t // rng.randrange(5, 40)
                        lines.append(f"{day}\t{dep}\t{age}\t{sex}\t{kind}\t{p}\t{t}\n")
            lines.append(f"{day}\t{dep}\t\tU\trt-pcr\t{rng.randrange(3)}\t{rng.randrange(3, 20)}\n")
        lines.append(f"{day}\t\t49\tF\tantigen\t{rng.randrange(10)}\t{rng.randrange(10, 200)}\n")
        yield "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=800)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    base = load_settings()
    server_url = base.require_database()
    db_name = f"labflow_bench_{uuid.uuid4().hex[:10]}"
    admin = libpq_url(server_url.rpartition("/")[0] + "/postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    database_url = server_url.rpartition("/")[0] + "/" + db_name
    try:
        upgrade(database_url)
        geography, _ = load_geography(base.reference_dir)
        started = time.perf_counter()
        with psycopg.connect(libpq_url(database_url)) as conn, conn.cursor() as cur:
            columns = "day, department, age_class, sex, test_kind, p, t"
            with cur.copy(f"COPY aggregates ({columns}) FROM STDIN") as copy:
                for chunk in aggregate_lines(args.days, geography.departments, args.seed):
                    copy.write(chunk)
            conn.commit()
            conn.execute("ANALYZE aggregates")
            counted = cur.execute("SELECT count(*) FROM aggregates").fetchone()
            assert counted is not None, "no count(*) row for aggregates"
            aggregate_rows = counted[0]
        fill_s = time.perf_counter() - started
        print(f"filled aggregates: {aggregate_rows:,} rows by COPY in {fill_s:.1f} s")

        with tempfile.TemporaryDirectory() as folder:
            settings = base.with_owner_database(database_url)
            settings = settings.model_copy(update={"opendata_dir": Path(folder)})
            now = datetime.now(UTC)
            started = time.perf_counter()
            publication = export(settings, now)
            publish_s = time.perf_counter() - started
            files = {f.latest: {"rows": f.rows, "bytes": f.bytes} for f in publication.files}
            dep_rows = files["sp-pos-quot-dep.csv"]["rows"]
            print(f"publication (query + indicators + 4 files + index): {publish_s:.2f} s, "
                  f"{publication.rows:,} rows, {dep_rows:,} department rows")
            for name, figures in files.items():
                print(f"  {name}: {figures['rows']:,} rows, {figures['bytes'] / 1e6:.1f} MB")

            # the same publication again, split into its two halves
            started = time.perf_counter()
            history = read_history(database_url, geography, now.date())
            read_s = time.perf_counter() - started
            started = time.perf_counter()
            publish(Path(folder), history, now + timedelta(minutes=1), keep_days=0)
            write_s = time.perf_counter() - started
            print(f"  of which: read + aggregate {read_s:.2f} s, write files {write_s:.2f} s")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')

    report = {
        "benchmark": "opendata publication",
        "days": args.days,
        "departments": len(geography.departments),
        "aggregate_rows": aggregate_rows,
        "fill_seconds": round(fill_s, 2),
        "publish_seconds": round(publish_s, 2),
        "read_and_aggregate_seconds": round(read_s, 2),
        "write_files_seconds": round(write_s, 2),
        "rows_total": publication.rows,
        "files": files,
        "budget_seconds": 30,
        "machine": {
            "python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()
        },
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
