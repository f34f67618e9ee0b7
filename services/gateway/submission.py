"""The gateway's submission use cases: an HL7 v2 body (one message or an FHS/BHS batch), a FHIR R4
Bundle or a CSV batch, from a lab the transport authenticated, in; a transport-neutral answer out.

Policy (SPEC §4, §8):
- every item goes through `Intake`, message by message, as MLLP frames do: AA only once Kafka
  confirmed it, its rejection (with the reasons) kept on the rejected topic otherwise;
- a lab may only send as itself (`sender.py`): an item naming another lab is refused (AR) and the
  submission lists it in `forbidden` (HTTP answers 403);
- a body that cannot be read as its format at all (not JSON, not a Bundle, no usable CSV header or
  no rows) is refused as a whole (`refusal`), and still kept on the raw and rejected topics;
- when Kafka did not confirm one item the submission is `transient`: nothing of it is acknowledged.

The HTTP routes only read the request, call these and write the answer; validation (SPEC §8.1)
calls the same functions with `Intake.without_publishing()`, so it answers exactly what intake would.
FHIR and CSV content becomes `Normalized` in one function each (`fhir_normalized`,
`csv_row_normalized`): read straight into the drafts HL7 is checked as (`result_drafts`), by the same
checks, with no HL7 text in between; HL7 messages are parsed once, by the intake.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from services.core.domain.model import Transport
from services.gateway.csv_intake import CsvError, CsvRow, NoRows, parse_csv
from services.gateway.fhir import BundleContent, FhirError, read_bundle
from services.gateway.hl7.batch import split_batch
from services.gateway.hl7.normalize import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    Issue,
    Normalized,
)
from services.gateway.intake import Intake, IntakeOutcome
from services.gateway.labs import Lab
from services.gateway.result_drafts import header_for
from services.gateway.sender import claims_other_lab, not_this_lab

CHUNK = 200
"""Items handled between two yields to the event loop (MLLP shares it)."""

NOT_DURABLE = (
    "the results could not be stored durably right now (message bus unavailable); "
    "nothing of this submission is acknowledged, send it again"
)

Locate = Callable[[Issue], str | None]
"""Where an issue is, in the lab's own terms (`PID-3.1`, `row 3, column ins`, a FHIRPath)."""


class Reason(BaseModel):
    location: str | None
    """Where, in the lab's terms: `PID-3.1`, `row 3, column ins`, `Bundle.entry[2].resource.code`."""
    segment: str | None
    sequence: int | None
    field: int | None
    component: int | None
    code: str
    """HL7 table 0357."""
    severity: str
    text: str
    hint: str | None = None
    """How the lab fixes it, from the issue catalogue (`docs/errors.md`), when there is one."""


class Item(BaseModel):
    index: int
    ref: str
    """`message 2`, `row 3`, `bundle` (or `body` when the body could not be read at all)."""
    control_id: str | None
    status: Literal["accepted", "rejected"]
    ack_code: str
    result_ids: list[str]
    reasons: list[Reason]


class SubmissionResponse(BaseModel):
    submission_id: str
    lab: str
    transport: Transport
    received_at: datetime
    status: Literal["accepted", "partially-accepted", "rejected"]
    accepted: int
    rejected: int
    warnings: list[str]
    items: list[Item]


def hl7_location(issue: Issue) -> str | None:
    if not issue.segment:
        return None
    if issue.field is None:
        return issue.segment
    return f"{issue.segment}-{issue.field}" + (f".{issue.component}" if issue.component else "")


def transient(outcome: IntakeOutcome) -> bool:
    """Kafka (or the registry) did not answer: the lab sends it again."""
    return outcome.ack_code == "AE" and any(i.code == APPLICATION_INTERNAL_ERROR for i in outcome.issues)


@dataclass(frozen=True, slots=True)
class Answered:
    """One item of a submission and the intake's answer to it."""

    index: int
    ref: str
    outcome: IntakeOutcome
    locate: Locate
    hl7: bool = False
    """HL7 positions (segment, field…) are given for HL7 items only; others are located in their
    own terms alone."""

    def reason(self, issue: Issue) -> Reason:
        hl7 = self.hl7
        return Reason(
            location=self.locate(issue),
            segment=(issue.segment or None) if hl7 else None,
            sequence=(issue.sequence or None) if hl7 else None,
            field=issue.field if hl7 else None,
            component=issue.component if hl7 else None,
            code=issue.code,
            severity=issue.severity,
            text=issue.text,
            hint=issue.hint or None,
        )

    def item(self) -> Item:
        outcome = self.outcome
        return Item(
            index=self.index,
            ref=self.ref,
            control_id=outcome.control_id or None,
            status="accepted" if outcome.ack_code == "AA" else "rejected",
            ack_code=outcome.ack_code,
            result_ids=[r.result_id for r in outcome.results],
            reasons=[self.reason(i) for i in outcome.issues],
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """The body as a whole cannot be read as its format (HTTP 400 or 422)."""

    status: int
    error: str
    text: str


@dataclass(slots=True)
class Submission:
    lab: Lab
    transport: Transport
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    answered: list[Answered] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    """Why items were refused for being sent as another lab (`message 2 is from 'X'`)."""
    refusal: Refusal | None = None

    @property
    def transient(self) -> bool:
        return any(transient(a.outcome) for a in self.answered)

    def status(self) -> tuple[int, str | None, str | None]:
        """The HTTP status it is answered, with the error and its detail when not 200: 503 when
        anything was not stored durably, then 400/422 for an unreadable body, 403 when an item was
        sent as another lab."""
        if self.transient:
            text = self.answered[0].outcome.issues[0].text if self.refusal else NOT_DURABLE
            return 503, "unavailable", text
        if self.refusal is not None:
            return self.refusal.status, self.refusal.error, self.refusal.text
        if self.forbidden:
            return 403, "forbidden", f"a lab may only send as itself: {'; '.join(self.forbidden)}"
        return 200, None, None

    def response(self) -> SubmissionResponse:
        items = [a.item() for a in self.answered]
        accepted = sum(item.status == "accepted" for item in items)
        status: Literal["accepted", "partially-accepted", "rejected"] = (
            "accepted" if accepted == len(items) else "rejected" if accepted == 0 else "partially-accepted"
        )
        return SubmissionResponse(
            submission_id=self.id,
            lab=self.lab.lab_id,
            transport=self.transport,
            received_at=self.received_at,
            status=status,
            accepted=accepted,
            rejected=len(items) - accepted,
            warnings=self.warnings,
            items=items,
        )


async def _in_chunks(count: int, receive: Callable[[int], Awaitable[IntakeOutcome]]) -> list[IntakeOutcome]:
    """`receive(i)` for every item, `CHUNK` at a time (the event loop serves others in between)."""
    outcomes: list[IntakeOutcome] = []
    for start in range(0, count, CHUNK):
        outcomes += await asyncio.gather(*(receive(i) for i in range(start, min(start + CHUNK, count))))
    return outcomes


def _own(lab: Lab) -> tuple[str, str | None]:
    return (lab.lab_id, lab.finess)


async def handle_hl7(intake: Intake, lab: Lab, body: bytes) -> Submission:
    """One HL7 message or an FHS/BHS batch; each message as MLLP would take it from this lab."""
    submission = Submission(lab, Transport.HTTP_HL7)
    batch = split_batch(body)
    submission.warnings = batch.warnings
    outcomes = await _in_chunks(
        len(batch.messages), lambda i: intake.receive_hl7(batch.messages[i], submission.transport, lab.lab_id)
    )
    for n, outcome in enumerate(outcomes, start=1):
        header = outcome.header
        if header is not None and claims_other_lab(_own(lab), (header.sending_facility, header.lab_finess)):
            submission.forbidden.append(f"message {n} is from '{header.sending_facility[:40]}'")
    submission.answered = [
        Answered(i, f"message {i + 1}", o, hl7_location, hl7=True) for i, o in enumerate(outcomes)
    ]
    return submission


def fhir_normalized(
    intake: Intake, lab: Lab, content: BundleContent, submission: Submission, refusals: list[Issue]
) -> tuple[Normalized, Locate]:
    """A Bundle's results as the intake reads them, and where each issue is in the Bundle."""
    header = header_for(lab.lab_id, lab.finess, content.control_id or submission.id)
    normalized, rows = intake.normalize_rows(
        content.rows, header, submission.transport, submission.received_at
    )
    normalized.issues[:0] = [*refusals, *(i for i, _ in content.issues)]
    located = {id(issue): where for issue, where in content.issues}

    def locate(issue: Issue) -> str | None:
        if (issue.segment, issue.field) == ("MSH", 10):
            return content.control_id_path
        if (issue.segment, issue.field) == ("MSH", 4):  # the sender: who performed the report
            return "Bundle.entry.resource.ofType(DiagnosticReport).performer"
        return located.get(id(issue)) or (rows.locate(issue) if issue.segment else None)

    return normalized, locate


def csv_row_normalized(
    intake: Intake, lab: Lab, row: CsvRow, submission: Submission
) -> tuple[Normalized, Locate]:
    """A CSV row's result as the intake reads it, and where each issue is in the CSV."""
    header = header_for(lab.lab_id, lab.finess, f"{submission.id[:16]}-{row.number}")
    normalized, rows = intake.normalize_rows([row.row], header, submission.transport, submission.received_at)
    normalized.issues[:0] = [i for i, _ in row.issues]
    located = {id(issue): where for issue, where in row.issues}

    def locate(issue: Issue) -> str | None:
        return located.get(id(issue)) or (rows.locate(issue) if issue.segment else None)

    return normalized, locate


async def _refuse_body(intake: Intake, submission: Submission, raw: bytes, refusal: Refusal) -> Submission:
    """A body that cannot be read: kept on the raw and rejected topics, refused as a whole."""
    lab = submission.lab
    issue = Issue("", 0, None, None, DATA_TYPE_ERROR, "E", refusal.text, True)
    normalized = Normalized(header_for(lab.lab_id, lab.finess, submission.id), issues=[issue])
    outcome = await intake.receive_normalized(raw, submission.transport, normalized, submission.received_at)
    submission.refusal = refusal
    submission.answered = [Answered(0, "body", outcome, lambda _issue: None)]
    return submission


async def handle_fhir(intake: Intake, lab: Lab, body: bytes) -> Submission:
    """One FHIR R4 Bundle (a DiagnosticReport with its Observations): one item."""
    submission = Submission(lab, Transport.HTTP_FHIR)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        text = f"the body is not JSON: {str(exc)[:120]}"
        return await _refuse_body(intake, submission, body, Refusal(400, "malformed-json", text))
    try:
        content = read_bundle(document)
    except FhirError as exc:
        return await _refuse_body(intake, submission, body, Refusal(422, "not-a-bundle", str(exc)))
    others = [p for p in content.performers if claims_other_lab(_own(lab), p)]
    submission.forbidden = [f"DiagnosticReport.performer is '{', '.join(p)[:60]}'" for p in others]
    refusals = [not_this_lab(p, lab.lab_id) for p in others[:1]]
    normalized, locate = fhir_normalized(intake, lab, content, submission, refusals)
    outcome = await intake.receive_normalized(body, submission.transport, normalized, submission.received_at)
    submission.answered = [Answered(0, "bundle", outcome, locate)]
    return submission


async def handle_csv(intake: Intake, lab: Lab, body: bytes) -> Submission:
    """A CSV batch: one item per row."""
    submission = Submission(lab, Transport.HTTP_CSV)
    try:
        rows = parse_csv(body)
    except NoRows as exc:
        return await _refuse_body(intake, submission, body, Refusal(422, "no-rows", str(exc)))
    except CsvError as exc:
        return await _refuse_body(intake, submission, body, Refusal(400, "malformed-csv", str(exc)))
    locators: dict[int, Locate] = {}

    async def receive(i: int) -> IntakeOutcome:
        normalized, locators[i] = csv_row_normalized(intake, lab, rows[i], submission)
        return await intake.receive_normalized(
            rows[i].raw, submission.transport, normalized, submission.received_at
        )

    outcomes = await _in_chunks(len(rows), receive)
    submission.answered = [
        Answered(i, f"row {row.number}", outcome, locators[i])
        for i, (row, outcome) in enumerate(zip(rows, outcomes, strict=True))
    ]
    return submission
