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

The routes only authenticate, read the body and call the use cases of `submission.py`; `POST
/v1/validate` calls the same ones with an intake that publishes nothing (`validation.py`) and
answers the status intake would, with the validation report as its body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.core.config import Settings
from services.core.db import tables
from services.core.db.engine import make_engine
from services.core.domain.model import Transport
from services.core.logs import get_logger
from services.gateway.fhir_outcome import FHIR_JSON, operation_outcome, wants_fhir
from services.gateway.http_docs import add_docs
from services.gateway.intake import Intake, failure
from services.gateway.labs import Lab, LabRegistry, RegistryUnavailable
from services.gateway.submission import (
    Submission,
    SubmissionResponse,
    handle_csv,
    handle_fhir,
    handle_hl7,
    transient,
)
from services.gateway.validation import FORMATS, Format, ValidationReport, detect_format, validate

log = get_logger(__name__)

RETRY_AFTER_S = 5
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


def create_app(
    intake: Intake,
    registry: LabRegistry,
    submissions: SubmissionStore,
    *,
    max_body_bytes: int,
    validation: Intake | None = None,
) -> FastAPI:
    """`validation`: the intake without publishing that `POST /v1/validate` uses (by default
    `intake.without_publishing()`)."""
    app = FastAPI(title="LabFlow HTTP intake", version="1", docs_url=None, redoc_url=None)
    add_docs(app)
    validating = validation if validation is not None else intake.without_publishing()

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

    def too_large(body: _Oversized) -> JSONResponse:
        return _error(
            413,
            "too-large",
            f"the body of {body.size} bytes exceeds the {max_body_bytes}-byte limit; split it",
            limit_bytes=max_body_bytes,
            size_bytes=body.size,
            sha256=body.sha256.hexdigest(),
        )

    async def refuse_oversized(lab: Lab, transport: Transport, body: _Oversized) -> JSONResponse:
        outcome = await intake.refuse_oversized(
            transport, body.head, body.size, body.sha256.hexdigest(), max_body_bytes, lab.lab_id
        )
        if transient(outcome):
            return _error(503, "unavailable", outcome.issues[0].text, retry_after_s=RETRY_AFTER_S)
        return too_large(body)

    async def answer(submission: Submission) -> JSONResponse:
        status, error, detail = submission.status()
        if status == 503:
            return _error(503, error or "unavailable", detail or "", retry_after_s=RETRY_AFTER_S)
        if submission.refusal is not None:
            return _error(status, error or "", detail or "")
        response = submission.response()
        try:
            await submissions.save(response)
        except SQLAlchemyError as exc:
            log.warning("submission not stored", submission_id=submission.id, error=type(exc).__name__)
            return _error(503, "unavailable", "the submission could not be recorded; send it again")
        body = response.model_dump(mode="json")
        if error is not None:
            body |= {"error": error, "detail": detail}
        location = f"/v1/submissions/{submission.id}"
        return JSONResponse(body, status_code=status, headers={"Location": location})

    async def handle(
        request: Request,
        transport: Transport,
        use_case: Callable[[Intake, Lab, bytes], Awaitable[Submission]],
    ) -> JSONResponse:
        lab = await authenticate(request)
        if isinstance(lab, JSONResponse):
            return lab
        try:
            body = await read_body(request)
            if isinstance(body, _Oversized):
                return await refuse_oversized(lab, transport, body)
            return await answer(await use_case(intake, lab, body))
        except Exception as exc:  # an answer the lab can act on (send again), never a 500
            log.error("http submission failed; answered 503", lab=lab.lab_id, **failure(exc))
            return _error(503, "internal", FAILED_TEXT, retry_after_s=RETRY_AFTER_S)

    @app.post("/v1/results/hl7")
    async def post_hl7(request: Request) -> JSONResponse:
        return await handle(request, Transport.HTTP_HL7, handle_hl7)

    @app.post("/v1/results/fhir")
    async def post_fhir(request: Request) -> JSONResponse:
        answer = await handle(request, Transport.HTTP_FHIR, handle_fhir)
        if not wants_fhir(request.headers.get("accept", "")):
            return answer
        outcome = operation_outcome(json.loads(bytes(answer.body)), answer.status_code)
        headers = {k: v for k, v in answer.headers.items() if k.lower() in ("location", "retry-after",
                                                                              "www-authenticate")}
        return JSONResponse(outcome, status_code=answer.status_code, headers=headers, media_type=FHIR_JSON)

    @app.post("/v1/results/csv")
    async def post_csv(request: Request) -> JSONResponse:
        return await handle(request, Transport.HTTP_CSV, handle_csv)

    @app.post(
        "/v1/validate",
        response_model=ValidationReport,
        responses={
            400: {"model": ValidationReport, "description": "intake would answer 400: unreadable body"},
            403: {"model": ValidationReport, "description": "intake would answer 403: sent as another lab"},
            422: {"model": ValidationReport, "description": "intake would answer 422: no Bundle, no rows"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    media: {"schema": {"type": "string"}}
                    for media in ("x-application/hl7-v2+er7", "application/fhir+json", "text/csv")
                },
            }
        },
    )
    async def post_validate(
        request: Request,
        kind: Annotated[
            Format | None,
            Query(
                alias="format",
                description=f"one of {', '.join(FORMATS)}; by default from Content-Type, else the content",
            ),
        ] = None,
    ) -> JSONResponse:
        """What intake would answer for this body (HL7 v2 message or FHS/BHS batch, FHIR R4 Bundle,
        CSV), with nothing published, stored or counted (SPEC §8.1): the status intake would answer,
        and a report per item (ACK code, each issue with its location, HL7 table 0357 code and a hint,
        what would be counted — never identity)."""
        lab = await authenticate(request)
        if isinstance(lab, JSONResponse):
            return lab
        try:
            body = await read_body(request)
            if isinstance(body, _Oversized):
                return too_large(body)
            kind = kind or detect_format(body, content_type=request.headers.get("content-type"))
            report = await validate(validating, lab, body, kind)
        except Exception as exc:  # never a 500
            log.error("http validation failed; answered 503", lab=lab.lab_id, **failure(exc))
            return _error(503, "internal", FAILED_TEXT, retry_after_s=RETRY_AFTER_S)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if report.intake_status == 503 else None
        return JSONResponse(report.model_dump(mode="json"), status_code=report.intake_status, headers=headers)

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
    def for_gateway(
        cls, settings: Settings, intake: Intake, registry: LabRegistry, validation: Intake | None = None
    ) -> HttpServer:
        submissions = SubmissionStore(make_engine(settings.database_url_for("gateway")))
        app = create_app(
            intake, registry, submissions, max_body_bytes=settings.http_max_body_bytes, validation=validation
        )
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
