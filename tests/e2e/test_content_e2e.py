"""What the store cannot carry, sent over the real MLLP port: the gateway, Kafka, the worker and
PostgreSQL as real processes. A refused message gets AE/AR with an ERR that says where, is kept on the
rejected topic, and none of its results go further; whatever is accepted is stored, and the worker
keeps consuming."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labflow_testkit.processes import wait_until
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.domain.rejection import Rejection
from services.simulator.oru import Observation, Order, Patient, build_oru_r01, random_patient
from tests.support import mllp_send

pytestmark = pytest.mark.e2e


def message(control_id: str, specimen_id: str, patient: Patient | None = None) -> bytes:
    result_time = datetime.now(UTC) - timedelta(hours=1)
    order = Order(
        specimen_id,
        "258500001",
        result_time - timedelta(hours=3),
        [
            Observation("94500-6", "260373001", "F", result_time),
            Observation("94558-4", "NEGATIF", "F", result_time),
        ],
    )
    patient = patient or random_patient(random.Random(control_id), without_ins=0.0)
    return build_oru_r01("LAB-E2E", control_id, [(patient, [order])])


def topic_values(settings: Settings, topic: str) -> list[bytes]:
    """Every record value of `topic`, read from the start to its current end."""
    consumer = Consumer(
        {"bootstrap.servers": settings.require_kafka(), "group.id": f"probe-{uuid.uuid4().hex}"}
    )
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)
            for p in range(settings.topic_partitions)
        }
        wanted = {p: high for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in wanted])
        values: list[bytes] = []
        while wanted:
            for record in consumer.consume(500, 0.5):
                if record.error() is None:
                    values.append(record.value() or b"")
                    partition, offset = record.partition(), record.offset()
                    assert offset is not None, f"a record of {topic} consumed without its offset"
                    if partition in wanted and offset >= wanted[partition] - 1:
                        del wanted[partition]
        return values
    finally:
        consumer.close()


def stored(settings: Settings, control_ids: list[str]) -> dict[str, set[str]]:
    """result_id of the rows in `results` per message control id."""
    found: dict[str, set[str]] = {c: set() for c in control_ids}
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        query = "SELECT message_control_id, result_id FROM results WHERE message_control_id = ANY(%s)"
        for control_id, result_id in conn.execute(query, (control_ids,)).fetchall():
            found[control_id].add(result_id)
    return found


def rows_for(settings: Settings, control_id: str) -> list[str]:
    return sorted(stored(settings, [control_id])[control_id])


def test_a_nul_in_spm_2_gets_ae_at_spm_2_is_kept_as_rejected_and_never_reaches_the_results(
    services: Settings,
) -> None:
    raw = message("NUL-0001", "NULSPEC1")
    assert raw.count(b"SPM|1|NULSPEC1") == 1
    poisoned = raw.replace(b"SPM|1|NULSPEC1", b"SPM|1|NUL\x00SPEC1")

    ack, after = mllp_send(services.mllp_port, poisoned, message("NUL-0002", "NULSPEC2"))

    assert (ack.code, ack.control_id) == ("AE", "NUL-0001")
    (err,) = ack.errors
    assert "|SPM^1^2^1^1|102^" in err and "U+0000 (NUL)" in err
    assert (after.code, after.control_id) == ("AA", "NUL-0002")
    wait_until(lambda: rows_for(services, "NUL-0002"), what="the message sent after the refused one")

    rejected = [Rejection.model_validate_json(v) for v in topic_values(services, services.topics.rejected)]
    (kept,) = [r for r in rejected if r.message_control_id == "NUL-0001"]
    assert (kept.payload, kept.ack_code, kept.lab, kept.stage) == (poisoned, "AE", "LAB-E2E", "gateway")
    assert [(r.segment, r.sequence, r.field, r.component, r.code) for r in kept.reasons] == [
        ("SPM", 1, 2, 1, "102")
    ]
    results = [json.loads(v) for v in topic_values(services, services.topics.results)]
    assert not [r for r in results if r["message_control_id"] == "NUL-0001"]
    assert rows_for(services, "NUL-0001") == []


# -- the property: anything in any field, and the pipeline stays whole -----------------------------

_FRAMING = (b"\x0b", b"\x1c")
_NASTY = [
    b"\x00",
    b"\x01",
    b"\x07",
    b"\x0c",
    b"\x1b",
    b"\x1f",
    b"\x7f",
    "\u0085".encode(),
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\t",
    b"\r\n",
    b"\\X00\\",
    b"\\X0D\\",
    b"\\F\\",
    b"|",
    b"^",
    b"&",
    b"~",
]
values = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
    st.tuples(st.text("abcXYZ09 -", max_size=8), st.sampled_from(_NASTY), st.text("abc", max_size=4)).map(
        lambda t: t[0].encode() + t[1] + t[2].encode()
    ),
    st.integers(150, 3000).map(lambda n: b"L" * n),
    st.text(min_size=150, max_size=400).map(str.encode),
    st.sampled_from([b"", b"POSITIF", b"NEGATIF", "Zoë Lefèvre".encode(), b"75011", b"F"]),
).map(lambda v: v.replace(_FRAMING[0], b"").replace(_FRAMING[1], b""))


def _positions(raw: bytes) -> list[tuple[int, int]]:
    """(segment index, field index in its `|` split) of every field, MSH-1, MSH-2 and MSH-10 aside
    (MSH-10 identifies the message to the test; MSH-1/2 are the delimiters)."""
    positions = []
    for s, segment in enumerate(raw.rstrip(b"\r").split(b"\r")):
        for f in range(1, len(segment.split(b"|"))):
            if s > 0 or f not in (1, 9):  # split index 1 is MSH-2, 9 is MSH-10
                positions.append((s, f))
    return positions


def _mutate(raw: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    segments = [s.split(b"|") for s in raw.rstrip(b"\r").split(b"\r")]
    positions = _positions(raw)
    for choice, value in edits:
        s, f = positions[choice % len(positions)]
        if s == 0:  # MSH keeps its field structure, for MSH-10 to stay where it is
            value = value.replace(b"|", b"/").replace(b"\r", b"").replace(b"\n", b"")
        segments[s][f] = value
    return b"\r".join(b"|".join(fields) for fields in segments) + b"\r"


def test_anything_in_any_field_is_stored_when_accepted_only_then_and_the_worker_keeps_consuming(
    services: Settings,
) -> None:
    answered: dict[str, str] = {}
    patient = random_patient(random.Random(11), without_ins=0.0)

    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(edits=st.lists(st.tuples(st.integers(0, 10_000), values), min_size=1, max_size=3))
    def send(edits: list[tuple[int, bytes]]) -> None:
        control_id = f"HYP-{uuid.uuid4().hex[:12]}"
        raw = _mutate(message(control_id, f"HS{uuid.uuid4().hex[:10]}", patient), edits)
        (ack,) = mllp_send(services.mllp_port, raw)
        assert ack.code in {"AA", "AE", "AR"}, ack.raw
        assert ack.control_id == control_id
        if ack.code != "AA":
            assert ack.errors, ack.raw
        answered[control_id] = ack.code

    send()
    (last,) = mllp_send(services.mllp_port, message("HYP-LAST", "HYPLAST"))
    assert last.code == "AA"
    wait_until(lambda: rows_for(services, "HYP-LAST"), timeout_s=30, what="the valid message sent last")

    def accepted_results() -> dict[str, set[str]]:
        by_control_id: dict[str, set[str]] = {}
        for value in topic_values(services, services.topics.results):
            record = json.loads(value)
            by_control_id.setdefault(record["message_control_id"], set()).add(record["result_id"])
        return by_control_id

    def dead_letters() -> set[str]:
        """result_id of each result the worker isolated (dead-lettered with its reason)."""
        found = set()
        for value in topic_values(services, services.topics.rejected):
            rejection = Rejection.model_validate_json(value)
            if rejection.stage == "worker":
                try:
                    found.add(str(json.loads(rejection.payload)["result_id"]))
                except (ValueError, KeyError, TypeError):
                    continue
        return found

    published = accepted_results()
    accepted = [c for c, code in answered.items() if code == "AA"]
    missing = [c for c in accepted if not published.get(c)]
    assert not missing, f"acknowledged AA but none of their results was published: {missing}"

    expected = set().union(*(published[c] for c in accepted))

    def not_kept() -> set[str]:
        # by result_id: two messages whose edits gave one result the same key share one row
        with psycopg.connect(libpq_url(services.require_database())) as conn:
            query = "SELECT result_id FROM results WHERE result_id = ANY(%s)"
            rows = {r[0] for r in conn.execute(query, (sorted(expected),)).fetchall()}
        return expected - rows - dead_letters()

    try:
        wait_until(lambda: not not_kept(), timeout_s=45, interval_s=0.5, what="every result acknowledged AA")
    except AssertionError:
        lost = not_kept()
        owners = sorted(c for c in accepted if published[c] & lost)
        raise AssertionError(
            f"acknowledged AA, neither stored nor dead-lettered: {lost} (of {owners})"
        ) from None
    refused = [c for c, code in answered.items() if code != "AA"]
    assert not [c for c in refused if c in published], "a refused message had a result published"
    assert not any(stored(services, refused).values()), "a refused message had a result stored"
    assert len(answered) >= 30
