"""The handoff protocol: request bodies, signatures, and how answers are classified (pure)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.domain.case_event import CaseEventMessage
from services.core.domain.model import Sex, TestKind
from services.tracing.handoff import (
    SIGNATURE_HEADER,
    Delivered,
    Permanent,
    Retry,
    build_request,
    classify,
    parse_retry_after,
    signature,
    verify_signature,
)

SECRET = b"shared-secret"
NOW = datetime(2022, 1, 10, 12, 0, tzinfo=UTC)
IDENTITY = {"birth_name": "LEFÈVRE", "given_names": "Marie-Élodie", "phone": "+33612345678"}


def event(type_: str = "case.opened", **overrides: object) -> CaseEventMessage:
    fields: dict[str, object] = {
        "event_id": "e" * 32, "type": type_, "case_id": "c" * 32, "patient_pseudonym": "p" * 64,
        "onset_day": date(2022, 1, 9), "last_positive_day": date(2022, 1, 9), "department": "2A",
        "region": "94", "age_class": "49", "sex": Sex.FEMALE, "test_kind": TestKind.RT_PCR,
        "sealed_identity": "sealed", "first_received_at": NOW - timedelta(seconds=3), "occurred_at": NOW,
    }
    fields.update(overrides)
    return CaseEventMessage.model_validate(fields)


def test_opening_posts_identity_to_the_platform_url_keyed_by_case_id() -> None:
    request = build_request(event(), IDENTITY, None, SECRET, 1_641_816_000)
    body = json.loads(request.body)
    assert request.path == ""
    assert request.headers["Idempotency-Key"] == "c" * 32
    assert request.headers["X-LabFlow-Event"] == "case.opened"
    assert request.headers["X-LabFlow-Event-Id"] == "e" * 32
    assert body["event"] == "case.opened" and body["case_id"] == "c" * 32
    assert body["identity"] == IDENTITY
    assert body["case"]["department"] == "2A" and body["case"]["onset_day"] == "2022-01-09"
    assert "patient_pseudonym" not in request.body.decode() and "p" * 64 not in request.body.decode()
    assert "LEFÈVRE" in request.body.decode("utf-8")  # UTF-8, not \u escapes


def test_updates_go_to_the_case_url_without_identity_and_with_their_own_key() -> None:
    request = build_request(event("case.updated", event_id="f" * 32), None, "case.opened", SECRET, 1)
    body = json.loads(request.body)
    assert request.path == "/" + "c" * 32
    assert request.headers["Idempotency-Key"] == f"{'c' * 32}:{'f' * 32}"
    assert "identity" not in body and body["reopened"] is False


@pytest.mark.parametrize(("previous", "type_", "reopened"), [
    ("case.retracted", "case.updated", True),
    ("case.opened", "case.updated", False),
    ("case.updated", "case.retracted", False),
    ("case.retracted", "case.retracted", False),
])
def test_an_update_after_a_retraction_is_a_reopening(previous: str, type_: str, reopened: bool) -> None:
    body = json.loads(build_request(event(type_), None, previous, SECRET, 1).body)
    assert body["reopened"] is reopened


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    request = build_request(event(), IDENTITY, None, SECRET, 1_641_816_000)
    expected = hmac.new(SECRET, b"1641816000." + request.body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == f"t=1641816000,v1={expected}"
    assert verify_signature(SECRET, request.headers[SIGNATURE_HEADER], request.body, 1_641_816_010)


def test_signature_rejects_tampering_other_secrets_stale_timestamps_and_garbage() -> None:
    body = b'{"case_id":"x"}'
    header = signature(SECRET, body, 1000)
    assert not verify_signature(SECRET, header, body + b" ", 1000)
    assert not verify_signature(b"other", header, body, 1000)
    assert not verify_signature(SECRET, header, body, 1000 + 301)
    assert not verify_signature(SECRET, "", body, 1000)
    assert not verify_signature(SECRET, "t=abc,v1=00", body, 1000)
    assert not verify_signature(SECRET, "t=1000", body, 1000)


@given(st.binary(max_size=2000), st.integers(min_value=0, max_value=2**40))
def test_any_signed_body_verifies(body: bytes, timestamp: int) -> None:
    assert verify_signature(SECRET, signature(SECRET, body, timestamp), body, timestamp)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered(status: int) -> None:
    assert classify(status, None, NOW) == Delivered(status)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_timeouts_throttling_and_server_errors_are_retried(status: int) -> None:
    assert classify(status, None, NOW) == Retry(f"HTTP {status}", None)


@pytest.mark.parametrize("status", [301, 302, 400, 401, 403, 404, 409, 410, 413, 422])
def test_other_answers_are_permanent(status: int) -> None:
    assert classify(status, None, NOW) == Permanent(f"HTTP {status}")


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert classify(429, "7", NOW) == Retry("HTTP 429", 7.0)
    in_30_s = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert classify(503, in_30_s, NOW) == Retry("HTTP 503", 30.0)
    assert parse_retry_after(format_datetime(NOW - timedelta(seconds=30), usegmt=True), NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("", NOW) is None
    assert parse_retry_after(None, NOW) is None
