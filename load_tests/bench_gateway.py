"""Gateway round trips: many persistent MLLP connections, each waiting for its ACK (AA only after
Kafka confirmed the write), against a real `labflow gateway` process.

    .venv/bin/python -m load_tests.bench_gateway [--connections 100] [--seconds 20] [--rate 0]

`--rate 0` sends as fast as the ACKs come back (throughput); `--rate 1000` offers that many
messages per second in total (latency at a given load). Prints achieved messages/s and ACK latency
percentiles; writes `load_tests/results/bench_gateway[-rate].json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from labflow_testkit.infrastructure import isolated_settings, settings_env
from labflow_testkit.processes import ServiceProcess, free_port, port_open, wait_until
from services.core.config import load_settings
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="offered messages/s in total; 0 = closed loop"
    )
    args = parser.parse_args()

    info = local.up(load_settings())
    messages = corpus(5000, seed=3)
    with isolated_settings(info.kafka_bootstrap, info.database_url, partitions=12) as settings:
        settings = settings.model_copy(update={"mllp_port": free_port(), "gateway_ops_port": free_port()})
        env = settings_env(
            settings, LABFLOW_LOG_LEVEL="WARNING", LABFLOW_LAB_REGISTRY_ENFORCED="false",
            LABFLOW_MLLP_MAX_CONNECTIONS_PER_ADDRESS="100000",  # every connection comes from 127.0.0.1
        )
        with tempfile.TemporaryDirectory() as logs:
            gateway = ServiceProcess("gateway", env, Path(logs))
            try:
                wait_until(lambda: port_open(settings.mllp_port), timeout_s=30, what="the gateway")
                figures = asyncio.run(
                    drive(settings.mllp_port, messages, args.connections, args.seconds, args.rate)
                )
            finally:
                gateway.stop()
    figures.update({"connections": args.connections, "offered_rate": args.rate or "closed loop"})
    print(json.dumps(figures, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "bench_gateway.json" if not args.rate else f"bench_gateway-{int(args.rate)}.json"
    (RESULTS / name).write_text(
        json.dumps({"generated_at": datetime.now(UTC).isoformat(timespec="seconds"), **figures}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
