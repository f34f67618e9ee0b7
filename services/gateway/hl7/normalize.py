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

Issue texts go to logs and topics: they never contain the patient's name, INS, address, phone or birth
date. Result values and codes, lab ids and INS key digits are not identifying and may appear.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

from services.core.domain.geography import age_class, department_from_postal_code
from services.core.domain.model import (
    PARIS,
    LabResult,
    Outcome,
    PseudonymBasis,
    ResultStatus,
    Sex,
    TestKind,
    Transport,
    make_result_id,
)
from services.core.reference import load_reference
from services.gateway.hl7.content import clean, clean_message, decode_payload, screen
from services.gateway.hl7.parse import Encoding, ParseError, Segment, parse_message
from services.gateway.identity import IdentityProtector
from services.gateway.ins import ins_error, normalize_matricule

SUPPORTED_VERSIONS = frozenset({"2.3.1", "2.5", "2.5.1"})
INS_OIDS = frozenset(
    {"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"}
)
INS_TYPE_CODES = frozenset({"INS", "NH"})

LOINC_KINDS: dict[str, TestKind] = {
    **dict.fromkeys(("94500-6", "94309-2", "94531-1", "94316-7", "94660-8"), TestKind.RT_PCR),
    **dict.fromkeys(("94558-4", "96119-3", "97097-0"), TestKind.ANTIGEN),
    **dict.fromkeys(("94762-2", "94505-5", "94547-7"), TestKind.SEROLOGY),
}
# Ask-at-order-entry questions sent as OBX (age, symptoms, onset, hospitalization, pregnancy…)
ASK_AT_ORDER_ENTRY_LOINC = frozenset(
    {
        "35659-2",
        "95419-8",
        "65222-2",
        "11368-8",
        "77974-4",
        "95420-6",
        "95417-2",
        "95418-0",
        "95421-4",
        "82810-3",
    }
)

SNOMED_OUTCOMES: dict[str, Outcome] = {
    "260373001": Outcome.POSITIVE,
    "10828004": Outcome.POSITIVE,
    "260415000": Outcome.NEGATIVE,
    "260385009": Outcome.NEGATIVE,
    "419984006": Outcome.INCONCLUSIVE,
    "42425007": Outcome.INCONCLUSIVE,
    "82334004": Outcome.INCONCLUSIVE,
    "455371000124106": Outcome.INVALID,
    "125154007": Outcome.INVALID,
}

_TEXTS: dict[Outcome, tuple[str, ...]] = {
    Outcome.POSITIVE: (
        "POSITIF",
        "POSITIVE",
        "POS",
        "DETECTE",
        "DETECTEE",
        "DETECTED",
        "DETECTABLE",
        "PRESENCE",
        "REACTIF",
        "REACTIVE",
    ),
    Outcome.NEGATIVE: (
        "NEGATIF",
        "NEGATIVE",
        "NEG",
        "NON DETECTE",
        "NON DETECTEE",
        "NOT DETECTED",
        "NON DETECTABLE",
        "INDETECTABLE",
        "UNDETECTED",
        "ABSENCE",
        "NON REACTIF",
        "NON REACTIVE",
    ),
    Outcome.INCONCLUSIVE: (
        "INDETERMINE",
        "INDETERMINEE",
        "INDETERMINATE",
        "DOUTEUX",
        "DOUTEUSE",
        "EQUIVOCAL",
        "EQUIVOQUE",
        "INCONCLUSIVE",
        "INCONCLUANT",
        "NON CONCLUANT",
        "LIMITE",
    ),
    Outcome.INVALID: (
        "INVALIDE",
        "INVALID",
        "NON INTERPRETABLE",
        "ININTERPRETABLE",
        "NON VALIDE",
        "NON CONFORME",
        "ECHANTILLON NON CONFORME",
        "PRELEVEMENT NON CONFORME",
    ),
}
TEXT_OUTCOMES: dict[str, Outcome] = {text: outcome for outcome, texts in _TEXTS.items() for text in texts}

STATUSES: dict[str, ResultStatus] = {status.value: status for status in ResultStatus}
SEXES: dict[str, Sex] = {
    "F": Sex.FEMALE,
    "M": Sex.MALE,
    "O": Sex.UNKNOWN,
    "U": Sex.UNKNOWN,
    "A": Sex.UNKNOWN,
    "N": Sex.UNKNOWN,
}
_CODED_TYPES = frozenset({"CWE", "CE", "CNE", "CF"})
_FINESS_TYPE = "FINESS"
_FRANCE = frozenset({"", "FRA", "FR", "FRANCE", "250"})

CLOCK_SKEW = timedelta(minutes=5)
# no lab datum is older or later; within these, any offset or time-zone conversion stays in `datetime`'s
# range (year 1 with +23:59 used to raise OverflowError and drop the connection instead of answering)
MIN_YEAR, MAX_YEAR = 1800, 9998
MAX_AGE_YEARS = 120

# HL7 table 0357
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_VERSION_ID = "203"
UNKNOWN_KEY_IDENTIFIER = "204"
APPLICATION_INTERNAL_ERROR = "207"


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """What the gateway and the ACK need from MSH."""

    field_separator: str
    encoding_characters: str
    sending_application: str
    sending_facility: str
    """MSH-4.1 namespace id (MSH-4.2 when 4.1 is empty): the lab id."""
    sending_facility_universal_id: str
    sending_facility_universal_id_type: str
    lab_finess: str | None
    """MSH-4.2 when MSH-4.3 says `FINESS`."""
    receiving_application: str
    receiving_facility: str
    message_type: str
    trigger_event: str
    control_id: str
    processing_id: str
    version: str
    accept_ack_type: str
    application_ack_type: str
    charset: str

    @property
    def encoding(self) -> Encoding:
        chars = self.encoding_characters
        return Encoding(self.field_separator, chars[0], chars[1], chars[2], chars[3])


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem, reported as one ERR segment of the ACK."""

    segment: str
    sequence: int
    """Occurrence of the segment in the message, 1-based (0 when not tied to a segment)."""
    field: int | None
    component: int | None
    code: str
    """HL7 table 0357."""
    severity: str
    """HL7 table 0516 (v2.5): E error, W warning. Rejections are E too, with `reject` set."""
    text: str
    reject: bool = False
    repetition: int | None = None
    """Field repetition, 1-based, where known (ERR-2.4)."""

    @property
    def is_error(self) -> bool:
        return self.severity != "W"

    @classmethod
    def about_message(cls, code: str, text: str, *, reject: bool = False) -> Issue:
        """An error about the message as a whole (located at its MSH segment)."""
        return cls("MSH", 1, None, None, code, "E", text, reject)


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


@functools.lru_cache(maxsize=64)
def _fixed_offset(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))


@functools.lru_cache(maxsize=4096)  # a message repeats its times (OBR-7 / SPM-17, OBR-22 / OBX-14)
def parse_dtm(value: str) -> datetime:
    """HL7 DTM `YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`, aware; Europe/Paris when no offset is given."""
    tz: tzinfo = PARIS
    if len(value) > 5 and value[-5] in "+-":
        offset = value[-4:]
        if not (offset.isascii() and offset.isdigit()):
            raise ValueError("bad time zone offset")
        minutes = int(offset[:2]) * 60 + int(offset[2:])
        if minutes >= 24 * 60:
            raise ValueError("bad time zone offset")
        tz = _fixed_offset(-minutes if value[-5] == "-" else minutes)
        value = value[:-5]
    micro = 0
    dot = value.find(".")
    if dot >= 0:
        fraction = value[dot + 1 :]
        value = value[:dot]
        if len(value) != 14 or not 1 <= len(fraction) <= 4 or not (fraction.isascii() and fraction.isdigit()):
            raise ValueError("bad fraction of second")
        micro = int(fraction.ljust(6, "0"))
    n = len(value)
    if n not in (4, 6, 8, 10, 12, 14) or not (value.isascii() and value.isdigit()):
        raise ValueError("bad date/time")
    if not MIN_YEAR <= int(value[:4]) <= MAX_YEAR:
        raise ValueError("date/time out of range")
    return datetime(
        int(value[:4]),
        int(value[4:6]) if n >= 6 else 1,
        int(value[6:8]) if n >= 8 else 1,
        int(value[8:10]) if n >= 10 else 0,
        int(value[10:12]) if n >= 12 else 0,
        int(value[12:14]) if n >= 14 else 0,
        micro,
        tzinfo=tz,
    )


def _plain_text(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(ch if ch.isalnum() else " " for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(kept.upper().split())


@functools.lru_cache(maxsize=4096)
def outcome_from_text(text: str) -> Outcome | None:
    """Outcome of a local result text, case-, accent- and punctuation-insensitive."""
    outcome = TEXT_OUTCOMES.get(text)
    return outcome if outcome is not None else TEXT_OUTCOMES.get(_plain_text(text))


def outcome_from_value(value: str) -> Outcome | None:
    """Outcome of a SNOMED CT code or a local text."""
    outcome = SNOMED_OUTCOMES.get(value)
    return outcome if outcome is not None else outcome_from_text(value)


def _header(msh: Segment, charset: str) -> MessageHeader:
    namespace = msh.component(4, 1)
    universal_id = msh.component(4, 2)
    universal_id_type = msh.component(4, 3)
    finess = universal_id if universal_id and universal_id_type.upper() == _FINESS_TYPE else None
    return MessageHeader(
        field_separator=msh.raw(1),
        encoding_characters=msh.raw(2)[:4],
        sending_application=msh.component(3, 1),
        sending_facility=namespace or universal_id,
        sending_facility_universal_id=universal_id,
        sending_facility_universal_id_type=universal_id_type,
        lab_finess=finess,
        receiving_application=msh.component(5, 1),
        receiving_facility=msh.component(6, 1),
        message_type=msh.component(9, 1),
        trigger_event=msh.component(9, 2),
        control_id=msh.field(10),
        processing_id=msh.component(11, 1),
        version=msh.component(12, 1),
        accept_ack_type=msh.field(15),
        application_ack_type=msh.field(16),
        charset=charset,
    )


@dataclass(slots=True)
class _Patient:
    sequence: int
    pseudonym: str | None
    basis: PseudonymBasis
    sex: Sex
    birth_date: date | None
    birth_year: int | None
    postal_code: str | None
    department: str | None
    region: str | None
    identity: dict[str, Any]
    sealed: str | None = None


@dataclass(slots=True)
class _Group:
    patient: _Patient
    obr: Segment
    obr_sequence: int
    observations: list[tuple[Segment, int]] = field(default_factory=list)
    specimen: tuple[Segment, int] | None = None


class _Normalizer:
    """State of one message being normalized."""

    def __init__(
        self,
        header: MessageHeader,
        received_at: datetime,
        transport: Transport,
        protector: IdentityProtector,
        now: datetime,
        department_region: Mapping[str, str],
    ) -> None:
        self.header = header
        self.received_at = received_at
        self.transport = transport
        self.protector = protector
        self.now = now
        self.today = now.astimezone(PARIS).date()
        self.department_region = department_region
        self.issues: list[Issue] = []
        self.results: list[LabResult] = []
        self.non_results = 0
        self.result_observations = 0

    def error(
        self, segment: str, sequence: int, fld: int | None, component: int | None, code: str, text: str
    ) -> None:
        self.issues.append(Issue(segment, sequence, fld, component, code, "E", text))

    def warning(
        self, segment: str, sequence: int, fld: int | None, component: int | None, code: str, text: str
    ) -> None:
        self.issues.append(Issue(segment, sequence, fld, component, code, "W", text))

    def time(self, segment: Segment, sequence: int, fld: int) -> datetime | None:
        """The DTM leaf of a TS / DR field (n.1.1), or None when empty; a bad one is reported."""
        value = segment.subcomponent(fld, 1, 1)
        if not value:
            return None
        try:
            return parse_dtm(value)
        except ValueError:
            self.error(
                segment.name, sequence, fld, 1, DATA_TYPE_ERROR, f"{segment.name}-{fld}: invalid date/time"
            )
            return None

    def run(self, segments: list[Segment]) -> None:
        counts: dict[str, int] = {}
        patient: _Patient | None = None
        group: _Group | None = None
        for segment in segments:
            name = segment.name
            sequence = counts[name] = counts.get(name, 0) + 1
            if name == "OBX":
                if group is None:
                    self.error(
                        name, sequence, None, None, SEGMENT_SEQUENCE_ERROR, "OBX without a preceding OBR"
                    )
                else:
                    group.observations.append((segment, sequence))
            elif name == "OBR":
                if group is not None:
                    self.flush(group)
                if patient is None:
                    group = None
                    self.error(
                        name, sequence, None, None, SEGMENT_SEQUENCE_ERROR, "OBR without a preceding PID"
                    )
                else:
                    group = _Group(patient, segment, sequence)
            elif name == "SPM":
                if group is not None and group.specimen is None:
                    group.specimen = (segment, sequence)
            elif name == "PID":
                if group is not None:
                    self.flush(group)
                    group = None
                patient = self.patient(segment, sequence)
            elif name == "ORC" and group is not None:
                self.flush(group)
                group = None
        if group is not None:
            self.flush(group)
        if not self.result_observations:
            self.error("OBX", 1, None, None, REQUIRED_FIELD_MISSING, "message has no result (OBX)")

    def patient(self, pid: Segment, seq: int) -> _Patient:
        ins: str | None = None
        lab_patient_id: str | None = None
        for rep in range(len(pid.repetitions(3))):
            if pid.subcomponent(3, 4, 2, rep) in INS_OIDS or pid.component(3, 5, rep) in INS_TYPE_CODES:
                if ins is None:
                    ins = normalize_matricule(pid.component(3, 1, rep))
            elif lab_patient_id is None:
                lab_patient_id = pid.component(3, 1, rep) or None
        if ins is not None:
            problem = ins_error(ins)
            if problem is not None:
                self.error("PID", seq, 3, 1, DATA_TYPE_ERROR, problem)
                ins = None

        name_rep = 0
        names = pid.repetitions(5)
        for rep in range(len(names)):
            if pid.component(5, 7, rep) == "L":
                name_rep = rep
                break
        birth_name = pid.component(5, 1, name_rep)
        given_names = " ".join(filter(None, (pid.component(5, 2, name_rep), pid.component(5, 3, name_rep))))

        birth_date: date | None = None
        birth_year: int | None = None
        raw_birth = pid.field(7)
        if raw_birth:
            try:
                born = parse_dtm(raw_birth[:8] if len(raw_birth) >= 8 else raw_birth)
            except ValueError:
                self.error("PID", seq, 7, None, DATA_TYPE_ERROR, "PID-7: invalid birth date")
            else:
                if born.date() > self.today:
                    self.error("PID", seq, 7, None, DATA_TYPE_ERROR, "PID-7: birth date is in the future")
                elif self.today.year - born.year > MAX_AGE_YEARS:
                    self.error(
                        "PID",
                        seq,
                        7,
                        None,
                        DATA_TYPE_ERROR,
                        f"PID-7: birth date is more than {MAX_AGE_YEARS} years ago",
                    )
                else:
                    birth_year = born.year
                    if len(raw_birth) >= 8:
                        birth_date = born.date()

        sex_code = pid.field(8).upper()
        sex = SEXES.get(sex_code)
        if sex is None:
            sex = Sex.UNKNOWN
            if sex_code:
                self.error(
                    "PID",
                    seq,
                    8,
                    None,
                    TABLE_VALUE_NOT_FOUND,
                    f"PID-8: unknown administrative sex code '{sex_code[:5]}' (expected F, M, O, U, A or N)",
                )

        pseudonym: str | None = None
        if ins is not None:
            pseudonym = self.protector.pseudonym_from_ins(ins)
            basis = PseudonymBasis.INS
        else:
            basis = PseudonymBasis.TRAITS
            if not birth_name:
                self.error(
                    "PID", seq, 5, 1, REQUIRED_FIELD_MISSING, "PID-5: birth name required when no INS is sent"
                )
            if not given_names:
                self.error(
                    "PID", seq, 5, 2, REQUIRED_FIELD_MISSING, "PID-5: given name required when no INS is sent"
                )
            if birth_date is None and not raw_birth:
                self.error(
                    "PID",
                    seq,
                    7,
                    None,
                    REQUIRED_FIELD_MISSING,
                    "PID-7: birth date required when no INS is sent",
                )
            if birth_name and given_names and birth_date is not None:
                pseudonym = self.protector.pseudonym_from_traits(
                    birth_name, given_names, birth_date, sex.value
                )

        postal_code = department = None
        address: dict[str, str] | None = None
        birth_place = pid.field(23) or None
        for rep in range(len(pid.repetitions(11))):
            if pid.component(11, 7, rep) == "BDL":
                birth_place = birth_place or pid.component(11, 9, rep) or pid.component(11, 3, rep) or None
            elif address is None:
                country = pid.component(11, 6, rep)
                postal_code = pid.component(11, 5, rep).replace(" ", "") or None
                if postal_code and country.upper() in _FRANCE:
                    department = department_from_postal_code(postal_code)
                address = {
                    "street": pid.component(11, 1, rep),
                    "other": pid.component(11, 2, rep),
                    "city": pid.component(11, 3, rep),
                    "postal_code": postal_code or "",
                    "country": country,
                }

        phone = email = None
        for rep in range(len(pid.repetitions(13))):
            if pid.component(13, 2, rep) == "NET" or pid.component(13, 3, rep).upper() == "INTERNET":
                email = email or pid.component(13, 4, rep) or None
            elif phone is None:
                local = pid.component(13, 7, rep)
                phone = (
                    pid.component(13, 1, rep)
                    or pid.component(13, 12, rep)
                    or (
                        "".join((pid.component(13, 5, rep), pid.component(13, 6, rep), local))
                        if local
                        else None
                    )
                )

        identity: dict[str, Any] = {
            "ins": ins,
            "lab_patient_id": lab_patient_id,
            "birth_name": birth_name,
            "given_names": given_names,
            "birth_date": birth_date.isoformat() if birth_date else None,
            "sex": sex.value,
            "birth_place": birth_place,
            "address": address,
            "phone": phone,
            "email": email,
        }
        region = self.department_region.get(department) if department else None
        return _Patient(
            seq, pseudonym, basis, sex, birth_date, birth_year, postal_code, department, region, identity
        )

    def flush(self, group: _Group) -> None:
        obr, obr_seq = group.obr, group.obr_sequence
        filler = obr.component(3, 1) or obr.component(2, 1)
        specimen_id = specimen_type = None
        collected_at: datetime | None = None
        where = "OBR-7"
        if group.specimen is not None:
            spm, spm_seq = group.specimen
            specimen_id = spm.subcomponent(2, 1, 1) or spm.subcomponent(2, 2, 1) or None
            specimen_type = spm.component(4, 1) or None
            collected_at = self.time(spm, spm_seq, 17)
            if collected_at is not None:
                where = "SPM-17"
        else:
            specimen_type = obr.subcomponent(15, 1, 1) or None
        if collected_at is None:
            collected_at = self.time(obr, obr_seq, 7)
        result_at = self.time(obr, obr_seq, 22)
        location = (
            ("SPM", group.specimen[1], 17) if where == "SPM-17" and group.specimen else ("OBR", obr_seq, 7)
        )

        valid_group = True
        if collected_at is None:
            valid_group = False
            if not obr.field(7) and not (group.specimen and group.specimen[0].field(17)):
                self.error(
                    "OBR", obr_seq, 7, None, REQUIRED_FIELD_MISSING, "OBR-7: specimen collection time missing"
                )
        else:
            if collected_at > self.now + CLOCK_SKEW:
                valid_group = False
                self.error(
                    *location, None, DATA_TYPE_ERROR, f"{where}: specimen collection time is in the future"
                )
            if result_at is not None and collected_at > result_at + CLOCK_SKEW:
                valid_group = False
                self.error(
                    *location,
                    None,
                    DATA_TYPE_ERROR,
                    f"{where}: specimen collection time is after the result time (OBR-22)",
                )
        if result_at is not None and result_at > self.now + CLOCK_SKEW:
            valid_group = False
            self.error("OBR", obr_seq, 22, None, DATA_TYPE_ERROR, "OBR-22: result time is in the future")
        key = specimen_id or filler
        if not key:
            valid_group = False
            self.error(
                "OBR",
                obr_seq,
                3,
                None,
                REQUIRED_FIELD_MISSING,
                "OBR-3: filler order number missing (and no SPM-2)",
            )

        patient = group.patient
        patient_age_class: str | None = None
        for obx, obx_seq in group.observations:
            result = self.observation(obx, obx_seq)
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
                LabResult(
                    result_id=make_result_id(header.sending_facility, key, loinc),
                    sending_application=header.sending_application,
                    sending_facility=header.sending_facility,
                    lab_finess=header.lab_finess,
                    performing_lab=performing_lab,
                    message_control_id=header.control_id,
                    transport=self.transport,
                    received_at=self.received_at,
                    patient_pseudonym=patient.pseudonym,
                    pseudonym_basis=patient.basis,
                    sex=patient.sex,
                    birth_year=patient.birth_year,
                    age_class=patient_age_class,
                    postal_code=patient.postal_code,
                    department=patient.department,
                    region=patient.region,
                    sealed_identity=patient.sealed,
                    specimen_id=specimen_id or filler,
                    specimen_type=specimen_type,
                    collected_at=collected_at,
                    loinc=loinc,
                    test_kind=kind,
                    outcome=outcome,
                    status=status,
                    observed_at=observed_at,
                    result_at=result_at,
                )
            )

    def observation(
        self, obx: Segment, seq: int
    ) -> tuple[str, TestKind, Outcome, ResultStatus, datetime | None, str | None] | None:
        """The validated content of one result OBX; None for a question or an invalid OBX (reported)."""
        loinc = obx.component(3, 1)
        if loinc not in LOINC_KINDS and obx.component(3, 3) != "LN" and obx.component(3, 6) == "LN":
            loinc = obx.component(3, 4)
        if obx.field(29) == "QST" or loinc in ASK_AT_ORDER_ENTRY_LOINC:
            self.non_results += 1
            return None
        self.result_observations += 1
        valid = True
        kind = LOINC_KINDS.get(loinc)
        if kind is None:
            valid = False
            if loinc:
                self.error("OBX", seq, 3, 1, TABLE_VALUE_NOT_FOUND, f"OBX-3: unknown LOINC code {loinc[:20]}")
            else:
                self.error(
                    "OBX", seq, 3, 1, REQUIRED_FIELD_MISSING, "OBX-3: observation identifier (LOINC) missing"
                )

        status_code = obx.field(11)
        status = STATUSES.get(status_code)
        if status is None:
            valid = False
            if status_code:
                self.error(
                    "OBX",
                    seq,
                    11,
                    None,
                    TABLE_VALUE_NOT_FOUND,
                    f"OBX-11: unsupported result status '{status_code[:5]}' (expected F, C, P, X, D or W)",
                )
            else:
                self.error("OBX", seq, 11, None, REQUIRED_FIELD_MISSING, "OBX-11: result status missing")

        outcome = self.outcome(obx, seq, status)
        observed_at = self.time(obx, seq, 14)
        if outcome is None or not valid:
            return None
        assert kind is not None and status is not None  # valid implies both
        performing_lab = obx.component(23, 10) or obx.component(23, 1) or obx.component(15, 1) or None
        return loinc, kind, outcome, status, observed_at, performing_lab

    def outcome(self, obx: Segment, seq: int, status: ResultStatus | None) -> Outcome | None:
        first = obx.component(5, 1)
        if first:
            outcome = outcome_from_value(first)
            if outcome is not None:
                return outcome
        coded = obx.field(2) in _CODED_TYPES
        if coded:
            for component in (2, 4, 5):
                value = obx.component(5, component)
                if value:
                    outcome = outcome_from_value(value)
                    if outcome is not None:
                        return outcome
        if not obx.raw(5):
            if status is not None and status.retracts:
                # a cancelled/deleted result carries no value; its outcome is never counted
                return Outcome.INVALID
            self.error("OBX", seq, 5, None, REQUIRED_FIELD_MISSING, "OBX-5: result value missing")
            return None
        shown = " ".join(filter(None, (first, obx.component(5, 2) if coded else "")))[:60]
        self.error(
            "OBX", seq, 5, None, TABLE_VALUE_NOT_FOUND, f"OBX-5: result value '{shown}' cannot be interpreted"
        )
        return None


def _reject(header: MessageHeader) -> Issue | None:
    if header.message_type != "ORU":
        shown = f"{header.message_type}^{header.trigger_event}"[:20]
        return Issue(
            "MSH",
            1,
            9,
            1,
            UNSUPPORTED_MESSAGE_TYPE,
            "E",
            f"MSH-9: unsupported message type '{shown}' (only ORU^R01)",
            True,
        )
    if header.trigger_event != "R01":
        return Issue(
            "MSH",
            1,
            9,
            2,
            UNSUPPORTED_EVENT_CODE,
            "E",
            f"MSH-9: unsupported trigger event '{header.trigger_event[:10]}' (only ORU^R01)",
            True,
        )
    if header.version not in SUPPORTED_VERSIONS:
        return Issue(
            "MSH",
            1,
            12,
            None,
            UNSUPPORTED_VERSION_ID,
            "E",
            f"MSH-12: unsupported version '{header.version[:10]}' (2.3.1, 2.5 or 2.5.1)",
            True,
        )
    return None


def normalize_oru(
    raw: bytes,
    *,
    received_at: datetime,
    transport: Transport,
    protector: IdentityProtector,
    now: datetime | None = None,
    authenticated_lab: str | None = None,
    department_region: Mapping[str, str] | None = None,
) -> Normalized:
    """Parse, validate and normalize one ORU^R01 message (see the module docstring for the policy).

    `department_region` comes from the configured reference data (LABFLOW_REFERENCE_DIR); without it,
    the default reference directory's."""
    decoded = decode_payload(raw)
    try:
        message = parse_message(decoded.text)
    except ParseError as exc:
        code = DATA_TYPE_ERROR if exc.field == 2 else SEGMENT_SEQUENCE_ERROR
        # a readable MSH still gets its MSH-10 echoed, whatever follows it
        return Normalized(
            normalize_header(clean(decoded.text)) if exc.segment != "MSH" else None,
            issues=[
                Issue(exc.segment or "", 1 if exc.segment else 0, exc.field, None, code, "E", exc.text, True)
            ],
        )
    findings = screen(message, decoded)
    msh = clean_message(message).msh if findings else message.msh
    header = _header(msh, msh.field(18))
    rejection = _reject(header)
    if (
        rejection is None
        and authenticated_lab is not None
        and authenticated_lab not in (header.sending_facility, header.lab_finess)
    ):
        rejection = Issue(
            "MSH",
            1,
            4,
            1,
            UNKNOWN_KEY_IDENTIFIER,
            "E",
            f"MSH-4: sending facility '{header.sending_facility[:40]}' is not the authenticated lab "
            f"'{authenticated_lab[:40]}'",
            True,
        )
    if rejection is not None:
        return Normalized(header, issues=[rejection])
    if findings:
        # what the store cannot carry (services.gateway.hl7.content): nothing else is worth reading
        issues = [
            Issue(
                f.segment, f.sequence, f.field, f.component, DATA_TYPE_ERROR, "E", f.text, False, f.repetition
            )
            for f in findings
        ]
        return Normalized(header, issues=issues)

    normalizer = _Normalizer(
        header, received_at, transport, protector, now or datetime.now(UTC),
        department_region if department_region is not None else load_reference().department_region,
    )
    if not header.control_id:
        normalizer.error("MSH", 1, 10, None, REQUIRED_FIELD_MISSING, "MSH-10: message control id missing")
    if not header.sending_facility:
        normalizer.error("MSH", 1, 4, None, REQUIRED_FIELD_MISSING, "MSH-4: sending facility missing")
    normalizer.run(message.segments[1:])
    return Normalized(header, normalizer.results, normalizer.non_results, normalizer.issues)


def normalize_header(raw: bytes | str) -> MessageHeader | None:
    """The MSH of a message, from its first bytes alone (e.g. an oversized frame); None if not HL7."""
    text = raw.decode("latin-1") if isinstance(raw, bytes | bytearray) else raw
    text = text.lstrip("\ufeff \t\r\n")
    end = min((i for i in (text.find("\r"), text.find("\n")) if i >= 0), default=len(text))
    try:
        message = parse_message(text[:end])
    except ParseError:
        return None
    return _header(message.msh, message.charset)
