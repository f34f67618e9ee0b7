"""National-scale lab simulator: many labs on persistent MLLP connections against the real services.

    .venv/bin/python -m load_tests.simulate constant --rate 1000 --seconds 60
    .venv/bin/python -m load_tests.simulate ramp --rate 500 --to 4000 --seconds 120
    .venv/bin/python -m load_tests.simulate replay --scale 0.05 --minutes 2

One run: a fresh database and topics on the local stack (labflow_testkit's isolated_settings), the
gateway, worker, tracing handoff and tracing-platform stand-in as real processes, and the labs in a process of
their own (no GIL shared with what is measured). Labs differ in size (Zipf-like weights; large labs
get several connections); each connection sends and waits for the ACK before its next message, like a
LIS. Messages are generated before the timed part (a pool; beyond it, the pool is sent again with new
control and specimen ids — patients then recur, as people retested).

Measured: offered and acknowledged results/s; ACK latency (send → ACK, and scheduled time → ACK, which
also counts the wait for a busy connection); end to end, ACK → `results.stored_at` per result (the
worker's transaction time: a lower bound of the commit by at most one batch); handoff delay, ACK of
the result that opened a case → the stand-in's reception time; consumer lag each second; CPU and peak
RSS of every process; and that every AA-acknowledged result is stored exactly once. Percentiles are
exact (computed in PostgreSQL from one record per message or result). Writes
`load_tests/results/<profile>.json` and `<profile>.png`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import random
import secrets
import statistics
import tempfile
import time
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from labflow_testkit.infrastructure import isolated_settings, settings_env
from labflow_testkit.processes import ServiceProcess, free_port, port_open, wait_until
from load_tests import profiles
from load_tests.profiles import Profile
from services.core.config import Settings, load_settings
from services.core.db.engine import libpq_url, make_engine
from services.gateway.labs import LabDirectory
from services.simulator.client import MllpClient
from services.simulator.demo import count_cases, wait_for_services
from services.simulator.oru import Observation, Order, Patient, build_oru_r01, random_order, random_patient
from services.stack import local

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# stands for the run tag + pool cycle in control ids and specimen ids (same length as its substitute)
PLACEHOLDER = "QXQXQX"
SERVICES = ("gateway", "worker", "tracing", "standin")
QUANTILES = (0.5, 0.95, 0.99)
POSITIVE_CODES = ("260373001", "10828004")


# --- traffic ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    lab: int
    control_id: str
    payload: bytes
    results: int  # OBX results in the message
    keys: tuple[tuple[str, str], ...]  # (specimen id, LOINC) stored once when acknowledged AA
    expect: str
    kind: str  # new, resend, correction, cancellation, invalid


def lab_ids(labs: int) -> list[str]:
    return [f"LT-LAB-{i:04d}" for i in range(1, labs + 1)]


def lab_layout(labs: int) -> tuple[list[float], list[int]]:
    """Each lab's share of the traffic (Zipf-like, exponent 0.7) and its number of connections."""
    weights = [1 / (i + 1) ** 0.7 for i in range(labs)]
    total = sum(weights)
    shares = [w / total for w in weights]
    return shares, [1 + int(share * labs) for share in shares]


def _flip(order: Order, status: str, when: datetime) -> Order:
    """A correction (C, outcome reversed) or a cancellation (D, no value) of `order`'s results."""
    observations = []
    for o in order.observations:
        if status == "C":
            positive = o.value.upper().startswith(("POS", "DÉT", "DET")) or o.value in POSITIVE_CODES
            value = "NEGATIF" if positive else "POSITIF"
        else:
            value = ""
        observations.append(Observation(o.loinc, value, status, when))
    return replace(order, observations=observations)


def plan_pool(
    count: int, labs: int, positivity: float, seed: int, poison: float = 0.0
) -> list[PlannedMessage]:
    """`count` messages in sending order: ~2 % re-sent after a lost ACK, 1.5 % corrections, 0.5 %
    cancellations, ~2 % invalid (bad INS key → AE); 5 % with two patients, 5 % with two specimens;
    a `poison` share of new messages with a NUL byte in a specimen id, which PostgreSQL text cannot
    hold (SPEC §9.1: refused at the gateway, never an AA; the chaos suite sends them)."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    ids = lab_ids(labs)
    shares, _ = lab_layout(labs)
    cumulative = [sum(shares[: i + 1]) for i in range(labs)]
    pool: list[PlannedMessage] = []
    sent: list[tuple[int, Patient, Order, str]] = []  # accepted orders, for corrections and cancellations
    for n in range(count):
        control_id = f"{PLACEHOLDER}{n:07d}"
        roll = rng.random()
        if roll < 0.02 and pool:
            pool.append(replace(pool[rng.randrange(max(0, len(pool) - 500), len(pool))], kind="resend"))
            continue
        if roll < 0.04 and sent:
            lab, patient, order, version = sent[rng.randrange(max(0, len(sent) - 2000), len(sent))]
            status, kind = ("C", "correction") if roll < 0.035 else ("D", "cancellation")
            result_time = max(o.result_time or order.collection_time for o in order.observations)
            when = min(result_time + timedelta(minutes=rng.randrange(1, 120)), now)
            changed = _flip(order, status, when)
            payload = build_oru_r01(ids[lab], control_id, [(patient, [changed])], version=version)
            keys = tuple((order.specimen_id, o.loinc) for o in order.observations)
            pool.append(PlannedMessage(lab, control_id, payload, len(keys), keys, "AA", kind))
            continue
        lab = rng.choices(range(labs), cum_weights=cumulative)[0]
        version = rng.choice(("2.5.1", "2.5.1", "2.5", "2.3.1"))
        batch: list[tuple[Patient, list[Order]]] = []
        specimen = 0
        for _ in range(2 if rng.random() < 0.05 else 1):
            patient = random_patient(rng, today=now.date())
            orders = []
            for _ in range(2 if rng.random() < 0.05 else 1):
                result_time = now - timedelta(minutes=rng.randrange(5, 12 * 60))
                order = random_order(
                    rng, result_time, observations=rng.choice((1, 1, 1, 2, 3)), positivity=positivity
                )
                orders.append(replace(order, specimen_id=f"{PLACEHOLDER}{n:07d}{specimen}"))
                specimen += 1
            batch.append((patient, orders))
        results = sum(len(o.observations) for _, orders in batch for o in orders)
        if poison and rng.random() < poison:
            payload = build_oru_r01(ids[lab], control_id, batch, version=version)
            specimen_id = f"{PLACEHOLDER}{n:07d}0".encode()  # the control id is followed by "|", not "0"
            payload = payload.replace(specimen_id, specimen_id[:-1] + b"\x000")
            pool.append(PlannedMessage(lab, control_id, payload, results, (), "AR", "poison"))
            continue
        if rng.random() < 0.02 and batch[0][0].ins is not None:
            patient = batch[0][0]
            assert patient.ins is not None
            bad = f"{patient.ins[:-2]}{(int(patient.ins[-2:]) + 1) % 97 or 1:02d}"
            batch[0] = (replace(patient, ins=bad), batch[0][1])
            payload = build_oru_r01(ids[lab], control_id, batch, version=version)
            pool.append(PlannedMessage(lab, control_id, payload, results, (), "AE", "invalid"))
            continue
        payload = build_oru_r01(ids[lab], control_id, batch, version=version)
        keys = tuple((o.specimen_id, x.loinc) for _, orders in batch for o in orders for x in o.observations)
        pool.append(PlannedMessage(lab, control_id, payload, results, keys, "AA", "new"))
        sent.extend((lab, patient, o, version) for patient, orders in batch for o in orders)
    return pool


# --- the labs (their own process) ------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorConfig:
    profile: Profile
    labs: int
    seed: int
    host: str
    port: int
    records_path: Path
    keys_path: Path
    pool_max: int = 120_000
    ack_timeout_s: float = 30.0
    poison: float = 0.0  # share of messages with a NUL byte in a field (plan_pool)


@dataclass
class _Connection:
    times: array[float] = field(default_factory=lambda: array("d"))
    messages: array[int] = field(default_factory=lambda: array("q"))


def _schedule(config: SimulatorConfig, pool: Sequence[PlannedMessage]) -> list[_Connection]:
    """Send time of every message, on its lab's connections in turn."""
    _, connections = lab_layout(config.labs)
    first = [sum(connections[:lab]) for lab in range(config.labs)]
    plan = [_Connection() for _ in range(sum(connections))]
    turns = [0] * config.labs

    def results() -> Iterator[int]:
        n = 0
        while True:
            yield pool[n % len(pool)].results
            n += 1

    for n, t in enumerate(config.profile.send_times(results(), config.seed)):
        lab = pool[n % len(pool)].lab
        connection = plan[first[lab] + turns[lab] % connections[lab]]
        turns[lab] += 1
        connection.times.append(t)
        connection.messages.append(n)
    return plan


async def _drive(
    config: SimulatorConfig, pool: Sequence[PlannedMessage], plan: list[_Connection], run_tag: str,
    start_at: float,
) -> dict[str, Any]:
    ids = lab_ids(config.labs)
    placeholder = PLACEHOLDER.encode()
    unexpected: list[str] = []  # the first 100
    codes: dict[str, int] = {}
    mismatches = 0
    await asyncio.sleep(max(start_at - time.time(), 0))
    t0_perf, t0_wall = time.perf_counter(), time.time()
    with config.records_path.open("w") as records, config.keys_path.open("w") as keys:

        async def connect() -> MllpClient:
            """Like a LIS: a refused connection (the gateway restarting) is tried again, for a while."""
            deadline = time.monotonic() + config.ack_timeout_s
            while True:
                try:
                    return await MllpClient(config.host, config.port).connect()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)

        async def connection(times: array[float], messages: array[int]) -> None:
            client = await connect()
            try:
                for t, n in zip(times, messages, strict=True):
                    message = pool[n % len(pool)]
                    tag = f"{run_tag}{n // len(pool):02d}"
                    payload = message.payload.replace(placeholder, tag.encode())
                    delay = t0_perf + t - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent = time.perf_counter() - t0_perf
                    send_again = False
                    try:
                        ack = await client.send(payload, config.ack_timeout_s)
                        code, send_again = ack.code, ack.send_again
                    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                        code = f"ERR:{type(exc).__name__}"
                        await client.close()
                        client = await connect()
                    acked = time.perf_counter() - t0_perf
                    codes[code] = codes.get(code, 0) + 1
                    control_id = message.control_id.replace(PLACEHOLDER, tag)
                    if code != message.expect:
                        nonlocal mismatches
                        mismatches += 1
                        if len(unexpected) < 100:
                            unexpected.append(
                                f"{control_id} ({message.kind}): expected {message.expect}, got {code}"
                            )
                    records.write(
                        ack_record(control_id, ids[message.lab], message.kind, code, message.results, t, sent,
                                   acked, send_again)
                    )
                    if code == "AA":
                        keys.writelines(f"{s.replace(PLACEHOLDER, tag)},{c}\n" for s, c in message.keys)
            finally:
                await client.close()

        await asyncio.gather(*(connection(c.times, c.messages) for c in plan if c.times))
    return {"t0": t0_wall, "codes": codes, "unexpected": unexpected, "unexpected_count": mismatches}


ACK_COLUMNS = (
    ("control_id", "text"), ("lab", "text"), ("kind", "text"), ("code", "text"), ("results", "int"),
    ("scheduled", "float8"), ("sent", "float8"), ("acked", "float8"), ("send_again", "int"),
)
"""One line of the simulator's ACK records (acks.csv), as `analyse` loads it into `bench_acks`."""


def ack_record(
    control_id: str, lab: str, kind: str, code: str, results: int, scheduled: float, sent: float,
    acked: float, send_again: bool,
) -> str:
    """The CSV line of one acknowledged (or unanswered) message, in the order of `ACK_COLUMNS`."""
    return (f"{control_id},{lab},{kind},{code},{results},{scheduled:.6f},{sent:.6f},{acked:.6f},"
            f"{int(send_again)}\n")


def simulator_main(pipe: Connection, config: SimulatorConfig) -> None:
    """The labs' process: plan, report ready, wait for the start time, send, report."""
    started = time.perf_counter()
    expected = config.profile.total_results / 1.9  # ≈ 1.9 results per message; the pool only caps
    pool = plan_pool(min(int(expected * 1.2) + 100, config.pool_max), config.labs,
                     config.profile.positivity, config.seed, config.poison)
    plan = _schedule(config, pool)
    messages = sum(len(c.times) for c in plan)
    pipe.send({
        "messages": messages, "pool": len(pool), "connections": sum(1 for c in plan if c.times),
        "generation_s": round(time.perf_counter() - started, 1),
        "results_per_message": round(sum(m.results for m in pool) / len(pool), 2),
    })
    start_at = float(pipe.recv())
    run_tag = uuid.uuid4().hex[:4].upper()
    pipe.send(asyncio.run(_drive(config, pool, plan, run_tag, start_at)))


# --- measuring the services ----------------------------------------------------------------------


PG_BACKGROUND = {"checkpointer", "background", "walwriter", "autovacuum", "logical", "archiver", "io"}


def postgres_member(database: str) -> Callable[[str], bool]:
    """PostgreSQL processes that count for a run: its database's backends and the shared background
    processes, not the backends of other databases (other work on the same server)."""

    def member(title: str) -> bool:
        words = title.split()
        if database in words:
            return True
        return len(words) > 1 and words[1] in PG_BACKGROUND and words[1:3] != ["autovacuum", "worker"]

    return member


class ProcessSampler:
    """CPU % (of one core) and RSS of named processes at each `sample()`, with its time since `origin`.

    `children` names processes whose children count with them, filtered by process title."""

    def __init__(
        self, pids: dict[str, int], origin: float, children: dict[str, Callable[[str], bool]] | None = None
    ) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.origin = origin
        self.children = children or {}
        self.times: list[float] = []
        self.cpu: dict[str, list[float]] = {name: [] for name in pids}
        self.rss_mb: dict[str, float] = dict.fromkeys(pids, 0.0)
        self.rss_series: dict[str, list[float]] = {name: [] for name in pids}
        """RSS (MB) at each recorded sample: when a peak came, next to the lag and CPU of that second."""
        self._seen: dict[str, dict[int, float]] = {name: {} for name in pids}
        self._last: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._at = time.monotonic()
        self.sample(record=False)

    def _cpu_and_rss(self, name: str) -> tuple[float, float]:
        proc = self.procs[name]
        members = [proc]
        if (member := self.children.get(name)) is not None:
            with contextlib.suppress(psutil.Error):
                members += [c for c in proc.children(recursive=True) if member(" ".join(c.cmdline()))]
        rss = 0.0
        for process in members:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                self._seen[name][process.pid] = times.user + times.system
                if process is proc:
                    rss = process.memory_info().rss / 1e6
        # processes that exited keep the CPU they had when last seen
        return sum(self._seen[name].values()), rss

    def sample(self, record: bool = True) -> None:
        now = time.monotonic()
        elapsed = max(now - self._at, 1e-3)
        self._at = now
        if record:
            self.times.append(round(time.time() - self.origin, 2))
        for name in self.procs:
            cpu, rss = self._cpu_and_rss(name)
            if record:
                self.cpu[name].append(round((cpu - self._last[name]) / elapsed * 100, 1))
                self.rss_series[name].append(round(rss, 1))
            self._last[name] = cpu
            self.rss_mb[name] = max(self.rss_mb[name], rss)

    def rss_now_mb(self, name: str) -> float:
        with contextlib.suppress(psutil.Error):
            return float(self.procs[name].memory_info().rss / 1e6)
        return math.nan

    def mean_cpu(self, name: str, until: float) -> float:
        values = [v for t, v in zip(self.times, self.cpu[name], strict=True) if t <= until]
        return round(sum(values) / max(len(values), 1), 1)

    def peak_rss_mb(self, name: str) -> float:
        """The kernel's high-water mark when readable, else the sampled maximum."""
        try:
            return round(high_water_mb(self.procs[name].pid), 1)
        except (OSError, StopIteration):
            return round(self.rss_mb[name], 1)


def high_water_mb(pid: int) -> float:
    """The kernel's high-water mark of a process's RSS (VmHWM, in KiB) in MB, like the samples."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return kib * 1024 / 1e6


def scrape(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return ""


def consumer_lag(metrics_text: str) -> int | None:
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "labflow_worker_consumer_lag":
            return int(sum(s.value for s in family.samples))
    return None


def histogram_quantiles(metrics_text: str, name: str) -> dict[str, float | int]:
    """Upper bucket bound reached by each quantile of a Prometheus histogram (a coarse cross-check)."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        buckets = sorted(
            (float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")
        )
        total = buckets[-1][1] if buckets else 0
        figures: dict[str, float | int] = {"count": int(total)}
        for q in QUANTILES:
            bound = next((le for le, n in buckets if total and n >= q * total), float("nan"))
            figures[f"p{int(q * 100)}_le_s"] = bound
        return figures
    return {}


def _copy_file(conn: psycopg.Connection[Any], table: str, path: Path) -> None:
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY {table} FROM STDIN (FORMAT csv)") as copy,
        path.open("rb") as f,
    ):
        while chunk := f.read(1 << 20):
            copy.write(chunk)


def _percentiles(conn: psycopg.Connection[Any], expression: str, source: str) -> dict[str, float | int]:
    row = conn.execute(
        f"SELECT count(*), percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY {expression}), "
        f"max({expression}), count(*) FILTER (WHERE {expression} < 0) FROM {source}",
        (list(QUANTILES),),
    ).fetchone()
    assert row is not None
    count, values, top, negative = row
    figures: dict[str, float | int] = {"count": int(count)}
    for q, value in zip(QUANTILES, values or [None] * 3, strict=True):
        figures[f"p{int(q * 100)}_ms"] = round(value * 1000, 1) if value is not None else float("nan")
    figures["max_ms"] = round(top * 1000, 1) if top is not None else float("nan")
    if negative:
        figures["negative"] = int(negative)  # stored before the ACK reached the lab: counted as is
    return figures


FIRST_ACK = "(SELECT control_id, min(acked) AS acked FROM bench_acks WHERE code = 'AA' GROUP BY control_id)"
# times in the bench tables are seconds since t0, the simulator's start (epoch seconds)
HANDOFF = f"""(SELECT DISTINCT ON (c.case_id) f.acked, h.received - f.acked AS delay
FROM cases c JOIN bench_handoffs h ON h.case_id = c.case_id AND h.event = 'case.opened'
JOIN results r ON r.patient_pseudonym = c.patient_pseudonym AND r.received_at = c.first_received_at
JOIN {FIRST_ACK} f ON f.control_id = r.message_control_id ORDER BY c.case_id, f.acked) handoff"""


def _end_to_end(t0: float) -> str:
    """Per stored result: ACK of the first message that carried its current version → `stored_at`."""
    return f"""(SELECT f.acked, extract(epoch FROM r.stored_at) - {t0!r} - f.acked AS delay
FROM results r JOIN {FIRST_ACK} f ON f.control_id = r.message_control_id) e2e"""


def analyse(settings: Settings, t0: float, records: Path, keys: Path, handoffs: Path) -> dict[str, Any]:
    """Figures and per-second series from the simulator's records, the stand-in's and the database."""
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        conn.execute(
            f"CREATE TEMP TABLE bench_acks ({', '.join(' '.join(column) for column in ACK_COLUMNS)})"
        )
        conn.execute("CREATE TEMP TABLE bench_keys (specimen_id text, loinc text)")
        conn.execute("CREATE TEMP TABLE bench_handoffs (case_id text, event text, received float8)")
        _copy_file(conn, "bench_acks", records)
        _copy_file(conn, "bench_keys", keys)
        _copy_file(conn, "bench_handoffs", handoffs)
        conn.execute("ANALYZE bench_acks")
        params = {"t0": t0}

        def one(sql: str) -> tuple[Any, ...]:
            row = conn.execute(sql, params).fetchone()
            assert row is not None
            return tuple(row)

        messages, results, acked_results, last_ack, last_scheduled = one(
            "SELECT count(*), coalesce(sum(results), 0), "
            "coalesce(sum(results) FILTER (WHERE code = 'AA'), 0), max(acked), max(scheduled) FROM bench_acks"
        )
        stored, last_stored = one(
            "SELECT count(*), max(extract(epoch FROM stored_at)) - %(t0)s FROM results"
        )
        once, missing, doubled = one(
            "SELECT count(*) FILTER (WHERE n = 1), count(*) FILTER (WHERE n IS NULL), "
            "count(*) FILTER (WHERE n > 1) FROM (SELECT DISTINCT specimen_id, loinc FROM bench_keys) k "
            "LEFT JOIN (SELECT specimen_id, loinc, count(*) AS n FROM results GROUP BY 1, 2) r "
            "USING (specimen_id, loinc)"
        )
        (not_acknowledged,) = one(
            "SELECT count(*) FROM results r WHERE NOT EXISTS "
            "(SELECT 1 FROM bench_keys k WHERE k.specimen_id = r.specimen_id AND k.loinc = r.loinc)"
        )
        kinds: dict[str, int] = dict(
            conn.execute("SELECT kind, count(*) FROM bench_acks GROUP BY 1 ORDER BY 1").fetchall()
        )
        cases, handed = one(
            "SELECT (SELECT count(*) FROM cases), "
            "(SELECT count(DISTINCT case_id) FROM bench_handoffs WHERE event = 'case.opened')"
        )
        series_rows = conn.execute(
            f"""
            WITH s AS (SELECT generate_series(0, ceil(greatest(%(last)s, 1))::int) AS s),
            sched AS (SELECT floor(scheduled)::int AS s, sum(results) AS n FROM bench_acks GROUP BY 1),
            ack AS (SELECT floor(acked)::int AS s, sum(results) FILTER (WHERE code = 'AA') AS n,
                           percentile_disc(0.5) WITHIN GROUP (ORDER BY acked - sent) AS p50,
                           percentile_disc(0.99) WITHIN GROUP (ORDER BY acked - sent) AS p99
                    FROM bench_acks GROUP BY 1),
            st AS (SELECT floor(extract(epoch FROM stored_at) - %(t0)s)::int AS s, count(*) AS n
                   FROM results GROUP BY 1),
            e AS (SELECT floor(acked)::int AS s, percentile_disc(0.99) WITHIN GROUP (ORDER BY delay) AS p99
                  FROM {_end_to_end(t0)} GROUP BY 1)
            SELECT s.s, coalesce(sched.n, 0), coalesce(ack.n, 0), coalesce(st.n, 0), ack.p50, ack.p99, e.p99
            FROM s LEFT JOIN sched USING (s) LEFT JOIN ack USING (s) LEFT JOIN st USING (s)
            LEFT JOIN e USING (s) ORDER BY s.s
            """,
            {"t0": t0, "last": max(last_ack or 0, last_stored or 0)},
        ).fetchall()
        figures = {
            "messages_sent": int(messages),
            "results_sent": int(results),
            "messages_by_kind": kinds,
            "ack_latency": _percentiles(conn, "acked - sent", "bench_acks"),
            "ack_latency_from_schedule": _percentiles(conn, "acked - scheduled", "bench_acks"),
            "send_lateness": _percentiles(conn, "sent - scheduled", "bench_acks"),
            "end_to_end": _percentiles(conn, "delay", _end_to_end(t0)),
            "handoff": _percentiles(conn, "delay", HANDOFF),
            "send_window_s": round(float(last_ack or 0), 1),
            "last_scheduled_s": round(float(last_scheduled or 0), 1),
            "acknowledged_results_per_second": round(float(acked_results) / max(float(last_ack or 1), 1e-3)),
            "stored_rows": int(stored),
            "last_stored_s": round(float(last_stored or 0), 1),
            "correctness": {
                "acknowledged_results": int(once + missing + doubled),
                "stored_exactly_once": int(once),
                "missing": int(missing),
                "stored_more_than_once": int(doubled),
                "stored_but_not_acknowledged": int(not_acknowledged),
                "cases_opened": int(cases),
                "cases_handed_over": int(handed),
            },
        }
    series = {
        "second": [r[0] for r in series_rows],
        "offered_results": [int(r[1]) for r in series_rows],
        "acknowledged_results": [int(r[2]) for r in series_rows],
        "stored_results": [int(r[3]) for r in series_rows],
        "ack_p50_ms": [None if r[4] is None else round(r[4] * 1000, 2) for r in series_rows],
        "ack_p99_ms": [None if r[5] is None else round(r[5] * 1000, 2) for r in series_rows],
        "end_to_end_p99_ms": [None if r[6] is None else round(r[6] * 1000, 1) for r in series_rows],
    }
    return {"figures": figures, "series": series}


def _handoffs_csv(jsonl: Path, t0: float, out: Path) -> None:
    with out.open("w") as handle:
        if not jsonl.exists():
            return
        for line in jsonl.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                received = datetime.fromisoformat(record["received_at"]).timestamp() - t0
                handle.write(f"{record['case_id']},{record['event']},{received:.6f}\n")


def max_window_rate(values: Sequence[int], window: int) -> float:
    """Highest mean over `window` consecutive seconds."""
    if len(values) < window:
        return sum(values) / max(len(values), 1)
    best = current = sum(values[:window])
    for i in range(window, len(values)):
        current += values[i] - values[i - window]
        best = max(best, current)
    return best / window


# --- one run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    labs: int = 200
    partitions: int = 12
    seed: int = 11
    drain_s: float = 120.0
    pool_max: int = 120_000


def _delete_topics(settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": settings.require_kafka()})
    for future in admin.delete_topics(settings.topics.all(), operation_timeout=30).values():
        with contextlib.suppress(Exception):
            future.result(30)


def run_profile(profile: Profile, options: RunOptions, results_dir: Path = RESULTS_DIR) -> dict[str, Any]:
    """One profile against freshly started services; writes `<name>.json` and `<name>.png`."""
    base = load_settings()
    info = local.up(base)
    stack = local.status(base)
    started = time.monotonic()
    with (
        isolated_settings(info.kafka_bootstrap, info.database_url, partitions=options.partitions) as fresh,
        tempfile.TemporaryDirectory(prefix="labflow-bench-") as tmp,
    ):
        folder = Path(tmp)
        standin_port = free_port()
        settings = fresh.model_copy(update={
            "state_dir": folder,
            "mllp_port": free_port(), "gateway_ops_port": free_port(), "worker_ops_port": free_port(),
            "tracing_ops_port": free_port(), "tracing_standin_port": standin_port,
            "tracing_url": f"http://127.0.0.1:{standin_port}/cases",
            "tracing_signing_secret": SecretStr(secrets.token_hex(32)),
            "worker_batch_timeout_s": Settings.model_fields["worker_batch_timeout_s"].default,
        })
        engine = make_engine(settings.require_database())
        directory = LabDirectory(engine)
        for lab_id in lab_ids(options.labs):
            directory.add(lab_id, f"Load-test laboratory {lab_id[-4:]}", None, None)
        engine.dispose()
        # every simulated lab connects from 127.0.0.1, and may connect a while before its first message
        env = settings_env(
            settings, LABFLOW_LOG_LEVEL="WARNING", LABFLOW_MLLP_MAX_CONNECTIONS_PER_ADDRESS="100000",
            LABFLOW_MLLP_FIRST_MESSAGE_TIMEOUT_S=str(settings.mllp_idle_timeout_s),
        )
        standin = ServiceProcess("tracing standin", env, folder, "--port", str(standin_port))
        services = {name: ServiceProcess(name, env, folder) for name in ("gateway", "worker", "tracing")}
        simulator: multiprocessing.process.BaseProcess | None = None
        try:
            wait_until(lambda: port_open(standin_port), timeout_s=30, what="the tracing stand-in")

            def exited() -> str | None:
                return next((n for n, s in services.items() if s.proc.poll() is not None), None)

            wait_for_services(settings, exited)
            records, keys = folder / "acks.csv", folder / "keys.csv"
            config = SimulatorConfig(
                profile, options.labs, options.seed, settings.mllp_host, settings.mllp_port, records, keys,
                options.pool_max,
            )
            ctx = multiprocessing.get_context("spawn")
            ours, theirs = ctx.Pipe()
            simulator = ctx.Process(target=simulator_main, args=(theirs, config), name="lab-simulator")
            simulator.start()
            if not ours.poll(600):
                raise RuntimeError("the simulator did not finish generating its messages")
            plan = ours.recv()
            print(f"[{profile.name}] {plan['messages']:,} messages planned ({plan['pool']:,} generated in "
                  f"{plan['generation_s']} s) on {plan['connections']} connections of {options.labs} labs")
            pids = {name: s.proc.pid for name, s in services.items()}
            pids["standin"] = standin.proc.pid
            assert simulator.pid is not None
            pids["simulator"] = simulator.pid
            pids |= {name: pid for name, pid in stack.items() if pid is not None}  # kafka, postgres
            database = settings.require_database().rpartition("/")[2]
            start_at = time.time() + 1.0
            sampler = ProcessSampler(pids, start_at, {"postgres": postgres_member(database)})
            lag: list[int | None] = []

            def sample() -> int | None:
                sampler.sample()
                lag.append(value := consumer_lag(scrape(settings.worker_ops_port)))
                return value

            ours.send(start_at)
            # the simulator's own clock starts within a few ms of start_at
            while not ours.poll(max(start_at - time.time(), 0) + 1.0):
                sample()
                if (dead := exited()) is not None:
                    raise RuntimeError(f"{dead} exited during the run:\n{services[dead].log()}")
                if not simulator.is_alive():
                    raise RuntimeError(f"the simulator exited with {simulator.exitcode}")
            outcome = ours.recv()
            simulator.join(30)
            sending_done = time.monotonic()
            sending_samples = len(lag)
            drained_after: float | None = None
            stable, previous = 0, -1
            while time.monotonic() - sending_done < options.drain_s:
                current = sample()
                opened, delivered = count_cases(settings)
                with psycopg.connect(libpq_url(settings.require_database())) as conn:
                    row = conn.execute("SELECT count(*) FROM results").fetchone()
                stored = int(row[0]) if row else 0
                stable = stable + 1 if stored == previous and current == 0 and delivered >= opened else 0
                previous = stored
                if stable >= 2:
                    drained_after = round(time.monotonic() - sending_done - 2, 1)
                    break
                time.sleep(1.0)
            peaks = {name: sampler.peak_rss_mb(name) for name in pids}
            worker_metrics = scrape(settings.worker_ops_port)
            tracing_metrics = scrape(settings.tracing_ops_port)
            handoffs = folder / "handoffs.csv"
            _handoffs_csv(folder / "tracing-standin" / "received.jsonl", outcome["t0"], handoffs)
            analysis = analyse(settings, outcome["t0"], records, keys, handoffs)
        finally:
            if simulator is not None and simulator.is_alive():
                simulator.kill()
            for service in services.values():
                service.stop()
            standin.stop()
        _delete_topics(settings)

    figures = analysis["figures"]
    correctness = figures["correctness"]
    series = analysis["series"]
    duration = profile.duration_s
    window = max(int(duration // 4), 5)
    report: dict[str, Any] = {
        "profile": profile.name,
        "description": profile.description,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "labs": options.labs,
        "connections": plan["connections"],
        "partitions": options.partitions,
        "duration_s": duration,
        "pool_messages": plan["pool"],
        "generation_s": plan["generation_s"],
        "results_per_message": plan["results_per_message"],
        "offered_results_per_second": round(figures["results_sent"] / duration),
        "offered_peak_results_per_second": round(max(r for _, r in profile.points)),
        "achieved_results_per_second": figures["acknowledged_results_per_second"],
        "stored_results_per_second": round(sum(series["stored_results"][: int(duration)]) / duration),
        "stored_results_per_second_best_window": round(
            max_window_rate(series["stored_results"][: int(duration)], window)
        ),
        "best_window_s": window,
        "ack_codes": outcome["codes"],
        "unexpected_acks": outcome["unexpected"][:20],
        "unexpected_ack_count": outcome["unexpected_count"],
        **{k: v for k, v in figures.items() if k != "correctness"},
        "consumer_lag": {
            "max": max((v for v in lag if v is not None), default=None),
            "at_end_of_sending": next((v for v in reversed(lag[:sending_samples]) if v is not None), None),
            "drained_after_s": drained_after,
            # where a ramp outgrows the platform: the first second the worker was > 5,000 messages behind
            "above_5000_at_offered_results_per_second": next(
                (round(profile.rate(t)) for t, v in zip(sampler.times, lag, strict=True)
                 if v is not None and v > 5000 and t <= duration), None
            ),
        },
        "worker_end_to_end_histogram": histogram_quantiles(
            worker_metrics, "labflow_worker_end_to_end_seconds"
        ),
        "tracing_handoff_histogram": histogram_quantiles(
            tracing_metrics, "labflow_tracing_handoff_delay_seconds"
        ),
        "processes": {
            name: {
                "cpu_mean_percent": sampler.mean_cpu(name, duration),
                "cpu_max_percent": max(sampler.cpu[name], default=0.0),
                "peak_rss_mb": peaks[name],
            }
            for name in pids
        },
        "correctness": {
            **correctness,
            # not judged when the services had not caught up by the end of the drain period
            "ok": None if drained_after is None else (
                correctness["missing"] == 0 and correctness["stored_more_than_once"] == 0
                and outcome["unexpected_count"] == 0
            ),
        },
        "wall_time_s": round(time.monotonic() - started, 1),
        "series": {**series, "sample_second": sampler.times, "consumer_lag": lag, "cpu_percent": sampler.cpu,
                   "rss_mb": sampler.rss_series},
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{profile.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, results_dir / f"{profile.name}.png")
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = report["series"]
    seconds = series["second"]
    fig, axes = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    ax = axes[0]
    ax.plot(seconds, series["offered_results"], label="offered", color="0.6", linewidth=1)
    ax.plot(seconds, series["acknowledged_results"], label="acknowledged (AA)", linewidth=1)
    # rows carry their transaction's start time: whole batches land on one second, hence the mean
    stored = series["stored_results"]
    smooth = [statistics.fmean(stored[max(i - 4, 0) : i + 1]) for i in range(len(stored))]
    ax.plot(seconds, smooth, label="stored in PostgreSQL (5 s mean)", linewidth=1)
    ax.set_ylabel("results / s")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{report['profile']}: {report['description']}", fontsize=10)
    ax = axes[1]
    for key, label in (("ack_p50_ms", "ACK p50"), ("ack_p99_ms", "ACK p99"),
                       ("end_to_end_p99_ms", "ACK → stored p99")):
        points = [(s, v) for s, v in zip(seconds, series[key], strict=True) if v is not None and v > 0]
        ax.plot([s for s, _ in points], [v for _, v in points], label=label, linewidth=1)
    ax.set_yscale("log")
    ax.set_ylabel("ms (per second of sending)")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[2]
    lag = series["consumer_lag"]
    values = [v if v is not None else float("nan") for v in lag]
    ax.plot(series["sample_second"], values, color="tab:red", linewidth=1, label="consumer lag")
    ax.set_ylabel("consumer lag (messages)")
    memory = ax.twinx()  # the worker's memory follows the batches a backlog hands it
    memory.plot(series["sample_second"], series["rss_mb"]["worker"], color="tab:blue", linewidth=1)
    memory.set_ylabel("worker RSS (MB)", color="tab:blue")
    ax = axes[3]
    for name, values in series["cpu_percent"].items():
        ax.plot(series["sample_second"], values, label=name, linewidth=1)
    ax.set_ylabel("CPU % of one core")
    ax.set_xlabel("seconds since the first message")
    ax.legend(loc="upper left", fontsize=8, ncol=4)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def summary_line(report: dict[str, Any]) -> str:
    e2e, handoff, ack = report["end_to_end"], report["handoff"], report["ack_latency"]
    processes = report["processes"]
    rss = ", ".join(f"{n} {processes[n]['peak_rss_mb']:.0f}" for n in ("gateway", "worker", "tracing"))
    return (
        f"[{report['profile']}] offered {report['offered_results_per_second']:,} results/s, "
        f"acknowledged {report['achieved_results_per_second']:,}/s; ACK p50/p99/max "
        f"{ack['p50_ms']}/{ack['p99_ms']}/{ack['max_ms']} ms; ACK→stored p99 {e2e['p99_ms']} ms; "
        f"handoff p99 {handoff['p99_ms']} ms ({handoff['count']} cases); "
        f"lag max {report['consumer_lag']['max']}; "
        f"peak RSS MB {rss}; exactly once: {report['correctness']['ok']}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", choices=("constant", "ramp", "replay"))
    parser.add_argument("--rate", type=float, default=1000.0, help="results/s (constant; ramp: start)")
    parser.add_argument("--to", type=float, default=4000.0, help="ramp: results/s at the end")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--scale", type=float, default=0.05, help="replay: share of the day's volume")
    parser.add_argument("--minutes", type=float, default=2.0, help="replay: length of the compressed day")
    parser.add_argument("--labs", type=int, default=200)
    args = parser.parse_args(argv)
    if args.profile == "constant":
        profile = profiles.constant(args.rate, args.seconds)
    elif args.profile == "ramp":
        profile = profiles.ramp(args.rate, args.to, args.seconds)
    else:
        profile = profiles.replay(load_settings().reference_dir, args.scale, args.minutes)
    report = run_profile(profile, RunOptions(labs=args.labs))
    print(summary_line(report))


if __name__ == "__main__":
    main()
