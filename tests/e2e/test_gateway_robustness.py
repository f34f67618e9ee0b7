"""The gateway under hostile and heavy input, over its real MLLP port."""

from __future__ import annotations

import asyncio
import random
import socket
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.config import Settings
from services.simulator.client import Ack, MllpClient
from services.simulator.demo import PlannedMessage, plan_traffic
from services.simulator.oru import Observation, Order, build_oru_r01, random_patient

pytestmark = pytest.mark.e2e
START, END = b"\x0b", b"\x1c\x0d"


def valid_message(control_id: str) -> bytes:
    result_time = datetime.now(UTC) - timedelta(hours=1)
    order = Order(
        f"ROB-{control_id}",
        "258500001",
        result_time - timedelta(hours=2),
        [Observation("94500-6", "NEGATIF", "F", result_time)],
    )
    return build_oru_r01("LAB-E2E", control_id, [(random_patient(random.Random(control_id)), [order])])


class RawConnection:
    """A blocking socket: send exact bytes, read one framed answer (or learn the peer closed)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> bytes | None:
        while END not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        frame, self.buffer = self.buffer.split(END, 1)
        return frame[frame.index(START) + 1 :]

    def close(self) -> None:
        self.sock.close()


mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "drop", "insert"]), st.floats(0, 1), st.integers(1, 255)),
    min_size=1,
    max_size=6,
)


def mutate(message: bytes, edits: list[tuple[str, float, int]]) -> bytes:
    data = bytearray(message)
    for kind, where, byte in edits:
        if not data:
            break
        i = min(int(where * len(data)), len(data) - 1)
        if kind == "flip":
            data[i] = byte
        elif kind == "drop":
            del data[i]
        else:
            data.insert(i, byte)
    return bytes(data).replace(START, b"?").replace(b"\x1c", b"?")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.one_of(
        st.binary(max_size=600).map(lambda b: b.replace(START, b"").replace(b"\x1c", b"")),
        mutations.map(lambda edits: mutate(valid_message("MUT1"), edits)),
    )
)
def test_any_framed_payload_gets_one_answer_and_the_connection_keeps_serving(
    services: Settings, payload: bytes
) -> None:
    conn = RawConnection(services.mllp_port)
    try:
        conn.send(START + payload + END)
        answer = conn.answer()
        assert answer is not None, "the gateway closed instead of answering"
        assert Ack.parse(answer).code in {"AA", "AE", "AR"}
        conn.send(b"stray bytes outside a frame\r\n" + START + valid_message("AFTER") + END)
        follow_up = conn.answer()
        assert follow_up is not None and Ack.parse(follow_up).code == "AA"
    finally:
        conn.close()


def test_oversized_message_gets_ar_and_the_connection_stays_usable(services: Settings) -> None:
    conn = RawConnection(services.mllp_port)
    try:
        huge = valid_message("BIG1").replace(
            b"NEGATIF", b"NEGATIF" + b"x" * (services.mllp_max_message_bytes + 10)
        )
        conn.send(START + huge + END)
        ack = Ack.parse(conn.answer() or b"")
        assert (ack.code, ack.control_id) == ("AR", "BIG1")
        assert "exceeds" in ack.errors[0]
        conn.send(START + valid_message("BIG2") + END)
        assert Ack.parse(conn.answer() or b"").code == "AA"
    finally:
        conn.close()


def test_fifty_labs_at_once_get_the_right_ack_and_every_payload_is_kept_raw(services: Settings) -> None:
    plan = plan_traffic(labs=50, messages=600, seed=4, run_tag="R50")
    acks: list[tuple[str, str, Ack]] = []

    async def lab(messages: list[PlannedMessage]) -> None:
        client = await MllpClient("127.0.0.1", services.mllp_port).connect()
        try:
            for m in messages:
                acks.append((m.expect, m.control_id, await client.send(m.payload)))
        finally:
            await client.close()

    async def everyone() -> None:
        await asyncio.gather(*(lab(messages) for messages in plan))

    asyncio.run(everyone())

    assert len(acks) == 600
    wrong = [
        (expect, cid, a.code, a.errors) for expect, cid, a in acks if a.code != expect or a.control_id != cid
    ]
    assert wrong == []
    assert {a.code for _, _, a in acks} == {"AA", "AE"}
    assert all(a.errors for expect, _, a in acks if expect == "AE")
    consumer = Consumer({"bootstrap.servers": services.require_kafka(), "group.id": "raw-probe"})
    kept = sum(
        consumer.get_watermark_offsets(TopicPartition(services.topics.raw, p), 10)[1]
        for p in range(services.topic_partitions)
    )
    consumer.close()
    assert kept == 600
