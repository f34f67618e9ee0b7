"""Contact-tracing handoff through the real broker and database, to a real HTTP server standing in
for the tracing platform (it records every request and fails on demand)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Producer
from pydantic import SecretStr
from typer.testing import CliRunner

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import ServiceProcess, free_port, http_status, port_open, wait_until
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.domain.case_event import CaseEventMessage
from services.core.domain.model import Sex, TestKind
from services.core.kafka import producer_config
from services.core.sealing import seal
from services.tracing import cli as tracing_cli
from services.tracing.app import build_service
from services.tracing.deliver import PlatformClient
from services.tracing.handoff import (
    SIGNATURE_HEADER,
    Delivered,
    HandoffRequest,
    Permanent,
    Retry,
    build_request,
    signature,
    verify_signature,
)
from tests.support import dead_letters

pytestmark = pytest.mark.integration
SECRET = "test-signing-secret"


# -- a tracing platform on a real socket ------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    status: int = 201
    delay_s: float = 0.0
    retry_after: str | None = None


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    status: int = 0
    answered_at: float | None = None  # None: the client was gone when the answer was written
    client_port: int = 0

    @property
    def document(self) -> dict[str, Any]:
        document = json.loads(self.body)
        assert isinstance(document, dict), f"the hand-off body is not a JSON object: {self.body[:200]!r}"
        return document

    @property
    def event_id(self) -> str:
        return str(self.document["event_id"])


@dataclass
class FakePlatform:
    """Answers each case's requests from its script, then `default`."""

    default: Answer = field(default_factory=Answer)
    scripts: dict[str, list[Answer]] = field(default_factory=lambda: defaultdict(list))
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_for(self, case_id: str) -> Answer:
        with self.lock:
            script = self.scripts.get(case_id)
            return script.pop(0) if script else self.default

    def delivered(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300 and r.answered_at is not None]

    def for_case(self, case_id: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.document["case_id"] == case_id]


def _handler(platform: FakePlatform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            request = Request(self.path, headers, body, time.monotonic(), client_port=self.client_address[1])
            with platform.lock:
                platform.requests.append(request)
            answer = platform.answer_for(request.document["case_id"])
            time.sleep(answer.delay_s)
            request.status = answer.status
            try:
                self.send_response(answer.status)
                if answer.retry_after is not None:
                    self.send_header("Retry-After", answer.retry_after)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                self.wfile.flush()
                request.answered_at = time.monotonic()
            except OSError:
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


@pytest.fixture
def platform() -> Iterator[tuple[FakePlatform, str]]:
    fake = FakePlatform()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}/cases"
    server.shutdown()
    server.server_close()


@pytest.fixture
def settings(fresh_settings: Settings, platform: tuple[FakePlatform, str]) -> Settings:
    return fresh_settings.model_copy(update={
        "tracing_url": platform[1],
        "tracing_signing_secret": SecretStr(SECRET),
        "tracing_group": f"test-tracing-{uuid.uuid4().hex[:8]}",
        "tracing_ops_port": free_port(),
        "tracing_timeout_s": 1.0,
        "tracing_backoff_initial_s": 0.1,
        "tracing_backoff_max_s": 0.4,
        "tracing_concurrency": 4,
    })


# -- helpers ----------------------------------------------------------------------------------------
def identity_of(case: str) -> dict[str, Any]:
    return {"birth_name": f"DUPONT-{case}", "given_names": "Zoé", "birth_date": "1980-02-29",
            "phone": "+33612345678", "email": f"{case}@example.org"}


def case_event(settings: Settings, type_: str, case_id: str, **overrides: Any) -> CaseEventMessage:
    assert settings.tracing_public_key is not None
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "event_id": uuid.uuid4().hex, "type": type_, "case_id": case_id, "patient_pseudonym": case_id * 2,
        "onset_day": date(2022, 1, 9), "last_positive_day": date(2022, 1, 9), "department": "75",
        "region": "11", "age_class": "49", "sex": Sex.FEMALE, "test_kind": TestKind.ANTIGEN,
        "sealed_identity": (seal(bytes.fromhex(settings.tracing_public_key), identity_of(case_id))
                            if type_ == "case.opened" else None),
        "first_received_at": now, "occurred_at": now,
    }
    fields.update(overrides)
    return CaseEventMessage.model_validate(fields)


def update_request(case_id: str) -> HandoffRequest:
    """A signed `case.updated` request (no identity: no tracing key needed), for the client alone."""
    now = datetime.now(UTC)
    event = CaseEventMessage.model_validate({
        "event_id": uuid.uuid4().hex, "type": "case.updated", "case_id": case_id,
        "patient_pseudonym": "p" * 64, "onset_day": date(2022, 1, 9), "last_positive_day": date(2022, 1, 9),
        "department": "75", "region": "11", "age_class": "49", "sex": Sex.FEMALE,
        "test_kind": TestKind.ANTIGEN, "first_received_at": now, "occurred_at": now,
    })
    return build_request(event, None, "case.opened", SECRET.encode(), int(time.time()))


def publish(settings: Settings, events: list[CaseEventMessage]) -> None:
    producer = Producer(producer_config(settings))
    for e in events:
        producer.produce(settings.topics.cases, e.model_dump_json().encode(), e.patient_pseudonym.encode())
    assert producer.flush(30) == 0


def deliveries(settings: Settings) -> dict[str, dict[str, Any]]:
    """event_id -> its tracing_deliveries row."""
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        cur = conn.execute(
            "SELECT event_id, case_id, type, status, attempts, last_error, delivered_at, first_received_at, "
            "message::text, sealed_identity, lease_until FROM tracing_deliveries"
        )
        columns = [c.name for c in cur.description or ()]
        return {row[0]: dict(zip(columns, row, strict=True)) for row in cur.fetchall()}


def statuses(settings: Settings) -> dict[str, str]:
    return {event_id: row["status"] for event_id, row in deliveries(settings).items()}


def all_delivered(settings: Settings, events: list[CaseEventMessage]) -> bool:
    current = statuses(settings)
    return all(current.get(e.event_id) == "delivered" for e in events)


@contextmanager
def running(settings: Settings) -> Iterator[None]:
    service = build_service(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        wait_until(service.ready, timeout_s=20, what="the tracing service to be ready")
        yield
    finally:
        service.stop()
        thread.join(30)


def cli(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(tracing_cli.app, list(args), env=settings_env(settings))
    return result.exit_code, result.output


# -- tests ------------------------------------------------------------------------------------------
def test_cases_are_handed_over_signed_in_order_and_once(
    settings: Settings, platform: tuple[FakePlatform, str]
) -> None:
    fake, _url = platform
    a, b, c = (uuid.uuid4().hex for _ in range(3))
    fake.scripts[c] = [Answer(500), Answer(503)]  # c's opening needs three attempts
    a_opened = case_event(settings, "case.opened", a)
    events = [
        a_opened, case_event(settings, "case.updated", a),
        case_event(settings, "case.opened", b), case_event(settings, "case.retracted", b),
        case_event(settings, "case.updated", b),  # b reopened
        case_event(settings, "case.opened", c), case_event(settings, "case.updated", c),
        a_opened,  # re-published (same event_id) within the stream
    ]
    with running(settings):
        publish(settings, events)
        wait_until(lambda: all_delivered(settings, events), timeout_s=20, what="every event delivered")
        publish(settings, [a_opened])  # re-published again, long after its delivery
        time.sleep(1.0)

    delivered = fake.delivered()
    by_event = defaultdict(list)
    for r in delivered:
        by_event[r.event_id].append(r)
    assert sorted(by_event) == sorted({e.event_id for e in events})
    assert all(len(rs) == 1 for rs in by_event.values()), "an event was delivered twice"

    for e in events:
        (request,) = by_event[e.event_id]
        headers = request.headers
        assert verify_signature(SECRET.encode(), headers[SIGNATURE_HEADER.lower()], request.body,
                                int(time.time()))
        body = request.document
        assert body["case_id"] == e.case_id and body["event"] == e.type
        if e.type == "case.opened":
            assert headers["idempotency-key"] == e.case_id
            assert request.path == "/cases"
            assert body["identity"] == identity_of(e.case_id)
        else:
            assert headers["idempotency-key"] == f"{e.case_id}:{e.event_id}"
            assert request.path == f"/cases/{e.case_id}"
            assert "identity" not in body

    # per case: each event sent only after the previous one was acknowledged
    for case in (a, b, c):
        requests = sorted(fake.for_case(case), key=lambda r: r.received_at)
        answered = [r for r in requests if 200 <= r.status < 300]
        for earlier, later in itertools.pairwise(answered):
            assert earlier.answered_at is not None and later.received_at >= earlier.answered_at
    (b_update,) = [r for r in delivered
                   if r.document["case_id"] == b and r.document["event"] == "case.updated"]
    assert b_update.document["reopened"] is True
    assert [r.status for r in fake.for_case(c)][:3] == [500, 503, 201]

    rows = deliveries(settings)
    assert len(rows) == len({e.event_id for e in events})
    assert all(row["status"] == "delivered" and row["delivered_at"] is not None for row in rows.values())
    assert rows[events[5].event_id]["attempts"] == 3 and rows[events[5].event_id]["last_error"] == "HTTP 503"
    assert rows[a_opened.event_id]["first_received_at"] == a_opened.first_received_at
    for row in rows.values():  # only the sealed blob is kept
        assert "DUPONT" not in row["message"] and "+33612345678" not in row["message"]
        assert row["sealed_identity"] is None or "DUPONT" not in row["sealed_identity"]


def test_the_platform_client_keeps_one_connection_and_reads_every_failure_as_an_outcome(
    platform: tuple[FakePlatform, str]
) -> None:
    fake, url = platform
    fake.scripts.update({"slow": [Answer(201, delay_s=1.5)], "busy": [Answer(503, retry_after="7")],
                         "moved": [Answer(302)], "gone": [Answer(410)]})

    async def exchange() -> list[Any]:
        client = PlatformClient(url, timeout_s=0.5, max_connections=1)
        try:
            cases = ("a b/1", "a2", "slow", "busy", "moved", "gone")
            return [await client.send(update_request(case)) for case in cases]
        finally:
            await client.aclose()

    outcomes = asyncio.run(exchange())
    assert outcomes[:2] == [Delivered(201), Delivered(201)]
    assert outcomes[2] == Retry("no answer within 0.5 s")
    assert outcomes[3] == Retry("HTTP 503", 7.0)
    assert outcomes[4:] == [Permanent("HTTP 302"), Permanent("HTTP 410")]  # a redirect is not followed
    first, second = fake.requests[:2]
    assert first.path == "/cases/a%20b%2F1"  # the case id as one path segment
    assert first.client_port == second.client_port  # the answer was read: the connection is kept
    assert first.headers["user-agent"] == "labflow-tracing"
    assert verify_signature(
        SECRET.encode(), first.headers[SIGNATURE_HEADER.lower()], first.body, int(time.time())
    )

    async def unreachable() -> Any:
        client = PlatformClient(f"http://127.0.0.1:{free_port()}/cases", timeout_s=2, max_connections=1)
        try:
            return await client.send(update_request("c"))
        finally:
            await client.aclose()

    refused = asyncio.run(unreachable())
    assert isinstance(refused, Retry) and refused.reason.startswith("ClientConnectorError")


def test_the_platform_client_goes_through_the_proxy_the_environment_names(
    platform: tuple[FakePlatform, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = platform
    proxy = url.removesuffix("/cases")  # the stand-in answers as the proxy would, with what it forwards
    for name in ("no_proxy", "NO_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)

    async def send(target: str) -> Any:
        client = PlatformClient(target, timeout_s=2, max_connections=1)
        try:
            return await client.send(update_request("c1"))
        finally:
            await client.aclose()

    assert asyncio.run(send("http://tracing.example.invalid/cases")) == Delivered(201)
    assert fake.requests[-1].path == "http://tracing.example.invalid/cases/c1"  # a proxy's request line
    monkeypatch.setenv("NO_PROXY", "tracing.example.invalid")
    refused = asyncio.run(send("http://tracing.example.invalid/cases"))  # straight: the name does not exist
    assert isinstance(refused, Retry) and len(fake.requests) == 1


def test_retries_on_5xx_429_and_timeouts_without_holding_up_other_cases(
    settings: Settings, platform: tuple[FakePlatform, str]
) -> None:
    fake, _url = platform
    settings = settings.model_copy(update={"tracing_max_attempts": 4})
    flaky, throttled, slow, down, healthy = (uuid.uuid4().hex for _ in range(5))
    fake.scripts[flaky] = [Answer(500), Answer(502)]
    fake.scripts[throttled] = [Answer(429, retry_after="2")]
    fake.scripts[slow] = [Answer(201, delay_s=2.5)]  # answered after the 1 s timeout: lost
    fake.scripts[down] = [Answer(503)] * 10
    fake.scripts[healthy] = [Answer(408)]
    events = {case: case_event(settings, "case.opened", case)
              for case in (flaky, throttled, slow, down, healthy)}

    with running(settings):
        started = time.monotonic()
        publish(settings, list(events.values()))
        others = [events[k] for k in (flaky, slow, healthy)]
        wait_until(lambda: all_delivered(settings, others), timeout_s=15, what="the retried cases delivered")
        assert time.monotonic() - started < 8, "a failing case held up the others"
        wait_until(lambda: statuses(settings).get(events[down].event_id) == "failed", timeout_s=15,
                   what="the case whose platform is down to give up")
        wait_until(lambda: all_delivered(settings, [events[throttled]]), timeout_s=10, what="429 retried")

    throttled_requests = fake.for_case(throttled)
    assert [r.status for r in throttled_requests] == [429, 201]
    assert throttled_requests[1].received_at - throttled_requests[0].received_at >= 1.9  # Retry-After: 2
    assert [r.status for r in fake.for_case(flaky)] == [500, 502, 201]
    assert [r.status for r in fake.for_case(healthy)] == [408, 201]
    slow_requests = fake.for_case(slow)
    assert len(slow_requests) == 2 and slow_requests[0].headers["idempotency-key"] == slow
    assert slow_requests[1].headers["idempotency-key"] == slow  # the retry of a lost answer: same key
    assert len(fake.for_case(down)) == 4
    rows = deliveries(settings)
    assert rows[events[down].event_id]["attempts"] == 4
    assert rows[events[down].event_id]["last_error"] == "gave up after 4 attempts: HTTP 503"
    assert rows[events[slow].event_id]["attempts"] == 2


def test_permanent_failures_are_listed_and_redelivered_by_the_operator(
    settings: Settings, platform: tuple[FakePlatform, str]
) -> None:
    fake, _url = platform
    rejected, other = uuid.uuid4().hex, uuid.uuid4().hex
    fake.scripts[rejected] = [Answer(400)]
    fake.scripts[other] = [Answer(422)]
    opened = case_event(settings, "case.opened", rejected)
    update = case_event(settings, "case.updated", rejected)
    other_opened = case_event(settings, "case.opened", other)

    with running(settings):
        publish(settings, [opened, update, other_opened])
        wait_until(lambda: statuses(settings).get(opened.event_id) == "failed"
                   and statuses(settings).get(other_opened.event_id) == "failed", timeout_s=15,
                   what="both cases failed")
        time.sleep(0.5)
        assert len(fake.for_case(rejected)) == 1, "a 4xx must not be retried, nor the update sent"
        assert statuses(settings)[update.event_id] == "pending"

        code, output = cli(settings, "failed")
        assert code == 0, output
        lines = {line.split("\t")[0]: line.split("\t") for line in output.splitlines()[1:]}
        assert lines[rejected][1:4] == ["case.opened", opened.event_id, "1"]
        assert lines[rejected][5:] == ["1", "HTTP 400"]  # one update waits behind it
        assert lines[other][-1] == "HTTP 422"
        assert "DUPONT" not in output and "+33612345678" not in output and "example.org" not in output

        assert cli(settings, "redeliver")[0] != 0  # neither a case nor --all-failed
        code, output = cli(settings, "redeliver", rejected)
        assert code == 0 and output.startswith("1 "), output
        wait_until(lambda: all_delivered(settings, [opened, update]), timeout_s=10, what="redelivered")
        assert statuses(settings)[other_opened.event_id] == "failed"

        code, output = cli(settings, "redeliver", "--all-failed")
        assert code == 0 and output.startswith("1 "), output
        wait_until(lambda: all_delivered(settings, [other_opened]), timeout_s=10, what="all redelivered")

    assert [r.status for r in fake.for_case(rejected)] == [400, 201, 201]
    assert [r.document["event"] for r in fake.for_case(rejected)] == ["case.opened", "case.opened",
                                                                      "case.updated"]
    assert cli(settings, "failed")[1].strip() == "no failed case events"
    assert cli(settings, "redeliver", rejected)[0] == 1  # nothing failed any more


def test_without_a_platform_events_are_kept_pending(
    settings: Settings, platform: tuple[FakePlatform, str]
) -> None:
    fake, _url = platform
    settings = settings.model_copy(update={"tracing_url": None})
    event = case_event(settings, "case.opened", uuid.uuid4().hex)
    with running(settings):
        publish(settings, [event])
        wait_until(lambda: statuses(settings).get(event.event_id) == "pending", timeout_s=10, what="stored")
        time.sleep(0.5)
    assert fake.requests == []
    assert deliveries(settings)[event.event_id]["attempts"] == 0


def test_kill_9_mid_delivery_then_restart_delivers_every_case_once(
    settings: Settings, platform: tuple[FakePlatform, str], tmp_path: Path
) -> None:
    fake, _url = platform
    settings = settings.model_copy(update={"tracing_timeout_s": 1.5, "tracing_concurrency": 3})
    fake.default = Answer(201, delay_s=0.6)  # a slow platform: requests are in flight when we kill
    cases = [uuid.uuid4().hex for _ in range(12)]
    events = [case_event(settings, "case.opened", case) for case in cases]
    events += [case_event(settings, "case.updated", case) for case in cases[:4]]
    env = settings_env(settings)

    first = ServiceProcess("tracing", env, tmp_path)
    try:
        publish(settings, events)
        wait_until(lambda: len(fake.delivered()) >= 4, timeout_s=20, what="the first deliveries")
        wait_until(lambda: any(r.status == 0 for r in fake.requests), timeout_s=5, what="requests in flight")
        first.kill()
        killed_at = time.monotonic()
    finally:
        first.stop()
    # What the restarted service finds: the 2xx it recorded before the crash, and nothing else. An event
    # is "in flight" when a request for it was received before the kill and its 2xx is not recorded
    # (not answered yet, or answered but killed before the write): only those may be sent again.
    before = statuses(settings)
    assert 0 < sum(s == "delivered" for s in before.values()) < len(events)
    in_flight = {r.event_id for r in fake.requests
                 if r.received_at < killed_at and before.get(r.event_id) != "delivered"}
    assert in_flight, "the kill was meant to happen while requests were in flight"

    fake.default = Answer(201)
    second = ServiceProcess("tracing", env, tmp_path)
    try:
        wait_until(lambda: all_delivered(settings, events), timeout_s=25, interval_s=0.2,
                   what=f"every event delivered after the restart; log:\n{second.log()}")
        metrics_url = f"http://127.0.0.1:{settings.tracing_ops_port}"
        # ready once the group handed it the partitions: after a kill -9 that waits for the dead
        # member's session to expire, while the events already stored are being delivered
        wait_until(lambda: http_status(f"{metrics_url}/readyz") == 200, timeout_s=30,
                   what="the restarted service to be ready")
        assert http_status(f"{metrics_url}/healthz") == 200

        def exposition() -> str:
            with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=2) as response:
                return str(response.read().decode())

        assert "labflow_tracing_handoff_delay_seconds_count" in exposition()
        wait_until(lambda: 'labflow_tracing_queue_events{status="pending"} 0.0' in exposition(), timeout_s=5,
                   what="the queue depth gauge to drop to 0")
    finally:
        second.stop()

    # every event got a 2xx; a second one only for an event in flight at the crash, or after the client
    # gave up waiting (its timeout) — never for an event whose 2xx the service had recorded
    answered: dict[str, list[Request]] = defaultdict(list)
    for r in fake.requests:
        if 200 <= r.status < 300:
            answered[r.event_id].append(r)
    assert set(answered) == {e.event_id for e in events}
    for event_id, requests in answered.items():
        *earlier, _last = sorted(requests, key=lambda r: r.received_at)
        for lost in earlier:
            waited = (lost.answered_at or float("inf")) - lost.received_at
            gave_up = waited >= settings.tracing_timeout_s
            assert event_id in in_flight or gave_up, (
                f"{event_id} sent again although the service had recorded its 2xx before the crash"
            )
            assert lost.received_at < killed_at or gave_up, f"{event_id} sent twice by the same process"
        assert len({r.headers["idempotency-key"] for r in requests}) == 1
    # order survives the crash: an update only after its opening's 2xx
    for case in cases[:4]:
        requests = fake.for_case(case)
        opening_ok = min(r.answered_at or 1e18 for r in requests if r.document["event"] == "case.opened"
                         and r.status == 201)
        assert all(r.received_at >= opening_ok for r in requests if r.document["event"] == "case.updated")


def test_the_local_standin_checks_signatures_and_records_cases_without_identity(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = settings_env(settings, LABFLOW_STATE_DIR=str(tmp_path))
    standin = ServiceProcess("tracing standin", env, tmp_path, "--port", str(port))
    try:
        wait_until(lambda: port_open(port), timeout_s=10, what="the stand-in to listen")
        event = case_event(settings, "case.opened", uuid.uuid4().hex)
        request = build_request(event, identity_of(event.case_id), None, SECRET.encode(), int(time.time()))
        url = f"http://127.0.0.1:{port}/cases"
        with httpx.Client() as client:
            assert client.post(url, content=request.body, headers=request.headers).status_code == 201
            assert client.post(url, content=request.body, headers=request.headers).status_code == 200
            forged = dict(request.headers)
            forged[SIGNATURE_HEADER] = signature(b"wrong", request.body, int(time.time()))
            assert client.post(url, content=request.body, headers=forged).status_code == 401
    finally:
        standin.stop(timeout_s=10)
    lines = (tmp_path / "tracing-standin" / "received.jsonl").read_text().splitlines()
    assert [json.loads(line)["case_id"] for line in lines] == [event.case_id]
    assert json.loads(lines[0])["event"] == "case.opened"
    assert "DUPONT" not in lines[0] and "+33612345678" not in lines[0]


def test_unreadable_and_unstorable_case_events_are_dead_lettered_and_the_others_stored(
    settings: Settings, platform: tuple[FakePlatform, str]
) -> None:


    before, after = (case_event(settings, "case.opened", uuid.uuid4().hex) for _ in range(2))
    unstorable = case_event(settings, "case.updated", "case\u0000id")  # PostgreSQL text refuses NUL
    with running(settings):
        producer = Producer(producer_config(settings))
        for value in (before.model_dump_json().encode(), b"{not json", unstorable.model_dump_json().encode(),
                      after.model_dump_json().encode()):
            producer.produce(settings.topics.cases, value, b"same-partition")
        assert producer.flush(30) == 0
        wait_until(lambda: all_delivered(settings, [before, after]), timeout_s=20, what="the good events")

        dead = dead_letters(settings, 2)
    assert {d.stage for d in dead} == {"tracing"}
    assert {d.source_topic for d in dead} == {settings.topics.cases}
    by_payload = {d.payload: d.reasons[0] for d in dead}
    assert by_payload[b"{not json"].text.startswith("not-json")
    unstorable_reason = by_payload[unstorable.model_dump_json().encode()]
    assert unstorable_reason.code == "207" and unstorable_reason.text.startswith("unstorable: DataError")
    assert set(deliveries(settings)) == {before.event_id, after.event_id}


def test_a_database_outage_makes_it_unready_and_it_recovers_by_itself(
    settings: Settings, platform: tuple[FakePlatform, str]
) -> None:
    from tests.support import database_refusing_connections

    before = case_event(settings, "case.opened", uuid.uuid4().hex)
    during = [case_event(settings, "case.opened", uuid.uuid4().hex) for _ in range(3)]
    service = build_service(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        wait_until(service.ready, timeout_s=20, what="the tracing service to be ready")
        publish(settings, [before])
        wait_until(lambda: all_delivered(settings, [before]), timeout_s=20, what="delivered before")
        with database_refusing_connections(settings):
            publish(settings, during)
            wait_until(lambda: not service.ready(), timeout_s=20, what="not ready during the outage")
            time.sleep(3)
            assert thread.is_alive() and not service.ready()
        wait_until(service.ready, timeout_s=40, what="ready again")
        wait_until(lambda: all_delivered(settings, during), timeout_s=40, what="the events of the outage")
        assert thread.is_alive()
    finally:
        service.stop()
        thread.join(30)
    assert sorted(r.event_id for r in platform[0].delivered()) == sorted(
        e.event_id for e in [before, *during])
