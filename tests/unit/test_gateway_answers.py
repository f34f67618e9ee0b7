"""Every message gets an answer (SPEC §9.1), whatever fails and whatever its size; in process, with a
publisher stand-in that records what it was asked to write."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from nacl.public import PrivateKey

from services.core.config import Settings, Topics
from services.core.domain.model import Transport
from services.core.record_sizes import ENVELOPE_BYTES, SizeLimits, base64_size
from services.gateway.identity import IdentityProtector
from services.gateway.intake import Intake, IntakeOutcome
from services.gateway.mllp import END, START
from services.gateway.mllp_server import MllpServer
from services.gateway.publish import DeliveryFailed, Record, RecordTooLarge
from services.simulator.client import Ack
from services.simulator.oru import Observation, Order, build_oru_r01, random_patient


def message(control_id: str, note: str = "") -> bytes:
    result_time = datetime.now(UTC) - timedelta(hours=1)
    order = Order(
        f"ANS-{control_id}", "258500001", result_time - timedelta(hours=2),
        [Observation("94500-6", "NEGATIF", "F", result_time)],
    )
    er7 = build_oru_r01("LAB-UNIT", control_id, [(random_patient(random.Random(control_id)), [order])])
    return er7 + (f"ZPD|{note}\r".encode() if note else b"")


class Publisher:
    """What KafkaPublisher offers the intake: `publish`, `fits`, `max_record_bytes`."""

    def __init__(self, max_record_bytes: int = 10**9, fail: BaseException | None = None) -> None:
        self.max_record_bytes = max_record_bytes
        self.fail = fail
        self.written: list[Record] = []

    def fits(self, record: Record) -> bool:
        return record.size() <= self.max_record_bytes

    async def publish(self, records: Sequence[Record]) -> None:
        if self.fail is not None:
            raise self.fail
        for record in records:
            if not self.fits(record):
                raise RecordTooLarge(record.size(), self.max_record_bytes)
        self.written += records


class BrokenIntake(Intake):
    """An intake with a bug: handling any message raises."""

    async def receive_hl7(
        self, raw: bytes, transport: Transport, authenticated_lab: str | None = None
    ) -> IntakeOutcome:
        raise KeyError("boom")


def intake(publisher: Publisher, kind: type[Intake] = Intake) -> Intake:
    protector = IdentityProtector(secrets.token_bytes(32), bytes(PrivateKey.generate().public_key))
    return kind(publisher, Topics("unit."), protector)


def test_kafka_limits_follow_the_documented_intake_limits() -> None:
    limits = SizeLimits.of(Settings(mllp_max_message_bytes=1_048_576, http_max_body_bytes=10_485_760))
    assert limits.payload_bytes == 10_485_760
    # a rejection carries the largest payload in base64, plus its envelope
    assert limits.record_bytes == base64_size(10_485_760) + ENVELOPE_BYTES == 14_046_552
    assert limits.topic_bytes > limits.record_bytes > 4 * 10_485_760 // 3
    small = SizeLimits(1000, 1000)
    assert small.topic_bytes > 1_000_000, "never below the producer's batch.size"


def test_a_record_too_large_for_kafka_is_refused_with_ar_and_its_digest_kept() -> None:
    publisher = Publisher(max_record_bytes=20_000)
    raw = message("BIG-1", "x" * 30_000)
    outcome = asyncio.run(intake(publisher).receive_hl7(raw, Transport.MLLP))
    assert outcome.ack_code == "AR"
    assert "over the 20000-byte limit" in outcome.issues[0].text
    [rejected] = [r for r in publisher.written if r.topic == "unit.lab.results.rejected.v1"]
    rejection = json.loads(rejected.value)
    assert rejection["payload_base64"] == ""
    assert rejection["payload_sha256"] == hashlib.sha256(raw).hexdigest()
    assert rejection["payload_size"] == len(raw)
    assert rejection["message_control_id"] == "BIG-1"


def test_kafka_not_confirming_is_ae() -> None:
    failing = intake(Publisher(fail=DeliveryFailed("timed out")))
    outcome = asyncio.run(failing.receive_hl7(message("D"), Transport.MLLP))
    assert outcome.ack_code == "AE" and "send it again" in outcome.issues[0].text


def test_an_unexpected_failure_is_ae_not_an_exception() -> None:
    failing = intake(Publisher(fail=RuntimeError("boom")))
    outcome = asyncio.run(failing.receive_hl7(message("E"), Transport.MLLP))
    assert outcome.ack_code == "AE" and "send it again" in outcome.issues[0].text
    assert outcome.control_id == "E"


@pytest.mark.parametrize("where", ["intake", "publisher"])
def test_mllp_answers_ae_when_handling_fails_and_keeps_the_connection(where: str) -> None:
    """Before: an exception in a message's handling closed the connection without an ACK."""

    async def scenario() -> list[Ack]:
        publisher = Publisher(fail=KeyError("boom") if where == "publisher" else None)
        the_intake = intake(publisher, BrokenIntake if where == "intake" else Intake)
        server = MllpServer(
            the_intake, host="127.0.0.1", port=0, max_message_bytes=100_000, max_connections=10,
            idle_timeout_s=5, frame_timeout_s=5,
        )
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        acks = []
        for control_id in ("F1", "F2"):
            writer.write(START + message(control_id) + END)
            data = await asyncio.wait_for(reader.readuntil(END), 5)
            acks.append(Ack.parse(data[1:-2]))
        writer.close()
        await server.drain(1)
        return acks

    acks = asyncio.run(scenario())
    assert [(a.code, a.control_id) for a in acks] == [("AE", "F1"), ("AE", "F2")]
    assert all("send it again" in a.errors[0] for a in acks)


@pytest.mark.parametrize("failing", ["normalize", "publish"])
def test_http_answers_503_with_retry_after_never_500(failing: str) -> None:
    """Before: an exception while handling a body (e.g. MSG_SIZE_TOO_LARGE) was 500 {"error":"internal"}."""
    import httpx

    from services.gateway.http_api import create_app
    from services.gateway.labs import Authentication, Lab

    lab = Lab("LAB-UNIT", "Unit", None, True, None, None)

    class Registry:
        async def authenticate(self, _token: str) -> Authentication:
            return Authentication(lab)

    the_intake = intake(Publisher(fail=OSError("boom") if failing == "publish" else None),
                        BrokenIntake if failing == "normalize" else Intake)
    app = create_app(the_intake, Registry(), None, max_body_bytes=100_000)  # type: ignore[arg-type]

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.post(
                "/v1/results/hl7", content=message("H1"), headers={"Authorization": "Bearer t"}
            )

    response = asyncio.run(post())
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert "send it again" in response.json()["detail"]


def test_deadlines_count_from_the_frame_start_and_the_last_answer_not_from_each_read() -> None:
    """A byte every 0.2 s inside a frame, or outside frames after a message, does not hold the
    connection past its deadline (before: every read restarted the timeout)."""

    async def closed_after(*chunks: bytes) -> float:
        server = MllpServer(
            intake(Publisher()), host="127.0.0.1", port=0, max_message_bytes=100_000, max_connections=10,
            idle_timeout_s=1.0, frame_timeout_s=1.0, first_message_timeout_s=0.5,
        )
        await server.start()
        loop = asyncio.get_running_loop()
        began = loop.time()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for chunk in chunks:
            writer.write(chunk)
        try:
            while loop.time() - began < 5:
                try:
                    if not await asyncio.wait_for(reader.read(65536), 0.2):
                        break
                except TimeoutError:
                    writer.write(b"x" if chunks and chunks[-1] != END else b"\r")
                except ConnectionError:
                    break
            return loop.time() - began
        finally:
            writer.close()
            await server.drain(1)

    async def scenarios() -> tuple[float, float, float]:
        return (
            await closed_after(),  # silent
            await closed_after(START + b"MSH|^~\\&|"),  # a frame that never ends
            await closed_after(START + message("IDLE") + END),  # then only bytes outside frames
        )

    silent, trickle, stray = asyncio.run(scenarios())
    assert 0.4 < silent < 0.9
    assert 0.9 < trickle < 1.5
    assert 0.9 < stray < 1.6
