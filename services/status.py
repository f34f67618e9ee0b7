"""`labflow status`: the whole pipeline on one screen, for the operator on call.

Is each service ready, how far behind are the two consumers, how old is the open-data publication,
what was rejected and what failed to reach contact tracing in the last hour. Each line is computed
on its own with a short timeout, so a dependency that is down says so on its line instead of
hanging the screen or hiding the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import psycopg
from confluent_kafka import Consumer, TopicPartition

from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.errors import KafkaUnavailable, explain
from services.core.kafka import broker_listens, client_config
from services.opendata.files import read_index

State = Literal["ok", "warn", "down"]
TIMEOUT_S = 3.0
OPENDATA_STALE_S = 26 * 3600  # published daily; the alert in deploy/prometheus fires at the same age


@dataclass(frozen=True, slots=True)
class Line:
    section: str
    name: str
    state: State
    detail: str


def readiness(settings: Settings) -> list[Line]:
    endpoints = {
        "gateway": f"http://127.0.0.1:{settings.gateway_ops_port}/readyz",
        "worker": f"http://127.0.0.1:{settings.worker_ops_port}/readyz",
        "tracing": f"http://127.0.0.1:{settings.tracing_ops_port}/readyz",
        "opendata": f"http://{settings.opendata_host}:{settings.opendata_port}/readyz",
        "dashboard": f"http://{settings.dashboard_host}:{settings.dashboard_port}/readyz",
    }
    lines = []
    for name, url in endpoints.items():
        try:
            response = httpx.get(url, timeout=TIMEOUT_S)
        except httpx.HTTPError:
            lines.append(Line("services", name, "down", f"not answering on {url}"))
            continue
        if response.status_code == 200:
            lines.append(Line("services", name, "ok", "ready"))
        else:
            is_json = "json" in response.headers.get("content-type", "")
            reason = response.json().get("reason", "") if is_json else ""
            detail = f"not ready ({response.status_code}) {reason}".strip()
            lines.append(Line("services", name, "warn", detail))
    return lines


def _consumer(settings: Settings, group: str) -> Consumer:
    if not broker_listens(settings.require_kafka(), TIMEOUT_S):
        raise KafkaUnavailable(settings.require_kafka())
    config: dict[str, Any] = {**client_config(settings), "group.id": group, "enable.auto.commit": False}
    return Consumer(config)


def _ends(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    partitions = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT_S) for p in partitions
    }


def consumer_lag(settings: Settings) -> list[Line]:
    """Records not yet processed: the worker's positions (results, and the lab traffic of the raw and
    rejected topics) live in PostgreSQL, tracing's in Kafka."""
    topics = settings.topics
    consumer = _consumer(settings, settings.tracing_group)
    try:
        results_ends = _ends(consumer, topics.results)
        traffic_ends = {topic: _ends(consumer, topic) for topic in settings.lab_traffic_groups()}
        cases_ends = _ends(consumer, topics.cases)
        wanted = [TopicPartition(topics.cases, p) for p in cases_ends]
        committed = consumer.committed(wanted, timeout=TIMEOUT_S)
    finally:
        consumer.close()
    with psycopg.connect(libpq_url(settings.require_database()), connect_timeout=int(TIMEOUT_S)) as conn:

        def behind(group: str, topic: str, ends: dict[int, tuple[int, int]]) -> int:
            stored: dict[int, int] = dict(conn.execute(
                "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = %s AND topic = %s",
                (group, topic),
            ).fetchall())
            return sum(high - int(stored.get(p, low)) for p, (low, high) in ends.items())

        worker_lag = behind(settings.worker_group, topics.results, results_ends)
        traffic_lag = sum(behind(group, topic, traffic_ends[topic])
                          for topic, group in settings.lab_traffic_groups().items())
    positions = {tp.partition: tp.offset for tp in committed}
    tracing_lag = sum(high - (positions[p] if positions.get(p, -1) >= 0 else low)
                      for p, (low, high) in cases_ends.items())
    return [
        Line("lag", "worker", "ok" if worker_lag < 10_000 else "warn", f"{worker_lag} results behind"),
        Line("lag", "lab traffic", "ok" if traffic_lag < 10_000 else "warn",
             f"{traffic_lag} raw and rejected records behind (the lab portal's counts)"),
        Line("lag", "tracing", "ok" if tracing_lag < 1_000 else "warn", f"{tracing_lag} case events behind"),
    ]


def rejections_last_hour(settings: Settings) -> list[Line]:
    topic = settings.topics.rejected
    since_ms = int((time.time() - 3600) * 1000)
    consumer = _consumer(settings, f"labflow-status-{since_ms}")
    try:
        ends = _ends(consumer, topic)
        since = [TopicPartition(topic, p, since_ms) for p in ends]
        starts = consumer.offsets_for_times(since, timeout=TIMEOUT_S)
    finally:
        consumer.close()
    count: int = sum(ends[tp.partition][1] - tp.offset for tp in starts if tp.offset >= 0)
    return [Line("last hour", "rejected", "ok" if count == 0 else "warn",
                 f"{count} payload(s) on {topic} (`labflow rejected list`)")]


def tracing_deliveries(settings: Settings) -> list[Line]:
    with psycopg.connect(libpq_url(settings.require_database()), connect_timeout=int(TIMEOUT_S)) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'failed' AND last_attempt_at > %s),"
            " count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'pending') "
            "FROM tracing_deliveries",
            (datetime.now(UTC) - timedelta(hours=1),),
        ).fetchone()
    recent, failed, pending = row if row else (0, 0, 0)
    return [Line("last hour", "tracing failures", "ok" if failed == 0 else "warn",
                 f"{recent} failed in the last hour, {failed} failed in all (`labflow tracing failed`), "
                 f"{pending} pending")]


def opendata_publication(settings: Settings) -> list[Line]:
    index = read_index(settings.opendata_path)
    if index is None:
        return [Line("open data", "publication", "warn", f"never published in {settings.opendata_path}")]
    generated = datetime.fromisoformat(index["generated_at"])
    age_s = (datetime.now(UTC) - generated).total_seconds()
    return [Line("open data", "publication", "ok" if age_s < OPENDATA_STALE_S else "warn",
                 f"published {age_s / 3600:.1f} h ago ({generated:%Y-%m-%d %H:%M} UTC)")]


CHECKS: tuple[tuple[str, Callable[[Settings], list[Line]]], ...] = (
    ("services", readiness),
    ("lag", consumer_lag),
    ("last hour", rejections_last_hour),
    ("last hour", tracing_deliveries),
    ("open data", opendata_publication),
)


def collect(settings: Settings) -> list[Line]:
    lines: list[Line] = []
    for section, check in CHECKS:
        try:
            lines.extend(check(settings))
        except Exception as exc:
            reason = explain(exc, database_url=settings.database_url,
                             kafka_bootstrap=settings.kafka_bootstrap)
            if reason is None:
                raise
            lines.append(Line(section, check.__name__.replace("_", " "), "down", reason))
    return lines


def render(lines: list[Line]) -> str:
    width = max(len(line.name) for line in lines)
    out, section = [], None
    for line in lines:
        if line.section != section:
            section = line.section
            out.append(f"{section}:")
        out.append(f"  {line.state.upper():4s}  {line.name:{width}s}  {line.detail}")
    return "\n".join(out)
