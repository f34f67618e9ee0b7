"""The canonical lab result (SPEC §3): the contract of `lab.results.v1`.

Pure data: no I/O. The gateway builds these from HL7/FHIR/CSV; the worker stores them. Text lengths
are bounded by `limits` (what the PostgreSQL columns carry), which the gateway checks before building.
"""

from __future__ import annotations

import hashlib
from datetime import date
from enum import StrEnum
from typing import Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.core.domain.geography import PARIS as PARIS  # the time of the SI-DEP files
from services.core.domain.geography import department_time_zone
from services.core.domain.limits import FINESS_MAX, POSTAL_CODE_MAX, TEXT_MAX

SCHEMA_VERSION: Final = 1


class TestKind(StrEnum):
    RT_PCR = "rt-pcr"
    ANTIGEN = "antigen"
    SEROLOGY = "serology"
    OTHER = "other"


VIROLOGICAL_KINDS = frozenset((TestKind.RT_PCR, TestKind.ANTIGEN))
"""The kinds P and T count, as Santé publique France's SI-DEP files do (serology never counts)."""


class Outcome(StrEnum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    INCONCLUSIVE = "inconclusive"
    INVALID = "invalid"


class ResultStatus(StrEnum):
    """HL7 table 0085 (OBX-11), restricted to the values a lab result takes."""

    FINAL = "F"
    CORRECTED = "C"
    PRELIMINARY = "P"
    CANCELLED = "X"
    DELETED = "D"
    WRONG_PATIENT = "W"

    @property
    def retracts(self) -> bool:
        return self in (ResultStatus.CANCELLED, ResultStatus.DELETED, ResultStatus.WRONG_PATIENT)


class Sex(StrEnum):
    FEMALE = "F"
    MALE = "M"
    UNKNOWN = "U"


class Transport(StrEnum):
    MLLP = "mllp"
    HTTP_HL7 = "http-hl7"
    HTTP_FHIR = "http-fhir"
    HTTP_CSV = "http-csv"


class LabMode(StrEnum):
    """SPEC §8.1: a lab starts in `test` mode (its results are kept apart and never count)."""

    PRODUCTION = "production"
    TEST = "test"


class PseudonymBasis(StrEnum):
    INS = "ins"
    TRAITS = "traits"


def make_result_id(sending_facility: str, specimen_or_order_id: str, test_code: str) -> str:
    """Deterministic idempotency key of one result: every version of it (F, C, X…) shares it."""
    material = "\x1f".join(
        (sending_facility.strip().upper(), specimen_or_order_id.strip(), test_code.strip())
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


class LabResult(BaseModel):
    """One observation with a test result, normalized. Carries no identity in clear."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    result_id: str = Field(min_length=8, max_length=64, description="Deterministic idempotency key")

    # where it came from
    sending_application: str = Field(max_length=TEXT_MAX, description="MSH-3")
    sending_facility: str = Field(max_length=TEXT_MAX, description="MSH-4: the lab id")
    lab_finess: str | None = Field(
        default=None, max_length=FINESS_MAX, description="FINESS of the sending lab, where given"
    )
    performing_lab: str | None = Field(
        default=None, max_length=TEXT_MAX, description="OBX-23 / OBX-15 performing organization"
    )
    message_control_id: str = Field(max_length=TEXT_MAX, description="MSH-10")
    transport: Transport
    received_at: AwareDatetime
    lab_mode: LabMode = Field(
        default=LabMode.PRODUCTION,
        description="test: sent by a lab in test mode (SPEC §8.1); stored apart, never counted, exported "
        "or handed to tracing",
    )

    # patient (pseudonymized)
    patient_pseudonym: str = Field(min_length=16, description="Keyed HMAC-SHA-256, hex")
    pseudonym_basis: PseudonymBasis
    sex: Sex
    birth_year: int | None = Field(default=None, ge=1880, le=2100)
    age_class: str | None = Field(default=None, description="cl_age90 code at collection: 09, 19 … 89, 90")
    postal_code: str | None = Field(default=None, max_length=POSTAL_CODE_MAX)
    department: str | None = Field(default=None, description="INSEE department code: 01, 2A, 971…")
    region: str | None = Field(default=None, description="INSEE region code")
    sealed_identity: str | None = Field(
        default=None, description="Identity and contact details, sealed for the tracing service (base64)"
    )

    # specimen and test
    specimen_id: str | None = Field(
        default=None, max_length=TEXT_MAX, description="SPM-2 / OBR-3 filler order number"
    )
    specimen_type: str | None = Field(default=None, max_length=TEXT_MAX, description="SPM-4 code")
    collected_at: AwareDatetime = Field(description="SPM-17 / OBR-7")
    loinc: str = Field(description="OBX-3 LOINC code")
    test_kind: TestKind
    outcome: Outcome
    status: ResultStatus
    observed_at: AwareDatetime | None = Field(default=None, description="OBX-14")
    result_at: AwareDatetime | None = Field(default=None, description="OBR-22 result/validation time")

    @property
    def collection_day(self) -> date:
        """The specimen collection day (the `jour` of open data), in the residence department's time."""
        return self.collected_at.astimezone(department_time_zone(self.department)).date()

    @property
    def counts(self) -> bool:
        """Whether this version can decide an outcome at all (P never counts, X/D/W retract)."""
        return self.status in (ResultStatus.FINAL, ResultStatus.CORRECTED)
