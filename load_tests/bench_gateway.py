"""Gateway round trips: many persistent MLLP connections, each waiting for its ACK (AA only after
Kafka confirmed the write), against a real `labflow gateway` process.

    .venv/bin/python -m load_tests.bench_gateway [--connections 100] [--seconds 20] [--rate 0]
        [--processes 1 [2 ...]] [--passes 1]

`--rate 0` sends as fast as the ACKs come back (throughput); `--rate 1000` offers that many
messages per second in total (latency at a given load). `--processes 1 2 --passes 3` compares
`labflow gateway --processes N` for each N, passes interleaved (1, 2, 1, 2, …: the machine is shared,
its load drifts), a fresh gateway each pass, after a 3 s warm-up.

Besides messages/s and ACK latency percentiles, each pass reports the gateway's CPU time per message,
from /proc: user + system time of the gateway's processes (every thread: the interpreter's and
librdkafka's), split by thread name, over the timed part — a figure that compares across machines
and loads where messages/s does not — and the load average before and after. Writes
`load_tests/results/bench_gateway[-rate][-processes].json` (`-processes` when N other than 1 is run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from labflow_testkit.infrastructure import isolated_settings, settings_env
from labflow_testkit.processes import ServiceProcess, free_port, port_open, wait_until
from services.core.config import Settings, load_settings
from services.simulator.client import MllpClient
from services.simulator.oru import build_oru_r01, random_order, random_patient
from services.stack import local

RESULTS = Path(__file__).resolve().parent / "results"


def corpus(size: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    messages = []
    for i in range(size):
        order = random_order(
            rng, now - timedelta(minutes=rng.randrange(5, 600)), observations=rng.choice((1, 2, 3))
        )
        messages.append(build_oru_r01(f"BENCH-LAB-{i % 100:02d}", f"B{i}", [(random_patient(rng), [order])]))
    return messages


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(int(q * len(sorted_values)), len(sorted_values) - 1)]


async def drive(
    port: int, messages: list[bytes], connections: int, seconds: float, rate: float
) -> dict[str, float]:
    latencies: list[float] = []
    codes: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    interval = connections / rate if rate else 0.0

    async def lab(index: int) -> None:
        client = await MllpClient("127.0.0.1", port).connect()
        n = index
        next_send = time.perf_counter() + (interval * index / connections if interval else 0)
        try:
            while time.perf_counter() < deadline:
                if interval:
                    delay = next_send - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_send += interval
                started = time.perf_counter()
                ack = await client.send(messages[n % len(messages)])
                latencies.append(time.perf_counter() - started)
                codes[ack.code] = codes.get(ack.code, 0) + 1
                n += connections
        finally:
            await client.close()

    started = time.perf_counter()
    await asyncio.gather(*(lab(i) for i in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "messages": len(latencies),
        "elapsed_s": round(elapsed, 2),
        "messages_per_second": round(len(latencies) / elapsed),
        "ack_p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "ack_p95_ms": round(percentile(latencies, 0.95) * 1000, 2),
        "ack_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "ack_max_ms": round(latencies[-1] * 1000, 2) if latencies else float("nan"),
        **{f"ack_{code}": count for code, count in codes.items()},
    }


def gateway_threads_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of the gateway's processes, by thread name, from /proc/<pid>/task.
    librdkafka names its threads (rdk:main, rdk:broker…); Python's all carry the process name."""
    ticks = os.sysconf("SC_CLK_TCK")
    by_thread: dict[str, float] = {}
    parent = psutil.Process(pid)
    for process in [parent, *parent.children(recursive=True)]:
        for task in Path(f"/proc/{process.pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:  # the thread ended
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            kind = re.sub(r"[-\d]+$", "", name) if name.startswith("rdk:") else "python threads"
            by_thread[kind] = by_thread.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return by_thread


def one_pass(
    settings: Settings, messages: list[bytes], processes: int, connections: int, seconds: float, rate: float
) -> dict[str, Any]:
    settings = settings.model_copy(update={
        "mllp_port": free_port(), "gateway_ops_port": free_port(), "gateway_processes": processes,
    })
    env = settings_env(
        settings, LABFLOW_LOG_LEVEL="WARNING", LABFLOW_LAB_REGISTRY_ENFORCED="false",
        LABFLOW_MLLP_MAX_CONNECTIONS_PER_ADDRESS="100000",  # every connection comes from 127.0.0.1
    )
    with tempfile.TemporaryDirectory() as logs:
        gateway = ServiceProcess("gateway", env, Path(logs))
        try:
            wait_until(lambda: port_open(settings.mllp_port), timeout_s=60, what="the gateway")
            asyncio.run(drive(settings.mllp_port, messages, connections, 3.0, rate))  # warm-up
            load_before = [round(x, 2) for x in os.getloadavg()]
            cpu_before = gateway_threads_cpu_s(gateway.proc.pid)
            figures: dict[str, Any] = asyncio.run(
                drive(settings.mllp_port, messages, connections, seconds, rate)
            )
            cpu_after = gateway_threads_cpu_s(gateway.proc.pid)
        finally:
            gateway.stop()
    count = figures["messages"]
    cpu_by_thread = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_after.items()}
    return {
        "processes": processes,
        **figures,
        "gateway_cpu_ms_per_message": round(sum(cpu_by_thread.values()) * 1000 / count, 3) if count else None,
        "gateway_cpu_ms_per_message_by_thread": {
            k: round(v * 1000 / count, 3) for k, v in sorted(cpu_by_thread.items()) if count
        },
        "gateway_cpu_cores": round(sum(cpu_by_thread.values()) / figures["elapsed_s"], 2),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def summarise(passes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per N: the median of the passes' messages/s and CPU ms/message (and each pass's value)."""
    summary: dict[str, dict[str, Any]] = {}
    for n in sorted({p["processes"] for p in passes}):
        mine = [p for p in passes if p["processes"] == n]
        summary[str(n)] = {
            "passes": len(mine),
            "messages_per_second_median": statistics.median(p["messages_per_second"] for p in mine),
            "messages_per_second": [p["messages_per_second"] for p in mine],
            "gateway_cpu_ms_per_message_median": statistics.median(
                p["gateway_cpu_ms_per_message"] for p in mine
            ),
            "gateway_cpu_ms_per_message": [p["gateway_cpu_ms_per_message"] for p in mine],
            "ack_p99_ms_median": statistics.median(p["ack_p99_ms"] for p in mine),
            "load_average_1min": [p["load_average_before"][0] for p in mine],
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="offered messages/s in total; 0 = closed loop"
    )
    parser.add_argument("--processes", type=int, nargs="+", default=[1], help="gateway processes, each N")
    parser.add_argument("--passes", type=int, default=1, help="passes per N, interleaved")
    args = parser.parse_args()

    info = local.up(load_settings())
    messages = corpus(5000, seed=3)
    passes = []
    with isolated_settings(info.kafka_bootstrap, info.database_url, partitions=12) as settings:
        for round_ in range(args.passes):
            for processes in args.processes:
                figures = one_pass(settings, messages, processes, args.connections, args.seconds, args.rate)
                print(f"pass {round_ + 1}, {processes} process(es): "
                      f"{figures['messages_per_second']:,} msg/s, "
                      f"{figures['gateway_cpu_ms_per_message']} CPU ms/message "
                      f"({figures['gateway_cpu_cores']} cores), ACK p99 {figures['ack_p99_ms']} ms, "
                      f"load average {figures['load_average_before'][0]} → "
                      f"{figures['load_average_after'][0]}",
                      flush=True)
                passes.append(figures)
    report: dict[str, Any] = {"connections": args.connections, "offered_rate": args.rate or "closed loop",
                              "seconds": args.seconds, "cpus": os.cpu_count()}
    if args.processes == [1] and args.passes == 1:
        report |= passes[0]  # the flat figures `make bench` reads
    else:
        report |= {"summary": summarise(passes), "passes": passes}
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "bench_gateway" + (f"-{int(args.rate)}" if args.rate else "")
    name += "" if args.processes == [1] else "-processes"
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"generated_at": datetime.now(UTC).isoformat(timespec="seconds"), **report}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
