"""Validation that stores nothing (SPEC §8.1): what intake would answer, with nothing published,
stored or counted.

It runs the submission use cases (`submission.py`) with `Intake.without_publishing()`: the same
parsing, normalizing, sender and registry checks and size limits as intake, through a publisher
that writes nothing, so it cannot drift from what intake answers. The report gives, per item, the
ACK code intake would give, every issue with its location, HL7 table 0357 code and a hint to fix
it, and a preview of what would be counted (test kind, outcome, status, collection day, department,
age class): never identity, never a pseudonym. `intake_status` is the HTTP status intake would
answer (200, 400 unreadable body, 403 sent as another lab, 422 not a Bundle / no rows).

Formats are told apart by the caller (HTTP `Content-Type`, a file's extension) or else by content:
JSON (`{`, `[`) is FHIR, `MSH`/`FHS`/`BHS` is HL7 ER7 (a batch when enveloped), anything else CSV.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Literal

from pydantic import BaseModel

from services.core.domain.model import LabResult
from services.gateway.intake import Intake
from services.gateway.labs import Lab
from services.gateway.submission import (
    Answered,
    Reason,
    Submission,
    handle_csv,
    handle_fhir,
    handle_hl7,
)

Format = Literal["hl7", "fhir", "csv"]
FORMATS: tuple[Format, ...] = ("hl7", "fhir", "csv")
HANDLERS: dict[Format, Callable[[Intake, Lab, bytes], Awaitable[Submission]]] = {
    "hl7": handle_hl7,
    "fhir": handle_fhir,
    "csv": handle_csv,
}
_EXTENSIONS: dict[str, Format] = {
    "hl7": "hl7", "er7": "hl7", "txt": "hl7", "json": "fhir", "fhir": "fhir", "csv": "csv",
}
_MEDIA_TYPES: dict[str, Format] = {
    "x-application/hl7-v2+er7": "hl7",
    "application/hl7-v2": "hl7",
    "application/fhir+json": "fhir",
    "application/json": "fhir",
    "text/csv": "csv",
}


def detect_format(body: bytes, name: str | None = None, content_type: str | None = None) -> Format:
    """The format of a payload: from its media type, else its file extension, else its content."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in _MEDIA_TYPES:
        return _MEDIA_TYPES[media]
    extension = (name or "").rpartition(".")[2].lower() if name and "." in name else ""
    if extension in _EXTENSIONS and extension != "txt":
        return _EXTENSIONS[extension]
    head = body.removeprefix(b"\xef\xbb\xbf").lstrip()[:3]
    if head[:1] in (b"{", b"["):
        return "fhir"
    if head in (b"MSH", b"FHS", b"BHS"):
        return "hl7"
    return "csv"


class Counted(BaseModel):
    """What would be counted of one result: no identity, no pseudonym."""

    test_kind: str
    outcome: str
    status: str
    collection_day: date
    department: str | None
    age_class: str | None


class ValidatedItem(BaseModel):
    index: int
    ref: str
    """`message 2`, `row 3`, `bundle` (or `body` when the body cannot be read at all)."""
    control_id: str | None
    ack_code: str
    """What intake would acknowledge: AA accepted, AE fix and send again, AR refused."""
    would_be: Literal["accepted", "rejected"]
    issues: list[Reason]
    counted: list[Counted]


class ValidationReport(BaseModel):
    lab: str
    format: Format
    intake_status: int
    """The HTTP status intake would answer for this body."""
    would_be: Literal["accepted", "partially-accepted", "rejected"]
    accepted: int
    rejected: int
    warnings: list[str]
    detail: str | None
    """Why intake would refuse the body as a whole or answer 403, when it would."""
    items: list[ValidatedItem]

    @property
    def all_accepted(self) -> bool:
        return self.rejected == 0 and self.intake_status == 200


def _counted(result: LabResult) -> Counted:
    return Counted(
        test_kind=result.test_kind.value,
        outcome=result.outcome.value,
        status=result.status.value,
        collection_day=result.collection_day,
        department=result.department,
        age_class=result.age_class,
    )


def _item(answered: Answered) -> ValidatedItem:
    outcome = answered.outcome
    return ValidatedItem(
        index=answered.index,
        ref=answered.ref,
        control_id=outcome.control_id or None,
        ack_code=outcome.ack_code,
        would_be="accepted" if outcome.ack_code == "AA" else "rejected",
        issues=[answered.reason(issue) for issue in outcome.issues],
        counted=[_counted(r) for r in outcome.results],
    )


async def validate(intake: Intake, lab: Lab, body: bytes, format: Format) -> ValidationReport:
    """`intake` must be one `without_publishing()`: this function only reports."""
    submission = await HANDLERS[format](intake, lab, body)
    response = submission.response()
    status, _, detail = submission.status()
    return ValidationReport(
        lab=lab.lab_id,
        format=format,
        intake_status=status,
        would_be=response.status,
        accepted=response.accepted,
        rejected=response.rejected,
        warnings=submission.warnings,
        detail=detail,
        items=[_item(a) for a in submission.answered],
    )
