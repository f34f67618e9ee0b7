"""What a lab sent about one patient, one order and one observation, before it is checked.

Every format fills these drafts: the HL7 v2 walk from PID, OBR/SPM and OBX (`hl7.patient`,
`hl7.observation`, `hl7.normalize`), FHIR Bundles and CSV rows from their result rows
(`result_drafts`). One set of checks then runs over them and builds the canonical `LabResult`s
(`hl7.normalize.normalize_drafts`), so a result is refused for the same reasons whatever its format.

Values are text as sent (unescaped, "" when not sent); date/times are HL7 DTM text (FHIR and CSV
ISO 8601 values are converted first), read in the lab's time zone by the checks. Issues are located
at the HL7 position each value has (`PID-7`, `SPM-17`), in the occurrence (`sequence`) its segment
has: the reason texts are the same in every format, and a FHIR or CSV reader maps the position back
to its own terms (a FHIRPath, `row 3, column ins`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class PatientDraft:
    """PID: the identity, residence and contact details of one patient."""

    sequence: int
    ins: str | None
    """The INS matricule (PID-3 with an INS OID or type), normalized; None when not sent."""
    lab_patient_id: str | None
    birth_name: str
    given_names: str
    birth_date: str
    """PID-7 DTM as sent."""
    sex: str
    """PID-8, upper case."""
    postal_code: str | None
    """PID-11.5 of the residence, without spaces."""
    country: str
    address: dict[str, str] | None
    birth_place: str | None
    phone: str | None
    email: str | None


@dataclass(slots=True)
class ObservationDraft:
    """OBX: one observation of an order."""

    sequence: int
    loinc: str
    """OBX-3.1, or OBX-3.4 when only it is coded LN (see `hl7.observation.observation_draft`)."""
    question: bool
    """OBX-29 is QST: an ask-at-order-entry answer, not a result."""
    status: str
    """OBX-11."""
    value: str
    """OBX-5.1."""
    alternates: tuple[str, ...]
    """A coded value's text, alternate code and alternate text (OBX-5.2, 5.4, 5.5); () for text. A
    reader may leave out what the checks would not read (all but the text when OBX-5.1 is an outcome)."""
    value_sent: bool
    """OBX-5 is not empty."""
    observed_at: str
    """OBX-14 DTM as sent."""
    performing_lab: str | None


@dataclass(slots=True)
class OrderDraft:
    """OBR with its SPM: one specimen, its times and its observations."""

    sequence: int
    """OBR occurrence."""
    specimen_sequence: int | None
    """SPM occurrence, when the order has an SPM."""
    specimen_id: str | None
    """SPM-2 (placer or filler assigned identifier)."""
    filler: str
    """OBR-3, else OBR-2: the specimen key when there is no SPM-2."""
    specimen_type: str | None
    specimen_collected_at: str
    """SPM-17 DTM as sent."""
    collected_at: str
    """OBR-7 DTM as sent."""
    result_at: str
    """OBR-22 DTM as sent."""
    observations: list[ObservationDraft] = field(default_factory=list)
