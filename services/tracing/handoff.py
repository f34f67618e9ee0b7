"""The handoff protocol with the contact-tracing platform (pure: no I/O). See README § Contact tracing.

Requests (all `POST`, `Content-Type: application/json`):
- `case.opened` → `<url>` with `Idempotency-Key: <case_id>`; the body carries the unsealed identity.
- `case.updated` / `case.retracted` → `<url>/<case_id>` with `Idempotency-Key: <case_id>:<event_id>`
  (an opening and its updates are different requests, so they cannot share one key); no identity.
  `"reopened": true` marks a `case.updated` on a case the platform last heard of as retracted.
- `X-LabFlow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256 over "<t>.<body bytes>">` with the
  shared secret; the platform recomputes it and rejects stale timestamps (replays).
- `X-LabFlow-Event-Id` and `X-LabFlow-Event` repeat the event id and type.

Answers: 2xx delivered; 408, 429 and 5xx are retried (honouring `Retry-After`); any other status
is a permanent failure an operator must look at (`labflow tracing failed`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from services.core.domain.case_event import CaseEventMessage

SIGNATURE_HEADER = "X-LabFlow-Signature"
SIGNATURE_TOLERANCE_S = 300


@dataclass(frozen=True, slots=True)
class HandoffRequest:
    path: str  # appended to the platform URL
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Delivered:
    status: int


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str
    after_s: float | None = None  # the platform's Retry-After, when it gave one


@dataclass(frozen=True, slots=True)
class Permanent:
    reason: str


Outcome = Delivered | Retry | Permanent


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: bytes, header: str, body: bytes, now: int, tolerance_s: int = SIGNATURE_TOLERANCE_S
) -> bool:
    """What the platform does: a valid v1 MAC over this body, with a timestamp close to `now`."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, body, timestamp).rpartition("v1=")[2]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def idempotency_key(event: CaseEventMessage) -> str:
    return event.case_id if event.type == "case.opened" else f"{event.case_id}:{event.event_id}"


def is_reopening(previous_delivered: str | None, event_type: str) -> bool:
    return previous_delivered == "case.retracted" and event_type == "case.updated"


def request_body(
    event: CaseEventMessage, identity: Mapping[str, Any] | None, previous_delivered: str | None
) -> dict[str, Any]:
    """The JSON document sent for `event`. The pseudonym stays inside LabFlow (data minimization)."""
    body: dict[str, Any] = {
        "event": event.type,
        "event_id": event.event_id,
        "case_id": event.case_id,
        "occurred_at": event.occurred_at.isoformat(),
        "first_received_at": event.first_received_at.isoformat(),
        "case": {
            "onset_day": event.onset_day.isoformat(),
            "last_positive_day": event.last_positive_day.isoformat(),
            "department": event.department,
            "region": event.region,
            "age_class": event.age_class,
            "sex": event.sex.value,
            "test_kind": event.test_kind.value,
        },
    }
    if event.type == "case.opened":
        body["identity"] = dict(identity) if identity is not None else None
    else:
        body["reopened"] = is_reopening(previous_delivered, event.type)
    return body


def build_request(
    event: CaseEventMessage,
    identity: Mapping[str, Any] | None,
    previous_delivered: str | None,
    secret: bytes,
    timestamp: int,
) -> HandoffRequest:
    body = json.dumps(
        request_body(event, identity, previous_delivered), ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
    path = "" if event.type == "case.opened" else "/" + quote(event.case_id, safe="")
    return HandoffRequest(
        path=path,
        body=body,
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key(event),
            SIGNATURE_HEADER: signature(secret, body, timestamp),
            "X-LabFlow-Event-Id": event.event_id,
            "X-LabFlow-Event": event.type,
        },
    )


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date); None if absent/invalid."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def classify(status: int, retry_after: str | None, now: datetime) -> Outcome:
    """The platform's answer as an outcome. The reason never includes the response body (it may echo
    identity back)."""
    if 200 <= status < 300:
        return Delivered(status)
    if status in (408, 429) or 500 <= status < 600:
        return Retry(f"HTTP {status}", parse_retry_after(retry_after, now))
    return Permanent(f"HTTP {status}")
