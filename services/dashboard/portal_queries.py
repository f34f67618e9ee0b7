"""The lab portal's reads: one lab's own traffic, every query filtered by that lab id.

The lab id is never a request parameter: it is the lab of the caller's token (`services.dashboard.portal`)
and every statement below has `lab = %(lab)s` (an index prefix of each table), so no request can reach
another lab's rows. Nothing identifying is read: counts, HL7 locations, error codes, reason texts
(written to be non-identifying at the gateway) and replay outcomes.

- Per reception day (UTC): messages answered AA / AE / AR (`lab_acks`, written by the worker's
  lab-traffic consumers: AA = raw copies − rejections written with their payload), results newly
  stored and positives (`lab_daily`), median and p90 collection → reception delay (`lab_delays`).
- Delay distribution over the period: the `lab_delays` histogram summed in a few readable buckets.
- Onboarding (SPEC §8.1): the lab's mode (test / production) and its latest conformance report's
  outcome and summary (`labs.mode`, `conformance_reports`, written by `labflow conformance report`).
- Rejections: the latest ones with their reasons (location, 0357 code, text, and the issue
  catalogue's hint when the reason carries one) and their replay status (`rejection_replays`); and the
  most frequent reasons of the period (code and location).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg

from services.dashboard.queries import check_period, delay_percentiles

MAX_PORTAL_DAYS = 92
DEFAULT_PORTAL_DAYS = 14
MAX_REJECTIONS = 200
TOP_REASONS = 10
# (first hour, first hour of the next bucket or None): whole hours as in `lab_delays`
DELAY_BUCKETS: tuple[tuple[int, int | None], ...] = ((0, 2), (2, 6), (6, 12), (12, 24), (24, 48), (48, None))

_ACKS = """
SELECT day, messages, ae, ar, rejected_with_copy FROM lab_acks
WHERE lab = %(lab)s AND day BETWEEN %(first)s AND %(last)s
"""
_RESULTS = """
SELECT day, results, positives FROM lab_daily WHERE lab = %(lab)s AND day BETWEEN %(first)s AND %(last)s
"""
_DELAYS = """
SELECT lab, day, delay_hours, n FROM lab_delays WHERE lab = %(lab)s AND day BETWEEN %(first)s AND %(last)s
ORDER BY day, delay_hours
"""
_LAST_RECEIVED = """
SELECT last_received_at FROM lab_acks WHERE lab = %(lab)s AND last_received_at IS NOT NULL
ORDER BY day DESC LIMIT 1
"""
_REJECTIONS = """
SELECT r.rejection_id, r.received_at, r.ack_code, r.transport, r.message_control_id, r.reasons,
       p.replays, p.last_outcome, p.last_replayed_at
FROM lab_rejections r LEFT JOIN rejection_replays p ON p.rejection_id = r.rejection_id
WHERE r.lab = %(lab)s ORDER BY r.received_at DESC, r.rejection_id LIMIT %(limit)s
"""
_TOP_REASONS = """
SELECT reason->>'code', reason->>'segment', (reason->>'field')::int, count(DISTINCT r.rejection_id)::int,
       max(r.received_at)
FROM lab_rejections r CROSS JOIN LATERAL jsonb_array_elements(r.reasons) AS reason
WHERE r.lab = %(lab)s AND r.received_at >= %(since)s AND r.received_at < %(until)s
GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3 LIMIT %(limit)s
"""


@dataclass(frozen=True, slots=True)
class TrafficDay:
    day: date
    messages: int
    aa: int
    ae: int
    ar: int
    results: int
    positives: int
    median_delay_hours: int | None
    p90_delay_hours: int | None


@dataclass(frozen=True, slots=True)
class DelayBucket:
    from_hours: int
    to_hours: int | None
    """Exclusive; None: open-ended."""
    results: int


@dataclass(frozen=True, slots=True)
class Traffic:
    lab: str
    first: date
    last: date
    last_received_at: datetime | None
    days: list[TrafficDay]
    delays: list[DelayBucket]
    median_delay_hours: int | None
    p90_delay_hours: int | None


@dataclass(frozen=True, slots=True)
class FrequentReason:
    code: str | None
    segment: str | None
    field: int | None
    rejections: int
    last_seen_at: datetime


def traffic(conn: psycopg.Connection[Any], lab: str, first: date, last: date) -> Traffic:
    check_period(first, last, MAX_PORTAL_DAYS)
    params = {"lab": lab, "first": first, "last": last}
    acks = {row[0]: row[1:] for row in conn.execute(_ACKS, params).fetchall()}
    results = {row[0]: row[1:] for row in conn.execute(_RESULTS, params).fetchall()}
    histogram = conn.execute(_DELAYS, params).fetchall()
    per_day, per_lab = delay_percentiles(histogram)
    last_row = conn.execute(_LAST_RECEIVED, params).fetchone()
    days = []
    for day in sorted(acks.keys() | results.keys()):
        messages, ae, ar, with_copy = acks.get(day, (0, 0, 0, 0))
        n, positives = results.get(day, (0, 0))
        median, p90 = per_day.get((lab, day), (None, None))
        aa = max(messages - with_copy, 0)  # a rejection may be counted before its raw copy: never < 0
        days.append(TrafficDay(day, messages, aa, ae, ar, n, positives, median, p90))
    buckets = [0] * len(DELAY_BUCKETS)
    for _lab, _day, hours, n in histogram:
        index = next(i for i, (_, end) in enumerate(DELAY_BUCKETS) if end is None or hours < end)
        buckets[index] += n
    median, p90 = per_lab.get(lab, (None, None))
    return Traffic(
        lab, first, last, last_row[0] if last_row else None, days,
        [DelayBucket(start, end, n) for (start, end), n in zip(DELAY_BUCKETS, buckets, strict=True)],
        median, p90,
    )


def recent_rejections(conn: psycopg.Connection[Any], lab: str, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(_REJECTIONS, {"lab": lab, "limit": min(max(limit, 1), MAX_REJECTIONS)}).fetchall()
    return [
        {
            "rejection_id": rejection_id, "received_at": received_at, "ack_code": ack_code,
            "transport": transport, "message_control_id": control_id, "reasons": reasons,
            "replay": None if replays is None else {
                "replays": replays, "last_outcome": outcome, "last_replayed_at": replayed_at,
            },
        }
        for (rejection_id, received_at, ack_code, transport, control_id, reasons, replays, outcome,
             replayed_at) in rows
    ]


def frequent_reasons(
    conn: psycopg.Connection[Any], lab: str, first: date, last: date
) -> list[FrequentReason]:
    check_period(first, last, MAX_PORTAL_DAYS)
    since = datetime.combine(first, time(), tzinfo=UTC)
    params = {"lab": lab, "since": since, "until": since + timedelta(days=(last - first).days + 1),
              "limit": TOP_REASONS}
    return [FrequentReason(*row) for row in conn.execute(_TOP_REASONS, params).fetchall()]


_CONFORMANCE = """
SELECT l.mode, c.generated_at, c.passed, c.report->'summary', c.report->'scenarios'
FROM labs l LEFT JOIN LATERAL (
    SELECT generated_at, passed, report FROM conformance_reports
    WHERE lab_id = l.lab_id ORDER BY generated_at DESC LIMIT 1
) c ON true
WHERE l.lab_id = %(lab)s
"""


def conformance(conn: psycopg.Connection[Any], lab: str) -> dict[str, Any] | None:
    """The lab's mode and its latest conformance report (outcome, summary, the scenarios not passed);
    None for a lab the registry does not hold."""
    row = conn.execute(_CONFORMANCE, {"lab": lab}).fetchone()
    if row is None:
        return None
    mode, generated_at, passed, summary, scenarios = row
    report = None if generated_at is None else {
        "generated_at": generated_at, "passed": passed, "summary": summary,
        "not_passed": [
            {"code": s["code"], "title": s["title"], "status": s["status"], "reasons": s["reasons"]}
            for s in scenarios or [] if s["status"] != "passed"
        ],
    }
    return {"mode": mode, "report": report}
