"""The gateway's service layer: one payload in, durable records out, one acknowledgement decision.

Shared by the MLLP server and the HTTP intake. A payload gets AA only after Kafka confirmed every
record it produced (the raw copy and each result); a rejected payload is written, raw and with its
reasons, to the rejected topic before the lab is answered, so nothing is dropped silently.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from services.core.config import Topics
from services.core.domain.model import LabResult, Transport
from services.core.domain.rejection import Rejection, RejectionReason
from services.core.logs import get_logger
from services.gateway import metrics
from services.gateway.hl7.normalize import (
    APPLICATION_INTERNAL_ERROR,
    Issue,
    MessageHeader,
    Normalized,
    normalize_oru,
)
from services.gateway.identity import IdentityProtector
from services.gateway.labs import REGISTRY_UNAVAILABLE, LabRegistry, RegistryUnavailable
from services.gateway.publish import DeliveryFailed, KafkaPublisher, Record

log = get_logger(__name__)

TRANSIENT = Issue.about_message(
    APPLICATION_INTERNAL_ERROR,
    "the result could not be stored durably right now (message bus unavailable); send it again",
)


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
        publisher: KafkaPublisher,
        topics: Topics,
        protector: IdentityProtector,
        labs: LabRegistry | None = None,
    ) -> None:
        self.publisher = publisher
        self.topics = topics
        self.protector = protector
        self.labs = labs
        """When set, only registered, enabled labs are admitted (LABFLOW_LAB_REGISTRY_ENFORCED)."""

    async def receive_hl7(
        self, raw: bytes, transport: Transport, authenticated_lab: str | None = None
    ) -> IntakeOutcome:
        started = time.perf_counter()
        received_at = datetime.now(UTC)
        normalized = normalize_oru(
            raw,
            received_at=received_at,
            transport=transport,
            protector=self.protector,
            authenticated_lab=authenticated_lab,
        )
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
        if self.labs is not None and normalized.header is not None and normalized.ack_code != "AR":
            try:
                refusal = await self.labs.admission_issue(normalized.header)
            except RegistryUnavailable:
                return IntakeOutcome("AE", normalized.header, [REGISTRY_UNAVAILABLE], [], received_at)
            if refusal is not None:
                normalized = Normalized(normalized.header, issues=[refusal])
        outcome = await self._store(raw, transport, received_at, normalized)
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
        return outcome

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
            records.append(self._rejection_record(raw, transport, received_at, normalized))
        try:
            await self.publisher.publish(records)
        except DeliveryFailed as exc:
            metrics.DELIVERY_FAILURES.inc()
            log.warning(
                "kafka did not confirm; lab answered AE", lab=lab, control_id=control_id, error=str(exc)
            )
            return IntakeOutcome("AE", header, [TRANSIENT], [], received_at)
        if code == "AA" and lab:
            metrics.RESULTS.labels(lab).inc(len(normalized.results))
        results = normalized.results if code == "AA" else []
        return IntakeOutcome(code, header, normalized.issues, results, received_at)

    def _raw_record(
        self, raw: bytes, transport: Transport, received_at: datetime, lab: str | None, control_id: str | None
    ) -> Record:
        headers = [
            ("transport", transport.value.encode()),
            ("received_at", received_at.isoformat().encode()),
            ("lab", (lab or "").encode()),
            ("control_id", (control_id or "").encode()),
        ]
        return Record(self.topics.raw, raw, lab.encode() if lab else None, headers)

    def _rejection_record(
        self, raw: bytes, transport: Transport, received_at: datetime, normalized: Normalized
    ) -> Record:
        header = normalized.header
        rejection = rejection_for(raw, transport, received_at, normalized.ack_code, header, normalized.issues)
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
) -> Rejection:
    return Rejection(
        rejection_id=Rejection.id_for(raw, received_at.isoformat()),
        stage="gateway",
        ack_code="AR" if ack_code == "AR" else "AE",
        lab=header.sending_facility if header else None,
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
            )
            for i in issues
        ],
        payload_base64=base64.b64encode(raw).decode(),
    )
