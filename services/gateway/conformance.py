"""Conformance report of a lab in onboarding (SPEC §8.1): what it sent, judged against the plan.

What the lab sent is read where the pipeline left it, never from a copy kept for the purpose:
- accepted messages from test storage (`test_results`, written by the worker for a test-mode lab: one
  row per result and reception, grouped back into messages by control id and reception time);
- rejected messages (AE/AR) from `lab.results.rejected.v1`, as `labflow rejected` reads them (gateway
  rejections of this lab: the answer, its error codes and where).
The judging itself is pure (`services.core.domain.conformance.judge`). The report is written as
Markdown (for the lab's developers) and JSON (for tools) and its outcome is stored in
`conformance_reports`, which `labflow labs promote` and a lab portal read. Everything runs with the
onboarding role (`labflow_labs`): it reads test results, never production ones.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from services.core.db import tables
from services.core.domain.conformance import ConformanceReport, ObservedResult, Reception, judge
from services.core.domain.model import LabResult
from services.core.domain.rejection import Rejection


def accepted_receptions(records: Iterable[LabResult]) -> list[Reception]:
    """Results stored in test storage, grouped back into the messages that carried them."""
    messages: dict[tuple[str, datetime], list[ObservedResult]] = defaultdict(list)
    for r in records:
        messages[(r.message_control_id, r.received_at)].append(
            ObservedResult(r.result_id, r.patient_pseudonym, r.pseudonym_basis, r.test_kind, r.outcome,
                           r.status, r.department)
        )
    return [Reception(cid, at, "AA", tuple(results)) for (cid, at), results in messages.items()]


def rejected_receptions(lab_id: str, rejections: Iterable[Rejection]) -> list[Reception]:
    """The lab's messages the gateway answered AE or AR."""
    return [
        Reception(
            r.message_control_id or "",
            r.received_at,
            r.ack_code or "AE",
            errors=tuple((reason.code, f"{reason.segment}-{reason.field}") for reason in r.reasons),
        )
        for r in rejections
        if r.stage == "gateway" and r.lab == lab_id
    ]


@dataclass(frozen=True, slots=True)
class WrittenReport:
    report: ConformanceReport
    markdown: Path
    json: Path


class ConformanceRecords:
    """`test_results` (read) and `conformance_reports` (written), with the onboarding role."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def lab_exists(self, lab_id: str) -> bool:
        with Session(self.engine) as session:
            return session.scalar(select(tables.Lab.lab_id).where(tables.Lab.lab_id == lab_id)) is not None

    def test_results(self, lab_id: str) -> list[LabResult]:
        query = (
            select(tables.TestResult.record)
            .where(tables.TestResult.lab_id == lab_id)
            .order_by(tables.TestResult.received_at)
        )
        with Session(self.engine) as session:
            return [LabResult.model_validate(record) for record in session.scalars(query)]

    def record(self, report: ConformanceReport) -> None:
        with Session(self.engine) as session, session.begin():
            session.add(
                tables.ConformanceReport(
                    lab_id=report.lab_id,
                    generated_at=report.generated_at,
                    passed=report.passed,
                    report=report.as_json(),
                )
            )


def write_report(
    records: ConformanceRecords, lab_id: str, rejections: Iterable[Rejection], out_dir: Path
) -> WrittenReport:
    """Judge what the lab sent, store the outcome, write `conformance-<lab>-<time>.md` and `.json`."""
    generated_at = datetime.now(UTC)
    receptions = accepted_receptions(records.test_results(lab_id)) + rejected_receptions(lab_id, rejections)
    report = judge(lab_id, receptions, generated_at)
    records.record(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"conformance-{lab_id}-{generated_at.strftime('%Y%m%dT%H%M%SZ')}"
    markdown, json_path = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    markdown.write_text(report.as_markdown(), encoding="utf-8")
    json_path.write_text(json.dumps(report.as_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return WrittenReport(report, markdown, json_path)
