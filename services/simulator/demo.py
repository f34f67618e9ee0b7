"""`labflow demo`: the services under realistic lab traffic, and what became of every result.

First a history: the last 90 collection days of an epidemic wave (`backfill.py`: real ORU^R01
messages normalized by the gateway's code, onto the results topic with the time labs would have sent
them, stored by the real worker), so the dashboard's curves, week-on-week changes and the 7-day file
mean something at once. Then live traffic: a few dozen labs, one persistent MLLP connection each,
send ORU^R01 messages and wait for each ACK like a real LIS: mostly one specimen with one to three
observations, a few messages with several patients, some re-sent after a "lost" ACK, some corrected
later, and a small share with an invalid INS key that must get AE. At the end the demo checks that
every acknowledged result is stored once.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import psycopg

from services.core.config import Settings
from services.core.db.engine import libpq_url, make_engine
from services.core.domain.model import PARIS
from services.core.logs import get_logger
from services.gateway.labs import MISS_REFRESH_S, LabDirectory
from services.simulator.backfill import DEFAULT_PEAK, backfill, wave
from services.simulator.client import MllpClient
from services.simulator.oru import Observation, Order, Patient, build_oru_r01, random_order, random_patient

log = get_logger(__name__)


@dataclass
class PlannedMessage:
    lab: str
    control_id: str
    payload: bytes
    results: set[tuple[str, str]]  # (specimen id, LOINC): one stored row each when acknowledged
    expect: str = "AA"


@dataclass
class DemoSummary:
    labs: int
    messages_sent: int = 0
    acks: Counter[str] = field(default_factory=Counter)
    unexpected_acks: int = 0
    results_acknowledged: int = 0
    results_stored: int = 0
    cases_opened: int = 0
    cases_handed_over: int = 0
    history: dict[str, object] = field(default_factory=dict)
    opendata_dir: str = ""
    opendata_files: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.unexpected_acks == 0
            and self.results_stored == self.results_acknowledged
            and self.cases_handed_over == self.cases_opened
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "labs": self.labs,
            "history": self.history,
            "messages_sent": self.messages_sent,
            "acks": dict(self.acks),
            "unexpected_acks": self.unexpected_acks,
            "results_acknowledged": self.results_acknowledged,
            "results_stored": self.results_stored,
            "cases_opened": self.cases_opened,
            "cases_handed_over_to_tracing": self.cases_handed_over,
            "opendata_dir": self.opendata_dir,
            "opendata_files": self.opendata_files,
            "elapsed_s": round(self.elapsed_s, 2),
            "ok": self.ok,
            "notes": self.notes,
        }


def _corrupt_ins(patient: Patient) -> Patient:
    assert patient.ins is not None
    key = (int(patient.ins[-2:]) + 1) % 97 or 1
    return replace(patient, ins=f"{patient.ins[:-2]}{key:02d}")


def plan_traffic(
    labs: int, messages: int, seed: int, run_tag: str, positivity: float = 0.12
) -> list[list[PlannedMessage]]:
    """Per lab, the messages it will send, in order."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    lab_ids = [f"DEMO-LAB-{i:02d}" for i in range(1, labs + 1)]
    per_lab: list[list[PlannedMessage]] = [[] for _ in lab_ids]
    sent_orders: list[tuple[int, Patient, Order]] = []
    for n in range(messages):
        lab_index = n % labs
        lab = lab_ids[lab_index]
        control_id = f"{run_tag}{n:06d}"
        roll = rng.random()
        if roll < 0.03 and per_lab[lab_index]:  # the ACK was "lost": the LIS sends the same message again
            previous = rng.choice(per_lab[lab_index])
            per_lab[lab_index].append(replace(previous))
            continue
        if roll < 0.04 and sent_orders:  # a correction of an earlier result, as a new message
            lab_of, patient, order = rng.choice(sent_orders)
            later = now - timedelta(minutes=rng.randrange(1, 30))
            corrected = replace(
                order,
                observations=[
                    Observation(
                        o.loinc, "NEGATIF" if o.value.upper().startswith("POS") else "POSITIF", "C", later
                    )
                    for o in order.observations
                ],
            )
            payload = build_oru_r01(lab_ids[lab_of], control_id, [(patient, [corrected])])
            per_lab[lab_of].append(PlannedMessage(lab_ids[lab_of], control_id, payload, set()))
            continue
        patients = 2 if rng.random() < 0.05 else 1
        batch: list[tuple[Patient, list[Order]]] = []
        results: set[tuple[str, str]] = set()
        for _ in range(patients):
            patient = random_patient(rng, today=now.date())
            result_time = now - timedelta(minutes=rng.randrange(5, 12 * 60))
            order = random_order(rng, result_time, observations=rng.choice((1, 1, 1, 2, 3)),
                                 positivity=positivity)
            order = replace(order, specimen_id=f"{run_tag}{order.specimen_id}")
            batch.append((patient, [order]))
            results |= {(order.specimen_id, o.loinc) for o in order.observations}
            sent_orders.append((lab_index, patient, order))
        expect = "AA"
        if rng.random() < 0.02 and batch[0][0].ins is not None:
            batch[0] = (_corrupt_ins(batch[0][0]), batch[0][1])
            sent_orders = [s for s in sent_orders if s[2] is not batch[0][1][0]]
            expect, results = "AE", set()
        payload = build_oru_r01(
            lab, control_id, batch, version=rng.choice(("2.5.1", "2.5.1", "2.5", "2.3.1"))
        )
        per_lab[lab_index].append(PlannedMessage(lab, control_id, payload, results, expect))
    return per_lab


async def _run_lab(
    host: str, port: int, plan: list[PlannedMessage], summary: DemoSummary, acknowledged: set[tuple[str, str]]
) -> None:
    client = await MllpClient(host, port).connect()
    try:
        for message in plan:
            ack = await client.send(message.payload)
            summary.messages_sent += 1
            summary.acks[ack.code] += 1
            if ack.code != message.expect or ack.control_id != message.control_id:
                summary.unexpected_acks += 1
                summary.notes.append(
                    f"{message.control_id}: expected {message.expect}, got {ack.code} {ack.errors}"
                )
            if ack.code == "AA":
                acknowledged.update(message.results)
    finally:
        await client.close()


# The demo's checks read across services' tables (results, cases, deliveries): as the owner, like a test.
def count_stored(settings: Settings, keys: set[tuple[str, str]]) -> int:
    specimens = sorted({s for s, _ in keys})
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        row = conn.execute(
            "SELECT count(*) FROM results WHERE specimen_id = ANY(%s)", (specimens,)
        ).fetchone()
    return int(row[0]) if row else 0


def count_cases(settings: Settings) -> tuple[int, int]:
    """Cases opened by the worker, and openings the tracing platform acknowledged."""
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        opened = conn.execute("SELECT count(*) FROM cases").fetchone()
        delivered = conn.execute(
            "SELECT count(*) FROM tracing_deliveries WHERE type = 'case.opened' AND status = 'delivered'"
        ).fetchone()
    return (int(opened[0]) if opened else 0), (int(delivered[0]) if delivered else 0)


def publish_open_data(settings: Settings) -> list[str]:
    """Publish now, as the daily job would, through the operator command (services stay apart)."""
    subprocess.run(
        [sys.executable, "-m", "services.cli", "opendata", "publish"], check=True, capture_output=True
    )
    return sorted(p.name for p in settings.opendata_path.glob("sp-pos-*.csv") if "-20" not in p.name)


def register_labs(settings: Settings, lab_ids: list[str]) -> None:
    """Register the demo labs in the lab registry (as an operator would), if not yet there."""
    engine = make_engine(settings.database_url_for("labs"))
    try:
        directory = LabDirectory(engine)
        known = {lab.lab_id for lab in directory.all()}
        for lab_id in lab_ids:
            if lab_id not in known:
                directory.add(lab_id, f"Demo laboratory {lab_id[-2:]}", None, None)
    finally:
        engine.dispose()
    if not known.issuperset(lab_ids):
        time.sleep(MISS_REFRESH_S)  # until a running gateway may have reloaded its registry


def refresh_dashboard(settings: Settings) -> None:
    """Refresh the dashboard's national and regional rollups now rather than within a minute."""
    subprocess.run(
        [sys.executable, "-m", "services.cli", "dashboard", "refresh"], check=False, capture_output=True
    )


def live_traffic(
    settings: Settings, history_days: int, history_peak: int, messages: int | None
) -> tuple[int, float]:
    """Messages and positivity of the live traffic: by default those of the wave's last days, so the
    curves go on where the history ends instead of jumping (2,000 messages at 12 % without history).

    Live specimens are collected over the last 36 hours: about 1.5 days of the last history day's tests.
    """
    if history_days <= 0:
        return messages or 2000, 0.12
    last = wave(settings.reference_dir, history_days, history_peak, datetime.now(PARIS).date())[-1]
    return messages or max(100, round(1.5 * last.tests)), last.positivity


def replay(
    settings: Settings, *, labs: int, messages: int | None, seed: int, wait_s: float = 120.0,
    history_days: int = 0, history_peak: int = DEFAULT_PEAK,
    progress: Callable[[str], None] = lambda _line: None,
) -> DemoSummary:
    run_tag = uuid.uuid4().hex[:6].upper()
    live_messages, positivity = live_traffic(settings, history_days, history_peak, messages)
    plan = plan_traffic(labs, live_messages, seed, run_tag, positivity)
    lab_ids = sorted({f"DEMO-LAB-{i:02d}" for i in range(1, labs + 1)})
    register_labs(settings, lab_ids)
    summary = DemoSummary(labs=labs)
    started = time.monotonic()
    if history_days > 0:
        history = backfill(settings, labs=lab_ids, days=history_days, peak=history_peak, seed=seed)
        summary.history = history.as_dict()
        progress(f"history: {history.tests} tests ({history.results} results) collected "
                 f"{history.first_day} → {history.last_day}, stored by the worker in "
                 f"{history.store_s:.1f} s; {labs} labs sending {live_messages} messages over MLLP …")
        refresh_dashboard(settings)
    acknowledged: set[tuple[str, str]] = set()

    async def drive() -> None:
        await asyncio.gather(
            *(
                _run_lab(settings.mllp_host, settings.mllp_port, lab_plan, summary, acknowledged)
                for lab_plan in plan
            )
        )

    asyncio.run(drive())
    summary.results_acknowledged = len(acknowledged)
    deadline = time.monotonic() + wait_s
    while True:
        summary.results_stored = count_stored(settings, acknowledged)
        if summary.results_stored >= summary.results_acknowledged or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    while True:  # the handoff runs behind the worker: give it a moment to catch up
        summary.cases_opened, summary.cases_handed_over = count_cases(settings)
        if summary.cases_handed_over >= summary.cases_opened or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    summary.opendata_files = publish_open_data(settings)
    refresh_dashboard(settings)
    summary.opendata_dir = str(settings.opendata_path)
    summary.elapsed_s = time.monotonic() - started
    return summary


def wait_for_services(
    settings: Settings, exited: Callable[[], str | None] = lambda: None, timeout_s: float = 60.0
) -> None:
    """The gateway accepts MLLP connections, the worker has its partitions, tracing is consuming."""
    import socket
    import urllib.request

    deadline = time.monotonic() + timeout_s
    pending = {"gateway", "worker", "tracing"}
    while pending:
        if "gateway" in pending:
            try:
                socket.create_connection((settings.mllp_host, settings.mllp_port), timeout=1).close()
                pending.discard("gateway")
            except OSError:
                pass
        for name, port in (("worker", settings.worker_ops_port), ("tracing", settings.tracing_ops_port)):
            if name not in pending:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    pending.discard(name)
            except OSError:
                pass
        if (dead := exited()) is not None:
            raise RuntimeError(f"{dead} exited during start-up; see its log in {settings.state_dir / 'logs'}")
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"services not ready after {timeout_s:.0f}s: {', '.join(sorted(pending))}")
        time.sleep(0.3)
