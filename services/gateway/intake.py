"""The gateway's service layer: one payload in, durable records out, one acknowledgement decision.

Shared by the MLLP server and the HTTP intake. A payload gets AA only after Kafka confirmed every
record it produced (the raw copy and each result); a rejected payload is written, raw and with its
reasons, to the rejected topic before the lab is answered, so nothing is dropped silently.

Every payload gets an answer (SPEC §9.1): Kafka not confirming, or anything failing unexpectedly
while a payload is handled, is AE (send it again), never an exception for the transport to turn
into a closed connection. What Kafka cannot carry (a payload over the documented limit, or a record
over the size limits derived from it in `services/core/record_sizes.py`) is refused with AR, and the
rejected topic keeps its SHA-256 and size instead of the payload.

`without_publishing()` is the same intake with a publisher that writes nothing and no metrics:
validation (SPEC §8.1) answers exactly what intake would because it is this code, not a copy.

Test mode (SPEC §8.1) is decided here, at the one place every transport's records pass once admitted:
the results of a lab the registry holds in test mode are marked `lab_mode = test` in the canonical
record itself (not in a Kafka header, so the mark travels with the record into any consumer, replay or
dead letter, and the worker's decoder sees it). They go through every check and get the very ACK a
production lab would; the worker then keeps them in test storage only. Without an enforced registry
no lab is known, hence none is in test mode.
"""

from __future__ import annotations

import base64
import hashlib
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo

from services.core.config import Topics
from services.core.domain.model import PARIS, LabMode, LabResult, Transport
from services.core.domain.rejection import Rejection, RejectionReason
from services.core.logs import get_logger
from services.gateway import metrics
from services.gateway.hl7.normalize import (
    APPLICATION_INTERNAL_ERROR,
    Issue,
    MessageHeader,
    Normalized,
    normalize_header,
    normalize_oru,
)
from services.gateway.identity import IdentityProtector
from services.gateway.labs import REGISTRY_UNAVAILABLE, LabRegistry, RegistryUnavailable
from services.gateway.publish import DeliveryFailed, NotPublishing, Publisher, Record, RecordTooLarge
from services.gateway.result_drafts import ResultRow, RowContent, normalize_rows

log = get_logger(__name__)

TRANSIENT = Issue.about_message(
    APPLICATION_INTERNAL_ERROR,
    "the result could not be stored durably right now (message bus unavailable); send it again",
)
FAILED = Issue.about_message(
    APPLICATION_INTERNAL_ERROR, "the gateway failed to process this message (it was logged); send it again"
)
HEADER_VALUE_BYTES = 256
"""Raw-record key and headers are cut to this: the record size bound leaves them little room."""
REASONS_KEPT = 20
REASON_TEXT_CHARS = 300


def failure(exc: BaseException) -> dict[str, str]:
    """What to log about an unexpected exception: its type and where it was raised, not its message
    (which may quote the payload, hence identity)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "?"
    return {"error": type(exc).__name__, "at": where}


@dataclass(frozen=True, slots=True)
class IntakeOutcome:
    ack_code: str
    header: MessageHeader | None
    issues: list[Issue]
    results: list[LabResult]
    received_at: datetime

    @property
    def control_id(self) -> str:
        return self.header.control_id if self.header else ""


class Intake:
    def __init__(
        self,
        publisher: Publisher,
        topics: Topics,
        protector: IdentityProtector,
        labs: LabRegistry | None = None,
        department_region: Mapping[str, str] | None = None,
        *,
        counted: bool = True,
        lab_time_zone: Callable[[str], tzinfo] | None = None,
    ) -> None:
        self.publisher = publisher
        self.counted = counted
        """False when validating: what it answers is not in the gateway's metrics."""
        self.lab_time_zone = lab_time_zone or (labs.time_zone if labs is not None else lambda _: PARIS)
        """The zone a sending lab's offset-less times are read in (SPEC §8.1): the registry's, else the
        one given (offline validation), else Europe/Paris."""
        self.department_region = department_region
        """From the configured reference data (LABFLOW_REFERENCE_DIR)."""
        self.topics = topics
        self.protector = protector
        self.labs = labs
        """When set, only registered, enabled labs are admitted (LABFLOW_LAB_REGISTRY_ENFORCED)."""

    def without_publishing(self) -> Intake:
        """This intake for validation: the same checks and answers, nothing written or counted."""
        return Intake(
            NotPublishing(self.publisher),
            self.topics,
            self.protector,
            self.labs,
            self.department_region,
            counted=False,
            lab_time_zone=self.lab_time_zone,
        )

    def normalize(
        self,
        raw: bytes,
        transport: Transport,
        received_at: datetime,
        authenticated_lab: str | None,
    ) -> Normalized:
        """One ORU^R01 as this gateway reads it: its identity keys, its reference data, and each sending
        lab's time zone (`lab_time_zone`)."""
        return normalize_oru(
            raw,
            received_at=received_at,
            transport=transport,
            protector=self.protector,
            authenticated_lab=authenticated_lab,
            department_region=self.department_region,
            lab_time_zone=self.lab_time_zone,
        )

    def normalize_rows(
        self, rows: Sequence[ResultRow], header: MessageHeader, transport: Transport, received_at: datetime
    ) -> tuple[Normalized, RowContent]:
        """FHIR or CSV result rows as this gateway reads them, by the checks HL7 goes through."""
        return normalize_rows(
            rows,
            header,
            received_at=received_at,
            transport=transport,
            protector=self.protector,
            department_region=self.department_region,
            lab_time_zone=self.lab_time_zone(header.sending_facility),
        )

    async def receive_hl7(
        self,
        raw: bytes,
        transport: Transport,
        authenticated_lab: str | None = None,
    ) -> IntakeOutcome:
        started = time.perf_counter()
        received_at = datetime.now(UTC)
        try:
            normalized = self.normalize(raw, transport, received_at, authenticated_lab)
        except Exception as exc:  # any failure is an AE, never a lost message
            log.error("message not normalized; lab answered AE", **failure(exc))
            return IntakeOutcome("AE", None, [FAILED], [], received_at)
        return await self.receive_normalized(raw, transport, normalized, received_at, started)

    async def receive_normalized(
        self,
        raw: bytes,
        transport: Transport,
        normalized: Normalized,
        received_at: datetime,
        started: float | None = None,
    ) -> IntakeOutcome:
        """Admit and store content normalized by the caller (FHIR, CSV); `raw` is kept as received."""
        started = time.perf_counter() if started is None else started
        try:
            outcome = await self._admit_and_store(raw, transport, normalized, received_at)
        except Exception as exc:  # any failure is an AE, never a lost message
            log.error("message not stored; lab answered AE", **failure(exc))
            outcome = IntakeOutcome("AE", normalized.header, [FAILED], [], received_at)
        self._record(outcome, transport, started)
        return outcome

    async def refuse_oversized(
        self,
        transport: Transport,
        head: bytes,
        size: int,
        sha256: str,
        limit: int,
        authenticated_lab: str | None = None,
    ) -> IntakeOutcome:
        """A payload over the documented limit: AR, and its SHA-256 and size (not the payload, which
        Kafka is not sized to carry) on the rejected topic. AE if even that cannot be written."""
        started = time.perf_counter()
        received_at = datetime.now(UTC)
        header = normalize_header(head)
        issue = Issue.about_message(
            APPLICATION_INTERNAL_ERROR, f"message of {size} bytes exceeds the {limit}-byte limit", reject=True
        )
        rejection = rejection_for(
            b"", transport, received_at, "AR", header, [issue], digest=(sha256, size), lab=authenticated_lab
        )
        outcome = IntakeOutcome("AR", header, [issue], [], received_at)
        try:
            await self.publisher.publish([self._rejection_record(rejection)])
        except (DeliveryFailed, RecordTooLarge) as exc:
            metrics.DELIVERY_FAILURES.inc()
            log.warning("kafka did not confirm; lab answered AE", error=str(exc))
            outcome = IntakeOutcome("AE", header, [TRANSIENT], [], received_at)
        except Exception as exc:
            log.error("rejection not stored; lab answered AE", **failure(exc))
            outcome = IntakeOutcome("AE", header, [FAILED], [], received_at)
        self._record(outcome, transport, started)
        return outcome

    def _record(self, outcome: IntakeOutcome, transport: Transport, started: float) -> None:
        if not self.counted:
            return
        lab = outcome.header.sending_facility if outcome.header else "unknown"
        metrics.MESSAGES.labels(lab, transport.value, outcome.ack_code).inc()
        metrics.ACK_LATENCY.labels(transport.value).observe(time.perf_counter() - started)
        log.info(
            "message answered",
            lab=lab,
            control_id=outcome.control_id,
            ack_code=outcome.ack_code,
            results=len(outcome.results),
            transport=transport.value,
            errors=[f"{i.segment}-{i.field}:{i.code}" for i in outcome.issues][:5],
        )

    async def _admit_and_store(
        self, raw: bytes, transport: Transport, normalized: Normalized, received_at: datetime
    ) -> IntakeOutcome:
        header = normalized.header
        if self.labs is not None and header is not None and normalized.ack_code != "AR":
            try:
                refusal = await self.labs.admission_issue(header)
            except RegistryUnavailable:
                return IntakeOutcome("AE", header, [REGISTRY_UNAVAILABLE], [], received_at)
            if refusal is not None:
                normalized = Normalized(header, issues=[refusal])
            elif self.labs.in_test_mode(header.sending_facility):
                normalized = replace(
                    normalized,
                    results=[r.model_copy(update={"lab_mode": LabMode.TEST}) for r in normalized.results],
                )
        return await self._store(raw, transport, received_at, normalized)

    async def _store(
        self, raw: bytes, transport: Transport, received_at: datetime, normalized: Normalized
    ) -> IntakeOutcome:
        header = normalized.header
        lab = header.sending_facility if header else None
        control_id = header.control_id if header else None
        records = [self._raw_record(raw, transport, received_at, lab, control_id)]
        code = normalized.ack_code
        if code == "AA":
            records += [
                Record(self.topics.results, r.model_dump_json().encode(), r.patient_pseudonym.encode())
                for r in normalized.results
            ]
        else:
            records.append(
                self._rejection_record(
                    rejection_for(raw, transport, received_at, code, header, normalized.issues)
                )
            )
        try:
            try:
                await self.publisher.publish(records)
            except RecordTooLarge as exc:
                code, normalized = "AR", self._too_large(normalized, exc)
                await self.publisher.publish(self._refusal_records(raw, transport, received_at, normalized))
        except (DeliveryFailed, RecordTooLarge) as exc:
            metrics.DELIVERY_FAILURES.inc()
            log.warning(
                "kafka did not confirm; lab answered AE", lab=lab, control_id=control_id, error=str(exc)
            )
            return IntakeOutcome("AE", header, [TRANSIENT], [], received_at)
        if code == "AA" and lab:
            metrics.RESULTS.labels(lab).inc(len(normalized.results))
        results = normalized.results if code == "AA" else []
        return IntakeOutcome(code, header, normalized.issues, results, received_at)

    @staticmethod
    def _too_large(normalized: Normalized, exc: RecordTooLarge) -> Normalized:
        issue = Issue.about_message(
            APPLICATION_INTERNAL_ERROR,
            f"this message makes a record of {exc.size} bytes, over the {exc.limit}-byte limit of the "
            "message bus; send it in smaller messages",
            reject=True,
        )
        return Normalized(normalized.header, issues=[issue, *normalized.issues])

    def _refusal_records(
        self, raw: bytes, transport: Transport, received_at: datetime, normalized: Normalized
    ) -> list[Record]:
        """What Kafka cannot carry whole: the raw copy if it fits, and a rejection that keeps the
        payload if it fits, else its SHA-256 with the first reasons."""
        header = normalized.header
        raw_record = self._raw_record(
            raw, transport, received_at, header.sending_facility if header else None,
            header.control_id if header else None,
        )
        records = [raw_record] if self.publisher.fits(raw_record) else []
        whole = self._rejection_record(
            rejection_for(raw, transport, received_at, "AR", header, normalized.issues)
        )
        if self.publisher.fits(whole):
            return [*records, whole]
        issues = [
            Issue(i.segment, i.sequence, i.field, i.component, i.code, i.severity, i.text[:REASON_TEXT_CHARS])
            for i in normalized.issues[:REASONS_KEPT]
        ]
        digest = (hashlib.sha256(raw).hexdigest(), len(raw))
        brief = rejection_for(b"", transport, received_at, "AR", header, issues, digest=digest)
        return [*records, self._rejection_record(brief)]

    def _raw_record(
        self, raw: bytes, transport: Transport, received_at: datetime, lab: str | None, control_id: str | None
    ) -> Record:
        lab_bytes = (lab or "").encode()[:HEADER_VALUE_BYTES]
        headers = [
            ("transport", transport.value.encode()),
            ("received_at", received_at.isoformat().encode()),
            ("lab", lab_bytes),
            ("control_id", (control_id or "").encode()[:HEADER_VALUE_BYTES]),
        ]
        return Record(self.topics.raw, raw, lab_bytes or None, headers)

    def _rejection_record(self, rejection: Rejection) -> Record:
        return Record(
            self.topics.rejected, rejection.model_dump_json().encode(), rejection.rejection_id.encode()
        )


def rejection_for(
    raw: bytes,
    transport: Transport,
    received_at: datetime,
    ack_code: str,
    header: MessageHeader | None,
    issues: list[Issue],
    *,
    digest: tuple[str, int] | None = None,
    lab: str | None = None,
) -> Rejection:
    """`digest` (SHA-256 hex, size) stands for a payload not kept; `lab` when the header names none."""
    sha256, size = digest if digest is not None else (hashlib.sha256(raw).hexdigest(), len(raw))
    return Rejection(
        rejection_id=Rejection.id_for(sha256.encode() if digest else raw, received_at.isoformat()),
        stage="gateway",
        ack_code="AR" if ack_code == "AR" else "AE",
        lab=header.sending_facility if header else lab,
        transport=transport,
        message_control_id=header.control_id if header else None,
        received_at=received_at,
        reasons=[
            RejectionReason(
                segment=i.segment,
                sequence=i.sequence,
                field=i.field,
                component=i.component,
                code=i.code,
                severity=i.severity,
                text=i.text,
                kind=i.kind or None,
                hint=i.hint or None,
            )
            for i in issues
        ],
        payload_base64=base64.b64encode(raw).decode(),
        payload_sha256=sha256,
        payload_size=size,
    )
