"""5,000 labs connected at once: every lab of the country on its own persistent MLLP connection to one
real `labflow gateway` process, each at its own pace, for 10 minutes.

    .venv/bin/python -m load_tests.labs5000 [--labs 5000] [--rate 1000] [--minutes 10] [--processes 1]

Pace: lab sizes are log-normal (σ = 1.2: a median lab sends one message every ~9 s, the largest a few
per second), scaled so that the labs together offer `--rate` messages/s. A lab sends at Poisson
times, one message at a time, waiting for its ACK before the next (a LIS). Quiet labs still send at
least every 150 s: half the gateway's idle timeout (300 s), past which a connection without traffic is
closed by design — reconnecting is not what this profile measures. A lab connects when its first
message is due: the first messages are spread over a ramp-up (`--ramp-s`, 60 s by default: a
connection that sends nothing for 10 s is closed by the gateway), then all labs hold their
connection for `--minutes`; the figures are those of this steady part (the ramp-up's are kept apart).

The labs are registered (`labs` table) and the gateway enforces the registry, as in production: each
message is admitted against the gateway's in-memory snapshot of 5,000 labs, reloaded every 30 s. Each
message carries its lab's id and a unique control id; an ACK is correct when it is AA for that
control id (MSA-2). A connection is dropped when the gateway closes it or it fails before the end.
Measured: ACK latency (send → ACK, exact percentiles), messages/s, wrong ACKs, dropped connections,
the gateway's open connections (its own gauge) and closed ones by reason, its RSS (peak, VmHWM, summed
over its processes) and CPU. The generator is one asyncio process that raises its own open-file limit.
Prints the figures and writes `load_tests/results/labs5000.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from labflow_testkit.infrastructure import isolated_settings, settings_env
from labflow_testkit.processes import ServiceProcess, free_port, port_open, wait_until
from load_tests.simulate import ProcessSampler, high_water_mb
from services.core.config import Settings, load_settings
from services.core.db import tables
from services.core.db.engine import make_engine
from services.core.domain.model import LabMode
from services.core.runtime import ensure_open_files
from services.simulator.client import MllpClient
from services.simulator.oru import build_oru_r01, random_order, random_patient
from services.stack import local

RESULTS = Path(__file__).resolve().parent / "results"
SIGMA = 1.2
LONGEST_GAP_S = 150.0
ACK_TIMEOUT_S = 30.0
SCRAPE_S = 15.0
"""The gateway's /metrics as often as Prometheus would: with 5,000 labs' series a scrape is not free."""
CONTROL = b"CTRLPLACEHOLDER"  # replaced by a 15-character control id per message


def lab_rates(labs: int, total_rate: float, seed: int) -> list[float]:
    """Messages/s of each lab: log-normal sizes, together `total_rate`."""
    rng = random.Random(seed)
    sizes = [rng.lognormvariate(0.0, SIGMA) for _ in range(labs)]
    scale = total_rate / sum(sizes)
    return [size * scale for size in sizes]


def lab_id(lab: int) -> str:
    return f"LAB5K-{lab:04d}"


def register_labs(settings: Settings, labs: int) -> None:
    """The labs in the registry, in production mode, in one statement."""
    engine = make_engine(settings.require_database())
    try:
        with engine.begin() as connection:
            connection.execute(insert(tables.Lab), [
                {"lab_id": lab_id(lab), "name": f"Laboratoire {lab}", "enabled": True,
                 "mode": LabMode.PRODUCTION.value, "time_zone": "Europe/Paris"}
                for lab in range(labs)
            ])
    finally:
        engine.dispose()


def lab_template(lab: int, rng: random.Random) -> bytes:
    """One ORU^R01 of this lab, its control id a placeholder (one or two results)."""
    when = datetime.now(UTC) - timedelta(minutes=rng.randrange(5, 600))
    order = random_order(rng, when, observations=rng.choice((1, 2)))
    message = build_oru_r01(lab_id(lab), CONTROL.decode(), [(random_patient(rng), [order])])
    assert message.count(CONTROL) == 1
    return message


@dataclass
class Tally:
    """What the labs saw; latencies in seconds, split at the end of the ramp-up."""

    steady_from: float
    steady_until: float
    ramp_latencies: array[float] = field(default_factory=lambda: array("d"))
    latencies: array[float] = field(default_factory=lambda: array("d"))
    codes: Counter[str] = field(default_factory=Counter)
    wrong_acks: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    connected: int = 0
    sent_steady: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)


async def lab_session(
    lab: int, template: bytes, rate: float, first_at: float, tally: Tally, port: int, rng: random.Random
) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, first_at - loop.time()))
    seq = 0
    client = MllpClient("127.0.0.1", port)
    try:
        await client.connect()
        tally.connected += 1
        next_at = loop.time()
        while next_at < tally.steady_until:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            control = f"{lab:05d}{seq:010d}".encode()
            seq += 1
            steady = loop.time() >= tally.steady_from
            started = time.perf_counter()
            ack = await client.send(template.replace(CONTROL, control), timeout_s=ACK_TIMEOUT_S)
            (tally.latencies if steady else tally.ramp_latencies).append(time.perf_counter() - started)
            tally.sent_steady += steady
            tally.codes[ack.code] += 1
            if ack.code != "AA" or ack.control_id != control.decode():
                tally.wrong_acks += 1
            next_at += min(rng.expovariate(rate), LONGEST_GAP_S)
        await tally.released.wait()  # hold the connection until the gateway's count has been read
        if client.closed_by_peer:
            tally.dropped["closed by the gateway"] += 1
    except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, OSError) as exc:
        tally.dropped[type(exc).__name__] += 1
    finally:
        await client.close()


CONNECTION_FAMILIES = "labflow_gateway_mllp_connections"  # the open gauge and the closed counter


def scrape_connections(port: int) -> tuple[int | None, dict[str, int]]:
    """The gateway's open and closed MLLP connections from its /metrics, however long a loaded machine
    takes to answer. Runs in a thread, and parses only the two families it reads: the full text holds
    the series of 5,000 labs, and parsing all of it took ~0.4 s — a pause of the generator's own event
    loop that every lab waiting for an ACK then counted as ACK latency."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=60).text
    wanted = "\n".join(
        line for line in text.splitlines()
        if line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith(CONNECTION_FAMILIES)
    )
    return gateway_connections(wanted + "\n")


def percentile(values: list[float], q: float) -> float:
    return values[min(int(q * len(values)), len(values) - 1)] if values else math.nan


def latency_figures(values: array[float]) -> dict[str, float | int]:
    ordered = sorted(values)
    figures: dict[str, float | int] = {"count": len(ordered)}
    for q in (0.5, 0.95, 0.99, 0.999):
        figures[f"p{q * 100:g}_ms"] = round(percentile(ordered, q) * 1000, 2)
    figures["max_ms"] = round(ordered[-1] * 1000, 2) if ordered else math.nan
    return figures


def gateway_connections(metrics_text: str) -> tuple[int | None, dict[str, int]]:
    """The gateway's open MLLP connections and its closed ones by reason."""
    open_now: int | None = None
    closed: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "labflow_gateway_mllp_connections":
            open_now = int(sum(s.value for s in family.samples))
        elif family.name == "labflow_gateway_mllp_connections_closed":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    closed[sample.labels["reason"]] = int(sample.value)
    return open_now, closed


async def loop_lag(samples: array[float], period_s: float = 0.01) -> None:
    """How late the generator's own event loop wakes up: a lab's ACK can look no faster than this, so
    it is reported next to the ACK latency (a generator that is itself the bottleneck shows here)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period_s
        await asyncio.sleep(period_s)
        samples.append(max(0.0, loop.time() - due))


async def drive(
    port: int, ops_port: int, labs: int, rate: float, ramp_s: float, steady_s: float,
    sampler: ProcessSampler, seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    rates = lab_rates(labs, rate, seed)
    templates = [lab_template(lab, rng) for lab in range(labs)]
    loop = asyncio.get_running_loop()
    start = loop.time() + 1.0
    tally = Tally(steady_from=start + ramp_s, steady_until=start + ramp_s + steady_s)
    firsts = sorted(start + rng.uniform(0, ramp_s) for _ in range(labs))
    sessions = [
        asyncio.create_task(lab_session(lab, templates[lab], rates[lab], firsts[lab], tally, port,
                                        random.Random(seed * 100_003 + lab)))
        for lab in range(labs)
    ]
    lag_samples = array("d")
    lag = asyncio.create_task(loop_lag(lag_samples))
    open_series: list[int] = []
    started_wall = time.monotonic()
    next_scrape = loop.time() + SCRAPE_S
    while loop.time() < tally.steady_until:
        await asyncio.sleep(1.0)
        sampler.sample()
        if loop.time() < next_scrape:
            continue
        next_scrape += SCRAPE_S
        open_now, _ = await asyncio.to_thread(scrape_connections, ops_port)
        if open_now is not None:
            open_series.append(open_now)
        print(f"  t={time.monotonic() - started_wall:5.0f} s: {tally.connected:,} connected, "
              f"gateway holds {open_now}, {len(tally.latencies) + len(tally.ramp_latencies):,} ACKs, "
              f"{tally.wrong_acks} wrong, {sum(tally.dropped.values())} dropped, "
              f"gateway RSS {sampler.rss_now_mb('gateway'):.0f} MB", flush=True)
    held_at_end, closed_by_gateway = await asyncio.to_thread(scrape_connections, ops_port)
    tally.released.set()
    lag.cancel()
    await asyncio.gather(*sessions)
    steady = latency_figures(tally.latencies)
    return {
        "labs": labs,
        "offered_messages_per_second": rate,
        "ramp_up_s": ramp_s,
        "steady_s": steady_s,
        "labs_per_second_range": [round(min(rates), 4), round(max(rates), 3)],
        "connected": tally.connected,
        "gateway_connections_max": max(open_series, default=None),
        "gateway_connections_at_end": held_at_end,
        "gateway_closed_connections": closed_by_gateway,
        "dropped_connections": sum(tally.dropped.values()),
        "dropped_by_error": dict(tally.dropped),
        "acks": dict(tally.codes),
        "wrong_acks": tally.wrong_acks,
        "messages_per_second": round(tally.sent_steady / steady_s, 1),
        "ack_latency": steady,
        "ack_latency_ramp_up": latency_figures(tally.ramp_latencies),
        "generator_loop_lag": latency_figures(lag_samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labs", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s offered by all labs together")
    parser.add_argument("--minutes", type=float, default=10.0, help="steady part, all labs connected")
    parser.add_argument("--ramp-s", type=float, default=60.0, help="the labs connect over this many seconds")
    parser.add_argument("--processes", type=int, default=1, help="gateway processes (--processes)")
    parser.add_argument("--seed", type=int, default=5000)
    args = parser.parse_args()

    ensure_open_files(args.labs, "--labs")  # the generator's own sockets
    load_average_at_start = [round(x, 2) for x in os.getloadavg()]
    info = local.up(load_settings())
    with isolated_settings(info.kafka_bootstrap, info.database_url, partitions=12) as settings:
        register_labs(settings, args.labs)
        settings = settings.model_copy(update={
            "mllp_port": free_port(), "gateway_ops_port": free_port(), "gateway_processes": args.processes,
            "mllp_max_connections": max(args.labs, 5000), "mllp_max_connections_per_address": args.labs,
            "lab_registry_enforced": True,
        })
        env = settings_env(settings, LABFLOW_LOG_LEVEL="WARNING")
        with tempfile.TemporaryDirectory() as logs:
            gateway = ServiceProcess("gateway", env, Path(logs))
            try:
                wait_until(lambda: port_open(settings.mllp_port), timeout_s=60, what="the gateway")
                sampler = ProcessSampler({"gateway": gateway.proc.pid}, time.time(),
                                         children={"gateway": lambda title: "services.cli gateway" in title})
                print(f"labs5000: {args.labs:,} labs, {args.rate:,.0f} messages/s, "
                      f"ramp-up {args.ramp_s:.0f} s, then {args.minutes:g} min; "
                      f"gateway processes: {args.processes}", flush=True)
                figures = asyncio.run(drive(
                    settings.mllp_port, settings.gateway_ops_port, args.labs, args.rate, args.ramp_s,
                    args.minutes * 60, sampler, args.seed,
                ))
                figures["gateway_peak_rss_mb"] = peak_rss_mb(gateway.proc.pid)
                figures["gateway_cpu_mean_percent"] = sampler.mean_cpu("gateway", math.inf)
                figures["generator_cpu_seconds"] = round(sum(psutil.Process().cpu_times()[:2]), 1)
            finally:
                gateway.stop()
            if figures["dropped_connections"] or figures["wrong_acks"]:
                print(gateway.log()[-2000:])
    figures |= {
        "gateway_processes": args.processes,
        "load_average_at_start": load_average_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    figures["ok"] = (
        figures["dropped_connections"] == 0 and figures["wrong_acks"] == 0
        and figures["gateway_connections_at_end"] == args.labs
    )
    print(json.dumps(figures, indent=2))
    ack = figures["ack_latency"]
    print(f"labs5000: {figures['connected']:,} labs held {args.minutes:g} min at "
          f"{figures['messages_per_second']:,} msg/s: ACK p50 / p99 / max "
          f"{ack['p50_ms']} / {ack['p99_ms']} / {ack['max_ms']} ms, "
          f"{figures['wrong_acks']} wrong ACKs, {figures['dropped_connections']} dropped, gateway peak RSS "
          f"{figures['gateway_peak_rss_mb']} MB, CPU {figures['gateway_cpu_mean_percent']} %")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "labs5000.json").write_text(
        json.dumps({"generated_at": datetime.now(UTC).isoformat(timespec="seconds"), **figures}, indent=2)
        + "\n"
    )


def peak_rss_mb(pid: int) -> float:
    """The kernel's high-water mark of the gateway, summed over its processes (--processes N)."""
    parent = psutil.Process(pid)
    return round(sum(high_water_mb(p.pid) for p in [parent, *parent.children(recursive=True)]), 1)


if __name__ == "__main__":
    main()
