"""The contract of `cases.v1`: new, moved and retracted positive cases, for contact tracing."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.core.domain.model import Sex, TestKind

CaseEventType = Literal["case.opened", "case.updated", "case.retracted"]


class CaseEventMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    event_id: str = Field(description="Unique per event; a re-publication keeps it")
    type: CaseEventType
    case_id: str = Field(description="Stable across updates: the tracing idempotency key")
    patient_pseudonym: str
    onset_day: date
    last_positive_day: date
    department: str | None
    region: str | None
    age_class: str | None
    sex: Sex
    test_kind: TestKind
    sealed_identity: str | None = Field(
        default=None, description="Identity and contact details sealed for the tracing service only"
    )
    first_received_at: AwareDatetime = Field(
        description="Gateway reception of the result that opened the case (handoff delay starts here)"
    )
    occurred_at: AwareDatetime
