"""ORU^R01 → canonical `LabResult`s, with every problem as a located `Issue` (SPEC §3, §4, §10).

Acknowledgement policy: a message is accepted (AA) or refused as a whole. Any error-severity issue
makes it AE; the results built from its valid parts are still listed in `Normalized.results` for
diagnostics, but the gateway must not publish any of them: the lab fixes and re-sends the message,
and `result_id` makes the re-send idempotent. Rejections (AR) are for what is not ours to read: not
HL7, not ORU^R01, unsupported version, or a sending lab other than the authenticated one. Content the
store cannot carry (undecodable bytes, control characters, over-long values: see `content`) is AE
with an ERR 102 at each place, and nothing else of the message is read.

Structure: PID starts a patient, ORC/OBR an order group; OBX and SPM belong to the current OBR group
whatever their order (2.5.1 puts SPM after the OBXs: the SPM applies to the whole group, so a group
is collected first and turned into results when the next ORC/OBR/PID or the end comes). PV1, NTE and
Z-segments are ignored here (they stay in the raw message).

Module layout (issue #13): this module holds the message walk (segments → patient and order drafts,
`services.gateway.drafts`) and the order checks that build `LabResult`s, which FHIR and CSV content
goes through too (`normalize_drafts`, fed by `services.gateway.result_drafts`): one set of checks for
every format, each issue at its HL7 position. The header and its rejections are in `header`, PID in
`patient`, OBX in `observation`, DTM in `datatypes`, the LOINC/SNOMED tables in
`services.core.domain.terminology`, and every issue's code, severity and hint in
`services.gateway.issue_catalogue`. An HL7 timestamp without an offset is read in the sending lab's
time zone (`lab_time_zone`, SPEC §8.1); the collection day is then the residence department's
(`LabResult.collection_day`). The department → region table is injected (`department_region`); only
a caller that passes none gets the default reference directory's.

Results are built without pydantic's validation (`_checked_result`): what reaches a `LabResult` was
checked here or bounded by the content screen, and validating it again cost about half of building a
result; tests/unit/test_hl7_normalize.py re-validates generated results to keep the two equal.

Issue texts go to logs and topics: they never contain the patient's name, INS, address, phone or birth
date. Result values and codes, lab ids and INS key digits are not identifying and may appear.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from services.core.domain.geography import PARIS, age_class
from services.core.domain.model import SCHEMA_VERSION, LabMode, LabResult, Transport, make_result_id
from services.core.domain.terminology import ASK_AT_ORDER_ENTRY_LOINC
from services.core.reference import load_reference
from services.gateway import issue_catalogue as catalogue
from services.gateway.drafts import ObservationDraft, OrderDraft, PatientDraft
from services.gateway.hl7.content import clean, clean_message, decode_payload, screen
from services.gateway.hl7.datatypes import parse_dtm as parse_dtm
from services.gateway.hl7.datatypes import read_dtm
from services.gateway.hl7.header import MessageHeader as MessageHeader
from services.gateway.hl7.header import normalize_header as normalize_header
from services.gateway.hl7.header import read_header, rejection
from services.gateway.hl7.observation import Observation, check_observation, observation_draft
from services.gateway.hl7.parse import ParseError, ReadPlan, Segment, parse_message
from services.gateway.hl7.patient import Patient, check_patient, patient_draft
from services.gateway.identity import IdentityProtector

# the types and codes callers of `normalize_oru` handle, re-exported: the entry point's vocabulary
from services.gateway.issues import APPLICATION_INTERNAL_ERROR as APPLICATION_INTERNAL_ERROR
from services.gateway.issues import DATA_TYPE_ERROR as DATA_TYPE_ERROR
from services.gateway.issues import UNKNOWN_KEY_IDENTIFIER as UNKNOWN_KEY_IDENTIFIER
from services.gateway.issues import Issue as Issue

CLOCK_SKEW = timedelta(minutes=5)

_GIVEN_FIELDS = frozenset(LabResult.model_fields) - {"schema_version", "lab_mode"}
"""The fields a validated `LabResult(...)` of `_Normalizer.order` would mark as set."""


def _checked_result(values: dict[str, Any]) -> LabResult:
    """A `LabResult` of values the checks above and the content screen already proved valid, built
    without pydantic's validation (about half the cost of a result): `values` holds every field, in
    the model's order, of the type validation would give. tests/unit/test_hl7_normalize.py's property
    test re-validates every result of generated messages and finds the same model, JSON and set fields.
    """
    result = LabResult.__new__(LabResult)
    object.__setattr__(result, "__dict__", values)
    object.__setattr__(result, "__pydantic_fields_set__", set(_GIVEN_FIELDS))
    object.__setattr__(result, "__pydantic_extra__", None)
    object.__setattr__(result, "__pydantic_private__", None)
    return result


@dataclass(slots=True)
class Normalized:
    """The outcome of normalizing one message. Results are publishable only when `ack_code` is AA."""

    header: MessageHeader | None
    results: list[LabResult] = field(default_factory=list)
    non_results: int = 0
    issues: list[Issue] = field(default_factory=list)

    @property
    def ack_code(self) -> str:
        if any(issue.reject for issue in self.issues):
            return "AR"
        if any(issue.is_error for issue in self.issues):
            return "AE"
        return "AA"


_OBR_READ = ReadPlan((2, 1), (3, 1), (7, 1), (15, 1), (22, 1))
_SPM_READ = ReadPlan((2, 1), (2, 2), (4, 1), (17, 1))


@dataclass(slots=True)
class _Group:
    patient: Patient
    obr: Segment
    obr_sequence: int
    observations: list[ObservationDraft] = field(default_factory=list)
    specimen: tuple[Segment, int] | None = None

    def draft(self) -> OrderDraft:
        """What the OBR, its SPM and its OBXs say of the order, unchecked."""
        obr = self.obr
        specimen_id = specimen_type = None
        specimen_sequence = None
        specimen_collected_at = ""
        if self.specimen is not None:
            spm, specimen_sequence = self.specimen
            placer, filler, spm_type, specimen_collected_at = spm.read(_SPM_READ)
            specimen_id = placer or filler or None
            specimen_type = spm_type or None
        placer_order, filler_order, collected_at, obr_type, result_at = obr.read(_OBR_READ)
        if self.specimen is None:
            specimen_type = obr_type or None
        return OrderDraft(
            self.obr_sequence,
            specimen_sequence,
            specimen_id,
            filler_order or placer_order,
            specimen_type,
            specimen_collected_at,
            collected_at,
            result_at,
            self.observations,
        )


class _Normalizer:
    """State of one message being normalized: the checks over the drafts, whatever their format."""

    def __init__(
        self,
        header: MessageHeader,
        received_at: datetime,
        transport: Transport,
        protector: IdentityProtector,
        now: datetime | None,
        department_region: Mapping[str, str] | None,
        lab_time_zone: tzinfo,
    ) -> None:
        self.header = header
        self.received_at = received_at
        self.transport = transport
        self.protector = protector
        now = now or datetime.now(UTC)
        self.latest = now + CLOCK_SKEW
        """What is later than this is in the future."""
        self.today = now.astimezone(PARIS).date()
        self.department_region = (
            department_region if department_region is not None else load_reference().department_region
        )
        self.zone = lab_time_zone
        self.issues: list[Issue] = []
        self.results: list[LabResult] = []
        self.non_results = 0
        self.result_observations = 0
        if not header.control_id:
            self.issues.append(
                catalogue.CONTROL_ID_MISSING.at("MSH", 1, 10, None, "MSH-10: message control id missing")
            )
        if not header.sending_facility:
            self.issues.append(
                catalogue.SENDING_FACILITY_MISSING.at("MSH", 1, 4, None, "MSH-4: sending facility missing")
            )

    def normalized(self) -> Normalized:
        if not self.result_observations:
            self.issues.append(catalogue.NO_RESULT.at("OBX", 1, None, None, "message has no result (OBX)"))
        return Normalized(self.header, self.results, self.non_results, self.issues)

    def patient(self, draft: PatientDraft) -> Patient:
        return check_patient(
            draft,
            protector=self.protector,
            today=self.today,
            department_region=self.department_region,
            issues=self.issues,
        )

    def run(self, segments: list[Segment]) -> None:
        """The HL7 walk: segments → patients and order groups, each checked as it ends."""
        obx = obr = spm = pid = 0  # occurrences so far: only these segments' are ever reported
        patient: Patient | None = None
        group: _Group | None = None
        for segment in segments:
            name = segment.name
            if name == "OBX":
                obx += 1
                if group is None:
                    self.issues.append(
                        catalogue.OBX_WITHOUT_OBR.at(name, obx, None, None, "OBX without a preceding OBR")
                    )
                else:
                    group.observations.append(observation_draft(segment, obx))
            elif name == "OBR":
                obr += 1
                if group is not None:
                    self.order(group.patient, group.draft())
                if patient is None:
                    group = None
                    self.issues.append(
                        catalogue.OBR_WITHOUT_PID.at(name, obr, None, None, "OBR without a preceding PID")
                    )
                else:
                    group = _Group(patient, segment, obr)
            elif name == "SPM":
                spm += 1
                if group is not None and group.specimen is None:
                    group.specimen = (segment, spm)
            elif name == "PID":
                pid += 1
                if group is not None:
                    self.order(group.patient, group.draft())
                    group = None
                patient = self.patient(patient_draft(segment, pid))
            elif name == "ORC" and group is not None:
                self.order(group.patient, group.draft())
                group = None
        if group is not None:
            self.order(group.patient, group.draft())

    def order(self, patient: Patient, draft: OrderDraft) -> None:
        """Check one order and build a `LabResult` for each of its valid result observations."""
        obr_seq, spm_seq = draft.sequence, draft.specimen_sequence
        collected_at: datetime | None = None
        where, location = "OBR-7", ("OBR", obr_seq, 7)
        zone, issues = self.zone, self.issues
        if spm_seq is not None:
            collected_at = read_dtm(draft.specimen_collected_at, "SPM", spm_seq, 17, zone, issues)
            if collected_at is not None:
                where, location = "SPM-17", ("SPM", spm_seq, 17)
        if collected_at is None:
            collected_at = read_dtm(draft.collected_at, "OBR", obr_seq, 7, zone, issues)
        result_at = read_dtm(draft.result_at, "OBR", obr_seq, 22, zone, issues)

        valid_group = True
        if collected_at is None:
            valid_group = False
            if not draft.collected_at and not draft.specimen_collected_at:
                self.issues.append(
                    catalogue.COLLECTION_TIME_MISSING.at(
                        "OBR", obr_seq, 7, None, "OBR-7: specimen collection time missing"
                    )
                )
        else:
            if collected_at > self.latest:
                valid_group = False
                self.issues.append(
                    catalogue.COLLECTION_TIME_IN_FUTURE.at(
                        *location, None, f"{where}: specimen collection time is in the future"
                    )
                )
            if result_at is not None and collected_at > result_at + CLOCK_SKEW:
                valid_group = False
                self.issues.append(
                    catalogue.COLLECTED_AFTER_RESULT.at(
                        *location,
                        None,
                        f"{where}: specimen collection time is after the result time (OBR-22)",
                    )
                )
        if result_at is not None and result_at > self.latest:
            valid_group = False
            self.issues.append(
                catalogue.RESULT_TIME_IN_FUTURE.at(
                    "OBR", obr_seq, 22, None, "OBR-22: result time is in the future"
                )
            )
        key = draft.specimen_id or draft.filler
        if not key:
            valid_group = False
            self.issues.append(
                catalogue.SPECIMEN_ID_MISSING.at(
                    "OBR", obr_seq, 3, None, "OBR-3: filler order number missing (and no SPM-2)"
                )
            )

        patient_age_class: str | None = None
        for observation in draft.observations:
            result = self.observation(observation)
            if (
                result is None
                or not valid_group
                or patient.pseudonym is None
                or collected_at is None
                or not key
            ):
                continue
            loinc, kind, outcome, status, observed_at, performing_lab = result
            if patient.sealed is None:
                patient.sealed = self.protector.seal(patient.identity)
            if patient_age_class is None and patient.birth_date is not None:
                patient_age_class = age_class(patient.birth_date, collected_at.astimezone(PARIS).date())
            header = self.header
            self.results.append(
                _checked_result(
                    {
                        "schema_version": SCHEMA_VERSION,
                        "result_id": make_result_id(header.sending_facility, key, loinc),
                        "sending_application": header.sending_application,
                        "sending_facility": header.sending_facility,
                        "lab_finess": header.lab_finess,
                        "performing_lab": performing_lab,
                        "message_control_id": header.control_id,
                        "transport": self.transport,
                        "received_at": self.received_at,
                        "lab_mode": LabMode.PRODUCTION,
                        "patient_pseudonym": patient.pseudonym,
                        "pseudonym_basis": patient.basis,
                        "sex": patient.sex,
                        "birth_year": patient.birth_year,
                        "age_class": patient_age_class,
                        "postal_code": patient.postal_code,
                        "department": patient.department,
                        "region": patient.region,
                        "sealed_identity": patient.sealed,
                        "specimen_id": key,
                        "specimen_type": draft.specimen_type,
                        "collected_at": collected_at,
                        "loinc": loinc,
                        "test_kind": kind,
                        "outcome": outcome,
                        "status": status,
                        "observed_at": observed_at,
                        "result_at": result_at,
                    }
                )
            )

    def observation(self, draft: ObservationDraft) -> Observation | None:
        """The validated content of one result observation; None for a question or an invalid one."""
        if draft.question or draft.loinc in ASK_AT_ORDER_ENTRY_LOINC:  # ask-at-order-entry: not a result
            self.non_results += 1
            return None
        self.result_observations += 1
        return check_observation(draft, self.zone, self.issues)


def normalize_oru(
    raw: bytes,
    *,
    received_at: datetime,
    transport: Transport,
    protector: IdentityProtector,
    now: datetime | None = None,
    authenticated_lab: str | None = None,
    department_region: Mapping[str, str] | None = None,
    lab_time_zone: tzinfo | Callable[[str], tzinfo] = PARIS,
) -> Normalized:
    """Parse, validate and normalize one ORU^R01 message (see the module docstring for the policy).

    `department_region` comes from the configured reference data (LABFLOW_REFERENCE_DIR); without it,
    the default reference directory's. `lab_time_zone` is the sending lab's (SPEC §8.1), or a function
    of the sending facility (MSH-4.1) giving it, such as the lab registry's: timestamps without an
    offset are read in it."""
    decoded = decode_payload(raw)
    try:
        message = parse_message(decoded.text)
    except ParseError as exc:
        kind = catalogue.BAD_DELIMITERS if exc.field == 2 else catalogue.NOT_HL7
        # a readable MSH still gets its MSH-10 echoed, whatever follows it
        return Normalized(
            normalize_header(clean(decoded.text)) if exc.segment != "MSH" else None,
            issues=[kind.at(exc.segment or "", 1 if exc.segment else 0, exc.field, None, exc.text)],
        )
    findings = screen(message, decoded)
    msh = clean_message(message).msh if findings else message.msh
    header = read_header(msh, msh.field(18))
    refusal = rejection(header, authenticated_lab)
    if refusal is not None:
        return Normalized(header, issues=[refusal])
    if findings:
        # what the store cannot carry (services.gateway.hl7.content): nothing else is worth reading
        issues = [
            catalogue.CONTENT_NOT_STORABLE.at(
                f.segment, f.sequence, f.field, f.component, f.text, f.repetition
            )
            for f in findings
        ]
        return Normalized(header, issues=issues)

    normalizer = _Normalizer(
        header, received_at, transport, protector, now, department_region,
        lab_time_zone if isinstance(lab_time_zone, tzinfo) else lab_time_zone(header.sending_facility),
    )
    normalizer.run(message.segments[1:])
    return normalizer.normalized()


def normalize_drafts(
    header: MessageHeader,
    patients: Sequence[tuple[PatientDraft, Sequence[OrderDraft]]],
    *,
    received_at: datetime,
    transport: Transport,
    protector: IdentityProtector,
    now: datetime | None = None,
    department_region: Mapping[str, str] | None = None,
    lab_time_zone: tzinfo = PARIS,
) -> Normalized:
    """Validate and normalize content read from another format (FHIR, CSV): each patient with its
    orders, by the checks HL7 messages go through, in the same order."""
    normalizer = _Normalizer(
        header, received_at, transport, protector, now, department_region, lab_time_zone
    )
    for draft, orders in patients:
        patient = normalizer.patient(draft)
        for order in orders:
            normalizer.order(patient, order)
    return normalizer.normalized()
