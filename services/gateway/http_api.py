"""HTTP intake (SPEC §4): HL7 v2 (one message or an FHS/BHS batch), FHIR R4 Bundles and CSV batches.

Every item goes through the same `Intake` as MLLP: the payload to `lab.results.raw.v1`, its results
or its rejection (with the reasons) to Kafka, before the lab is answered. The answer lists each item
as accepted or rejected with the reasons an ACK would carry (location, HL7 table 0357 code, text),
and is kept in PostgreSQL for `GET /v1/submissions/{id}`.

Status codes: 200 the items were processed (each accepted or rejected); 400 the body cannot be read
(not UTF-8, not JSON, CSV header unusable); 422 JSON that is not a FHIR Bundle, a CSV without rows;
401 no or wrong token; 403 a disabled lab, or an item sent as another lab; 413 body over
`LABFLOW_HTTP_MAX_BODY_BYTES` (its SHA-256 and size, not the body, go to the rejected topic); 503
Kafka (or the registry) did not confirm, or the gateway failed unexpectedly: nothing is acknowledged,
send it all again (`Retry-After`; results are idempotent). Never a 500 (SPEC §9.1). A body that
cannot be read is still kept on the raw and rejected topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.core.config import Settings
from services.core.db import tables
from services.core.db.engine import make_engine
from services.core.domain.model import Transport
from services.core.logs import get_logger
from services.gateway.csv_intake import Converted, CsvError, NoRows, build_oru, parse_csv
from services.gateway.fhir import FhirError, read_bundle
from services.gateway.fhir_outcome import FHIR_JSON, operation_outcome, wants_fhir
from services.gateway.hl7.batch import split_batch
from services.gateway.hl7.normalize import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    UNKNOWN_KEY_IDENTIFIER,
    Issue,
    Normalized,
    normalize_header,
    normalize_oru,
)
from services.gateway.http_docs import add_docs
from services.gateway.intake import Intake, IntakeOutcome, failure
from services.gateway.labs import Lab, LabRegistry, RegistryUnavailable

log = get_logger(__name__)

RETRY_AFTER_S = 5
CHUNK = 200
"""Items normalized between two yields to the event loop (MLLP shares it)."""
HEAD_BYTES = 4096
"""Kept from an over-limit body: enough for an HL7 header (MSH-4, MSH-10) in its rejection."""
FAILED_TEXT = (
    "the gateway failed to process the request (it was logged); nothing is acknowledged, send it again"
)


class _Oversized:
    """A body over the limit: read to its end (the client sends it anyway) but only hashed."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.size = len(head)
        self.sha256 = hashlib.sha256(head)

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.sha256.update(chunk)


class Reason(BaseModel):
    location: str | None
    """Where, in the lab's terms: `PID-3.1`, `row 3, column ins`, `Bundle.entry[2].resource.code`."""
    segment: str | None
    sequence: int | None
    field: int | None
    component: int | None
    code: str
    severity: str
    text: str


class Item(BaseModel):
    index: int
    ref: str
    """`message 2`, `row 3` or `bundle`."""
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


class SubmissionStore:
    """The `submissions` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _save(self, response: SubmissionResponse) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                insert(tables.Submission).values(
                    submission_id=response.submission_id,
                    lab_id=response.lab,
                    transport=response.transport.value,
                    received_at=response.received_at,
                    status=response.status,
                    accepted=response.accepted,
                    rejected=response.rejected,
                    response=response.model_dump(mode="json"),
                )
            )

    def _get(self, submission_id: str, lab_id: str) -> dict[str, object] | None:
        with Session(self.engine) as session:
            return session.scalar(
                select(tables.Submission.response).where(
                    tables.Submission.submission_id == submission_id, tables.Submission.lab_id == lab_id
                )
            )

    async def save(self, response: SubmissionResponse) -> None:
        await asyncio.to_thread(self._save, response)

    async def get(self, submission_id: str, lab_id: str) -> dict[str, object] | None:
        return await asyncio.to_thread(self._get, submission_id, lab_id)


def _error(status: int, error: str, detail: str, **extra: object) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="labflow"'}
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status, headers=headers)


def _hl7_location(issue: Issue) -> str | None:
    if not issue.segment:
        return None
    if issue.field is None:
        return issue.segment
    return f"{issue.segment}-{issue.field}" + (f".{issue.component}" if issue.component else "")


def _reasons(
    issues: Sequence[Issue], locate: Callable[[Issue], str | None], hl7: bool
) -> list[Reason]:
    """HL7 positions only for HL7 items; FHIR and CSV items are located in their own terms alone."""
    return [
        Reason(
            location=locate(i),
            segment=(i.segment or None) if hl7 else None,
            sequence=(i.sequence or None) if hl7 else None,
            field=i.field if hl7 else None,
            component=i.component if hl7 else None,
            code=i.code,
            severity=i.severity,
            text=i.text,
        )
        for i in issues
    ]


def _transient(outcome: IntakeOutcome) -> bool:
    return outcome.ack_code == "AE" and any(i.code == APPLICATION_INTERNAL_ERROR for i in outcome.issues)


def _item(
    index: int, ref: str, outcome: IntakeOutcome, locate: Callable[[Issue], str | None], hl7: bool = False
) -> Item:
    return Item(
        index=index,
        ref=ref,
        control_id=outcome.control_id or None,
        status="accepted" if outcome.ack_code == "AA" else "rejected",
        ack_code=outcome.ack_code,
        result_ids=[r.result_id for r in outcome.results],
        reasons=_reasons(outcome.issues, locate, hl7),
    )


def _other_lab(lab: Lab, claimed: Sequence[str]) -> bool:
    """Whether a payload claims a sender that is not `lab` (identifiers of one claimed sender)."""
    own = {lab.lab_id, lab.finess} - {None}
    return bool(claimed) and not own.intersection(claimed)


def _forbidden_issue(lab: Lab, claimed: Sequence[str]) -> Issue:
    shown = ", ".join(c[:40] for c in claimed)
    return Issue(
        "MSH",
        1,
        4,
        1,
        UNKNOWN_KEY_IDENTIFIER,
        "E",
        f"sending lab '{shown}' is not the lab of this token '{lab.lab_id}'",
        True,
    )


def _chunks(items: Sequence[object]) -> Iterator[range]:
    for start in range(0, len(items), CHUNK):
        yield range(start, min(start + CHUNK, len(items)))


class _Submission:
    """One request being processed: its id, its lab, and the helpers every format shares."""

    def __init__(self, intake: Intake, lab: Lab, transport: Transport) -> None:
        self.intake = intake
        self.lab = lab
        self.transport = transport
        self.id = uuid.uuid4().hex
        self.received_at = datetime.now(UTC)

    def normalize(self, converted: Converted, extra: Sequence[Issue] = ()) -> Normalized:
        normalized = normalize_oru(
            converted.er7,
            received_at=self.received_at,
            transport=self.transport,
            protector=self.intake.protector,
            authenticated_lab=self.lab.lab_id,
            department_region=self.intake.department_region,
        )
        issues = [*extra, *(i for i, _ in converted.issues), *normalized.issues]
        return Normalized(normalized.header, normalized.results, normalized.non_results, issues)


    async def refuse_body(self, raw: bytes, status: int, error: str, text: str) -> JSONResponse:
        """A body that cannot be read: kept on the raw and rejected topics, answered 4xx."""
        envelope = build_oru(self.lab.lab_id, self.lab.finess, self.id, [], sent_at=self.received_at)
        issue = Issue("", 0, None, None, DATA_TYPE_ERROR, "E", text, True)
        normalized = Normalized(normalize_header(envelope.er7), issues=[issue])
        outcome = await self.intake.receive_normalized(raw, self.transport, normalized, self.received_at)
        if _transient(outcome):
            return _error(503, "unavailable", outcome.issues[0].text, retry_after_s=RETRY_AFTER_S)
        return _error(status, error, text)

    def response(self, items: list[Item], warnings: list[str]) -> SubmissionResponse:
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
            warnings=warnings,
            items=items,
        )


def create_app(
    intake: Intake, registry: LabRegistry, submissions: SubmissionStore, *, max_body_bytes: int
) -> FastAPI:
    app = FastAPI(title="LabFlow HTTP intake", version="1", docs_url=None, redoc_url=None)
    add_docs(app)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        log.error("http request failed; answered 503", **failure(exc))
        return _error(503, "internal", FAILED_TEXT, retry_after_s=RETRY_AFTER_S)

    async def authenticate(request: Request) -> Lab | JSONResponse:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "unauthorized", "an 'Authorization: Bearer <lab token>' header is required")
        try:
            authentication = await registry.authenticate(token.strip())
        except RegistryUnavailable:
            return _error(503, "unavailable", "the lab registry cannot be read right now; retry later")
        lab = authentication.lab
        if lab is None:
            return _error(401, "unauthorized", "unknown or revoked token")
        if not lab.enabled:
            return _error(403, "lab-disabled", f"lab {lab.lab_id} is disabled in the lab registry")
        return lab

    async def read_body(request: Request) -> bytes | _Oversized:
        body = bytearray()
        oversized: _Oversized | None = None
        async for chunk in request.stream():
            if oversized is not None:
                oversized.update(chunk)
                continue
            body += chunk
            if len(body) > max_body_bytes:
                oversized = _Oversized(bytes(body[:HEAD_BYTES]))
                oversized.update(bytes(body[HEAD_BYTES:]))
                body = bytearray()
        return oversized if oversized is not None else bytes(body)

    async def refuse_oversized(lab: Lab, transport: Transport, body: _Oversized) -> JSONResponse:
        outcome = await intake.refuse_oversized(
            transport, body.head, body.size, body.sha256.hexdigest(), max_body_bytes, lab.lab_id
        )
        if _transient(outcome):
            return _error(503, "unavailable", outcome.issues[0].text, retry_after_s=RETRY_AFTER_S)
        return _error(
            413,
            "too-large",
            f"the body of {body.size} bytes exceeds the {max_body_bytes}-byte limit; split it",
            limit_bytes=max_body_bytes,
            size_bytes=body.size,
            sha256=body.sha256.hexdigest(),
        )

    async def finish(
        submission: _Submission,
        outcomes: list[IntakeOutcome],
        items: list[Item],
        warnings: list[str],
        forbidden: list[str],
    ) -> JSONResponse:
        if any(_transient(o) for o in outcomes):
            return _error(
                503,
                "unavailable",
                "the results could not be stored durably right now (message bus unavailable); "
                "nothing of this submission is acknowledged, send it again",
                retry_after_s=RETRY_AFTER_S,
            )
        response = submission.response(items, warnings)
        try:
            await submissions.save(response)
        except SQLAlchemyError as exc:
            log.warning("submission not stored", submission_id=submission.id, error=type(exc).__name__)
            return _error(503, "unavailable", "the submission could not be recorded; send it again")
        body = response.model_dump(mode="json")
        status = 200
        if forbidden:
            status = 403
            body |= {"error": "forbidden", "detail": f"a lab may only send as itself: {'; '.join(forbidden)}"}
        location = f"/v1/submissions/{submission.id}"
        return JSONResponse(body, status_code=status, headers={"Location": location})

    async def handle(
        request: Request,
        transport: Transport,
        process: Callable[[_Submission, bytes], Awaitable[JSONResponse]],
    ) -> JSONResponse:
        lab = await authenticate(request)
        if isinstance(lab, JSONResponse):
            return lab
        try:
            body = await read_body(request)
            if isinstance(body, _Oversized):
                return await refuse_oversized(lab, transport, body)
            return await process(_Submission(intake, lab, transport), body)
        except Exception as exc:  # an answer the lab can act on (send again), never a 500
            log.error("http submission failed; answered 503", lab=lab.lab_id, **failure(exc))
            return _error(503, "internal", FAILED_TEXT, retry_after_s=RETRY_AFTER_S)

    async def process_hl7(submission: _Submission, body: bytes) -> JSONResponse:
        batch = split_batch(body)
        forbidden = []
        for n, message in enumerate(batch.messages, start=1):
            header = normalize_header(message)
            if header is not None and header.sending_facility:
                claimed = [c for c in (header.sending_facility, header.lab_finess) if c]
                if _other_lab(submission.lab, claimed):
                    forbidden.append(f"message {n} is from '{header.sending_facility[:40]}'")
        outcomes: list[IntakeOutcome] = []
        for chunk in _chunks(batch.messages):
            outcomes += await asyncio.gather(
                *(
                    intake.receive_hl7(batch.messages[i], submission.transport, submission.lab.lab_id)
                    for i in chunk
                )
            )
        items = [_item(i, f"message {i + 1}", o, _hl7_location, hl7=True) for i, o in enumerate(outcomes)]
        return await finish(submission, outcomes, items, batch.warnings, forbidden)

    async def process_fhir(submission: _Submission, body: bytes) -> JSONResponse:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            text = f"the body is not JSON: {str(exc)[:120]}"
            return await submission.refuse_body(body, 400, "malformed-json", text)
        try:
            content = read_bundle(document)
        except FhirError as exc:
            return await submission.refuse_body(body, 422, "not-a-bundle", str(exc))
        converted = build_oru(
            submission.lab.lab_id,
            submission.lab.finess,
            content.control_id or submission.id,
            content.rows,
            sent_at=submission.received_at,
            issues=content.issues,
        )
        others = [p for p in content.performers if _other_lab(submission.lab, p)]
        forbidden = [f"DiagnosticReport.performer is '{', '.join(p)[:60]}'" for p in others]
        refusals = [_forbidden_issue(submission.lab, p) for p in others[:1]]
        normalized = submission.normalize(converted, refusals)
        outcome = await intake.receive_normalized(
            body, submission.transport, normalized, submission.received_at
        )
        located = {id(issue): where for issue, where in converted.issues}

        def locate(issue: Issue) -> str | None:
            if (issue.segment, issue.field) == ("MSH", 10):
                return content.control_id_path
            if (issue.segment, issue.field) == ("MSH", 4):  # the sender: who performed the report
                return "Bundle.entry.resource.ofType(DiagnosticReport).performer"
            return located.get(id(issue)) or (converted.locate(issue) if issue.segment else None)

        return await finish(submission, [outcome], [_item(0, "bundle", outcome, locate)], [], forbidden)

    async def process_csv(submission: _Submission, body: bytes) -> JSONResponse:
        try:
            rows = parse_csv(body)
        except NoRows as exc:
            return await submission.refuse_body(body, 422, "no-rows", str(exc))
        except CsvError as exc:
            return await submission.refuse_body(body, 400, "malformed-csv", str(exc))
        outcomes: list[IntakeOutcome] = []
        converted: list[Converted] = []
        for chunk in _chunks(rows):
            batch = []
            for i in chunk:
                row = rows[i]
                conversion = build_oru(
                    submission.lab.lab_id,
                    submission.lab.finess,
                    f"{submission.id[:16]}-{row.number}",
                    [row.row],
                    sent_at=submission.received_at,
                    issues=row.issues,
                )
                converted.append(conversion)
                normalized = submission.normalize(conversion)
                received_at, transport = submission.received_at, submission.transport
                batch.append(intake.receive_normalized(row.raw, transport, normalized, received_at))
            outcomes += await asyncio.gather(*batch)
        items = []
        for i, (outcome, conversion) in enumerate(zip(outcomes, converted, strict=True)):
            located = {id(issue): where for issue, where in conversion.issues}

            def locate(issue: Issue, c: Converted = conversion, at: dict[int, str] = located) -> str | None:
                return at.get(id(issue)) or (c.locate(issue) if issue.segment else None)

            items.append(_item(i, f"row {rows[i].number}", outcome, locate))
        return await finish(submission, outcomes, items, [], [])

    @app.post("/v1/results/hl7")
    async def post_hl7(request: Request) -> JSONResponse:
        return await handle(request, Transport.HTTP_HL7, process_hl7)

    @app.post("/v1/results/fhir")
    async def post_fhir(request: Request) -> JSONResponse:
        answer = await handle(request, Transport.HTTP_FHIR, process_fhir)
        if not wants_fhir(request.headers.get("accept", "")):
            return answer
        outcome = operation_outcome(json.loads(bytes(answer.body)), answer.status_code)
        headers = {k: v for k, v in answer.headers.items() if k.lower() in ("location", "retry-after",
                                                                              "www-authenticate")}
        return JSONResponse(outcome, status_code=answer.status_code, headers=headers, media_type=FHIR_JSON)

    @app.post("/v1/results/csv")
    async def post_csv(request: Request) -> JSONResponse:
        return await handle(request, Transport.HTTP_CSV, process_csv)

    @app.get("/v1/submissions/{submission_id}")
    async def get_submission(submission_id: str, request: Request) -> JSONResponse:
        lab = await authenticate(request)
        if isinstance(lab, JSONResponse):
            return lab
        try:
            found = await submissions.get(submission_id[:32], lab.lab_id)
        except SQLAlchemyError:
            return _error(503, "unavailable", "submissions cannot be read right now; retry later")
        if found is None:
            return _error(404, "not-found", f"no submission {submission_id[:32]} from lab {lab.lab_id}")
        return JSONResponse(found)

    return app


class HttpServer(uvicorn.Server):
    """uvicorn in the gateway's own event loop; the gateway handles SIGINT/SIGTERM itself."""

    def __init__(self, app: FastAPI, host: str, port: int, drain_timeout_s: float | None = None) -> None:
        super().__init__(
            uvicorn.Config(
                app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
                server_header=False,
                timeout_graceful_shutdown=None if drain_timeout_s is None else max(1, round(drain_timeout_s)),
            )
        )

    @classmethod
    def for_gateway(cls, settings: Settings, intake: Intake, registry: LabRegistry) -> HttpServer:
        submissions = SubmissionStore(make_engine(settings.database_url_for("gateway")))
        app = create_app(intake, registry, submissions, max_body_bytes=settings.http_max_body_bytes)
        return cls(app, settings.http_host, settings.http_port, settings.gateway_drain_timeout_s)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # the gateway's event loop owns SIGINT/SIGTERM and stops MLLP and HTTP together
        yield

    def start(self) -> None:
        self._task = asyncio.create_task(self.serve())

    async def stop(self) -> None:
        self.should_exit = True
        await self._task
