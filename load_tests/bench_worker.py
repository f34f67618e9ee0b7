"""Results per second from Kafka into PostgreSQL, person deduplication on, one worker process.

    .venv/bin/python -m load_tests.bench_worker [--results 100000] [--persons 40000] [--workers 1]
                                                [--consumers 2]

Fills a fresh topic with result versions (re-sends, corrections, cancellations; several results per
person over 120 days), then times `labflow worker` processes (one consumer group) from their start
until the offsets they store in PostgreSQL reach the end of every partition. Kafka and PostgreSQL
run on the same machine: the CPU seconds of the workers, of PostgreSQL (server and backends) and of
Kafka over the run are reported per 1,000 results, so the figure can be compared across machines and
where the time goes is visible (the worker waits for PostgreSQL in each transaction).
Writes `load_tests/results/bench_worker.json`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import psycopg
from confluent_kafka import Producer

from labflow_testkit.infrastructure import isolated_settings, settings_env
from labflow_testkit.processes import ServiceProcess, free_port, http_status, wait_until
from labflow_testkit.results import full_recomputation, random_result_stream, stored_aggregates
from services.core.config import load_settings
from services.core.db.engine import libpq_url
from services.core.kafka import producer_config
from services.stack import local
from services.stack.kafka import LocalKafka
from services.stack.postgres import LocalPostgres

RESULTS = Path(__file__).resolve().parent / "results" / "bench_worker.json"


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their children alive now."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:  # a backend or child that ended between listing and reading
            continue
    return total


def owned_partitions(log: str, topic: str) -> set[int]:
    """The partitions of `topic` a worker process holds at the end, from its rebalance log lines."""
    owned: set[int] = set()
    for line in log.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("topic") != topic:
            continue
        if event.get("event") == "partitions assigned":
            owned |= set(event.get("partitions", []))
        elif event.get("event") in ("partitions revoked", "partitions lost"):
            owned -= set(event.get("partitions", []))
    return owned


def stored_positions(conn: psycopg.Connection[tuple[Any, ...]], topic: str) -> dict[int, int]:
    """partition -> results stored so far (the topic is fresh: its next offset)."""
    rows = conn.execute(
        "SELECT partition, next_offset FROM consumer_offsets WHERE topic = %s", (topic,)
    ).fetchall()
    return {int(p): int(o) for p, o in rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--persons", type=int, default=40_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes in one consumer group")
    parser.add_argument("--consumers", type=int, default=2,
                        help="results consumers (threads) per worker process (LABFLOW_WORKER_CONSUMERS)")
    args = parser.parse_args()

    info = local.up(load_settings())
    with isolated_settings(info.kafka_bootstrap, info.database_url, partitions=args.partitions) as settings:
        settings = settings.model_copy(update={"worker_batch_size": args.batch_size})
        stream = random_result_stream(args.results, persons=args.persons, seed=5)
        producer = Producer(producer_config(settings, **{"linger.ms": 20}))
        for r in stream:
            producer.produce(
                settings.topics.results, r.model_dump_json().encode(), r.patient_pseudonym.encode()
            )
            producer.poll(0)
        producer.flush(120)
        print(f"{len(stream):,} result versions in {settings.topics.results}")

        dsn = libpq_url(settings.require_database())
        with tempfile.TemporaryDirectory() as logs:
            ports = [free_port() for _ in range(args.workers)]
            started = time.perf_counter()
            workers = [
                ServiceProcess(
                    "worker",
                    settings_env(
                        settings,
                        LABFLOW_WORKER_OPS_PORT=str(port),
                        LABFLOW_WORKER_CONSUMERS=str(args.consumers),
                        LABFLOW_LOG_LEVEL="INFO",  # rebalances only: which worker holds which partitions
                    ),
                    Path(logs),
                )
                for port in ports
            ]
            for url in [f"http://127.0.0.1:{port}/readyz" for port in ports]:
                wait_until(partial(lambda u: http_status(u) == 200, url), interval_s=0.02)
            ready = time.perf_counter()
            stack_settings = load_settings()
            servers = {
                "postgresql": [pid for pid in [LocalPostgres(stack_settings).process.pid()] if pid],
                "kafka": [pid for node in LocalKafka(stack_settings).nodes if (pid := node.process.pid())],
            }
            worker_pids = [w.proc.pid for w in workers]
            cpu_before = {"worker": cpu_s(worker_pids), **{k: cpu_s(v) for k, v in servers.items()}}
            worker_cpu_before = [cpu_s([pid]) for pid in worker_pids]
            with psycopg.connect(dsn, autocommit=True) as conn:

                def consumed() -> int:
                    query = "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"
                    row = conn.execute(query).fetchone()
                    return int(row[0]) if row else 0

                consumed_at_ready = consumed()
                at_ready = stored_positions(conn, settings.topics.results)
                while consumed() < len(stream):
                    time.sleep(0.2)
                    for worker in workers:
                        if worker.proc.poll() is not None:
                            raise SystemExit(f"worker exited:\n{worker.log()}")
            elapsed = time.perf_counter() - started
            cpu_after = {"worker": cpu_s(worker_pids), **{k: cpu_s(v) for k, v in servers.items()}}
            worker_cpu = [cpu_s([pid]) - before
                          for pid, before in zip(worker_pids, worker_cpu_before, strict=True)]
            partitions = [owned_partitions(w.log_path.read_text(errors="replace"), settings.topics.results)
                          for w in workers]
            for worker in workers:
                worker.stop()
        url = settings.require_database()
        consistent = stored_aggregates(url) == full_recomputation(url)
        with psycopg.connect(dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM results").fetchone()
            cases = conn.execute("SELECT count(*) FROM cases").fetchone()
            at_end = stored_positions(conn, settings.topics.results)
    rate = len(stream) / elapsed
    after_ready = len(stream) - consumed_at_ready
    if after_ready <= 0:
        raise SystemExit("every result was stored before the workers reported ready: give more --results")
    steady = after_ready / (elapsed - (ready - started))
    print(
        f"worker: {len(stream):,} results in {elapsed:.1f} s (process start included) = {rate:,.0f} results/s"
    )
    print(f"        {steady:,.0f} results/s once it had its partitions ({ready - started:.1f} s start-up)")
    cpu_ms = {k: round((cpu_after[k] - cpu_before[k]) * 1e6 / after_ready, 1) for k in cpu_before}
    print("CPU ms per 1,000 results (after start-up): " + ", ".join(f"{k} {v}" for k, v in cpu_ms.items()))
    # per process: its CPU after start-up against the results its partitions stored meanwhile (the
    # partitions it held at the end: they settle once every worker is ready; a move after that blurs it)
    split: list[dict[str, object]] = []
    for owned, cpu in zip(partitions, worker_cpu, strict=True):
        held = sum(at_end.get(p, 0) - at_ready.get(p, 0) for p in owned)  # stored after start-up
        split.append({
            "partitions": sorted(owned),
            "results": held,
            "cpu_s": round(cpu, 2),
            "cpu_ms_per_1000_results": round(cpu * 1e6 / held, 1) if held > 0 else None,
        })
    if len(split) > 1:
        for i, w in enumerate(split):
            print(f"worker {i}: partitions {w['partitions']}, {w['results']} results, {w['cpu_s']} CPU s, "
                  f"{w['cpu_ms_per_1000_results']} CPU ms per 1,000 of its results")
    print(
        f"stored {stored[0] if stored else 0:,} rows, {cases[0] if cases else 0:,} cases; "
        f"aggregates equal a full recomputation: {consistent}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "results": len(stream),
                "persons": args.persons,
                "partitions": args.partitions,
                "batch_size": args.batch_size,
                "workers": args.workers,
                "consumers_per_worker": args.consumers,
                "elapsed_s": round(elapsed, 2),
                "results_per_second": round(rate),
                "results_per_second_after_startup": round(steady),
                "startup_s": round(ready - started, 2),
                "cpu_ms_per_1000_results": cpu_ms,
                "per_worker": split,
                "aggregates_consistent": consistent,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
