"""The worker's lab-traffic consumers on the real stack: the `labflow worker` process is killed (-9)
right after committing lab-traffic batches, again and again, and restarted: the per-lab AA/AE/AR counts
and the kept rejections end exactly as the gateway answered, each message counted once."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import ServiceProcess, free_port, wait_until
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.domain.model import Transport
from services.core.kafka import producer_config
from services.gateway.hl7.normalize import APPLICATION_INTERNAL_ERROR, Issue, normalize_header
from services.gateway.intake import rejection_for
from tests.support import lab_acks, lab_message, through_intake

pytestmark = pytest.mark.integration
SENT = {"LAB-K1": {"AA": 120, "AE": 30, "AR": 20}, "LAB-K2": {"AA": 60, "AE": 0, "AR": 10}}


def over_the_limit(settings: Settings, lab: str) -> None:
    """What the gateway writes for a payload over the size limit: a rejection with its SHA-256 only,
    no raw copy (`Intake.refuse_oversized`)."""
    head = lab_message(lab, f"{lab}-BIG")[:200]
    issue = Issue.about_message(APPLICATION_INTERNAL_ERROR, "message of 9999999 bytes exceeds the limit",
                                reject=True)
    rejection = rejection_for(b"", Transport.MLLP, datetime.now(UTC), "AR", normalize_header(head), [issue],
                              digest=(hashlib.sha256(b"big").hexdigest(), 9_999_999))
    producer = Producer(producer_config(settings))
    producer.produce(settings.topics.rejected, rejection.model_dump_json().encode(),
                     rejection.rejection_id.encode())
    producer.produce(settings.topics.rejected, b"not a rejection")  # dead-lettered, counted for nobody
    assert producer.flush(30) == 0


def killed_or_done(process: subprocess.Popen[bytes], settings: Settings, expected: object) -> bool:
    return process.poll() is not None or lab_acks(settings) == expected


def kept_rejections(settings: Settings) -> dict[str, int]:
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        rows = conn.execute("SELECT lab, count(*)::int FROM lab_rejections GROUP BY lab").fetchall()
    return {str(lab): int(n) for lab, n in rows}


def test_killed_after_its_commits_the_worker_counts_each_message_once(fresh_settings: Settings,
                                                                        tmp_path: Path) -> None:
    settings = fresh_settings.model_copy(update={"worker_batch_size": 15})
    payloads = [lab_message(lab, f"{lab}-{answer}-{i}", answer)
                for lab, answers in SENT.items() for answer, n in answers.items() for i in range(n)]
    payloads.append(b"this is not HL7")  # AR with no lab: a raw copy and a rejection nobody's portal shows
    answered = through_intake(settings, payloads)
    assert answered == [a for answers in SENT.values() for a, n in answers.items() for _ in range(n)] + ["AR"]
    over_the_limit(settings, "LAB-K1")
    expected = {
        "LAB-K1": (170, 30, 21, 50),  # messages with a raw copy, AE, AR, rejections with a raw copy
        "LAB-K2": (70, 0, 10, 10),
    }

    kills = 0
    for _ in range(6):
        env = settings_env(settings, LABFLOW_WORKER_OPS_PORT=str(free_port()),
                           LABFLOW_FAILPOINTS="traffic-after-db-commit=0.3")
        worker = ServiceProcess("worker", env, tmp_path)
        try:
            wait_until(partial(killed_or_done, worker.proc, settings, expected),
                       timeout_s=120, what="the worker killed by its failpoint, or done")
            kills += worker.proc.returncode == -9
        finally:
            worker.stop()
        if lab_acks(settings) == expected:
            break
    print(f"worker killed {kills} times after a lab-traffic commit")
    assert kills >= 1, "the failpoint never fired: the test proved nothing"

    env = settings_env(settings, LABFLOW_WORKER_OPS_PORT=str(free_port()))
    final = ServiceProcess("worker", env, tmp_path)
    try:
        wait_until(lambda: lab_acks(settings) == expected, timeout_s=120,
                   what=f"lab traffic counted exactly once ({lab_acks(settings)} != {expected})")
        wait_until(lambda: kept_rejections(settings) == {"LAB-K1": 51, "LAB-K2": 10}, timeout_s=60,
                   what="every rejection of a lab kept once")
    finally:
        final.stop()
    aa = {lab: messages - with_copy for lab, (messages, _ae, _ar, with_copy) in lab_acks(settings).items()}
    assert aa == {lab: answers["AA"] for lab, answers in SENT.items()}

