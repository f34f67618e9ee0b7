"""Result rows (a CSV row, an Observation of a FHIR Bundle) → the drafts every format is checked as.

FHIR and CSV content is read into flat `ResultRow`s (one result each, values as sent, with where
each comes from); rows naming the same patient are one patient, and rows of one patient with the same
specimen, collection and result times one order, as an ORU^R01 would group them. The drafts then go
through the checks HL7 messages go through (`hl7.normalize.normalize_drafts`), so a result is refused
for the same reasons (INS key, LOINC, value, dates…) whatever its format, with the same texts.

Each value stands at the HL7 position it would have in that ORU^R01 (the patient id, then the INS, in
PID-3; the specimen id in SPM-2, the collection time in SPM-17…): issues name it (`SPM-17: invalid
date/time`), and `RowContent.locate` maps it back to the lab's own terms (`row 3, column ins`, or the
FHIRPath the reader kept). ISO 8601 dates and date-times become DTM (`to_dtm`); anything else is
passed on unchanged and reported by the checks as an invalid date. The content screen measures the
values as sent (`hl7.content.screen_values`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo

from services.core.domain.geography import PARIS
from services.core.domain.model import Transport
from services.core.domain.terminology import INS_NIR_OID
from services.gateway import issue_catalogue as catalogue
from services.gateway.drafts import ObservationDraft, OrderDraft, PatientDraft
from services.gateway.hl7.content import READ_FIELDS, Value, clean, screen_values
from services.gateway.hl7.header import MessageHeader
from services.gateway.hl7.normalize import Normalized, normalize_drafts
from services.gateway.identity import IdentityProtector
from services.gateway.ins import normalize_matricule
from services.gateway.issues import Issue

SENDING_APPLICATION = "LABFLOW-HTTP"
"""MSH-3 of what the HTTP intake receives in FHIR or CSV."""


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One result, flat; "" means not sent. The field names are the CSV columns."""

    specimen_id: str = ""
    collected_at: str = ""
    loinc: str = ""
    result: str = ""
    """A SNOMED CT code (digits) or a result text such as POSITIF."""
    status: str = "F"
    result_at: str = ""
    observed_at: str = ""
    specimen_type: str = ""
    performing_lab: str = ""
    ins: str = ""
    patient_id: str = ""
    birth_name: str = ""
    given_names: str = ""
    birth_date: str = ""
    sex: str = ""
    birth_place: str = ""
    street: str = ""
    city: str = ""
    postal_code: str = ""
    country: str = ""
    phone: str = ""
    email: str = ""
    ins_oid: str = field(default=INS_NIR_OID, metadata={"column": False})
    where: str = field(default="", metadata={"column": False})
    """Where the row comes from (`row 3`, `Bundle.entry[2]`), to locate its problems."""
    paths: Mapping[str, str] = field(default_factory=dict, metadata={"column": False})
    """Per column, a precise location overriding `where` (FHIR element paths)."""


# the HL7 position each column stands at: (segment, field, component) → column
_FIELD_COLUMNS: dict[tuple[str, int | None, int | None], str] = {
    ("PID", 3, None): "ins",
    ("PID", 5, None): "birth_name",
    ("PID", 5, 1): "birth_name",
    ("PID", 5, 2): "given_names",
    ("PID", 7, None): "birth_date",
    ("PID", 8, None): "sex",
    ("PID", 11, None): "postal_code",
    ("PID", 11, 1): "street",
    ("PID", 11, 3): "city",
    ("PID", 11, 5): "postal_code",
    ("PID", 11, 6): "country",
    ("PID", 13, 1): "phone",
    ("PID", 13, 4): "email",
    ("PID", 23, None): "birth_place",
    ("OBR", 3, None): "specimen_id",
    ("OBR", 7, None): "collected_at",
    ("OBR", 22, None): "result_at",
    ("OBX", 3, None): "loinc",
    ("OBX", 5, None): "result",
    ("OBX", 11, None): "status",
    ("OBX", 14, None): "observed_at",
    ("OBX", 23, None): "performing_lab",
    ("SPM", 2, None): "specimen_id",
    ("SPM", 4, None): "specimen_type",
    ("SPM", 17, None): "collected_at",
}
_SEXES = {"FEMALE": "F", "MALE": "M", "OTHER": "O", "UNKNOWN": "U"}
_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2}))?$")


def to_dtm(value: str) -> str:
    """ISO 8601 date or date-time → HL7 DTM (the offset kept; none means the lab's time zone)."""
    value = value.strip()
    partial = _PARTIAL_DATE.match(value)
    if partial:
        return "".join(part for part in partial.groups() if part)
    try:
        if len(value) == 10:
            return date.fromisoformat(value).strftime("%Y%m%d")
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value  # HL7 DTM already, or invalid: the checks decide and say which
    return moment.strftime("%Y%m%d%H%M%S") + moment.strftime("%z")


def header_for(lab_id: str, finess: str | None, control_id: str) -> MessageHeader:
    """The header of content the HTTP intake received from this lab (its MSH, were it HL7)."""
    return MessageHeader(
        field_separator="|",
        encoding_characters="^~\\&",
        sending_application=SENDING_APPLICATION,
        sending_facility=lab_id or finess or "",
        sending_facility_universal_id=finess or "",
        sending_facility_universal_id_type="FINESS" if finess else "",
        lab_finess=finess,
        receiving_application="LABFLOW",
        receiving_facility="LABFLOW",
        message_type="ORU",
        trigger_event="R01",
        control_id=control_id,
        processing_id="P",
        version="2.5.1",
        accept_ack_type="NE",
        application_ack_type="NE",
        charset="UNICODE UTF-8",
    )


@dataclass(slots=True)
class RowContent:
    """Rows as patients with their orders (drafts), and where each HL7 position came from."""

    rows: Sequence[ResultRow]
    patients: list[tuple[PatientDraft, list[OrderDraft]]] = field(default_factory=list)
    origins: dict[tuple[str, int], int] = field(default_factory=dict)
    """(segment, occurrence) → index of the row the segment stands for."""
    values: list[Value] = field(default_factory=list)
    """Every value the lab sent, at its HL7 position, in segment order: what the screen reads."""

    def locate(self, issue: Issue) -> str:
        """The lab's own location of an issue found at an HL7 position of this content."""
        index = self.origins.get((issue.segment, issue.sequence))
        if index is None:
            return f"{issue.segment}-{issue.field}" if issue.field else issue.segment
        row = self.rows[index]
        column = _FIELD_COLUMNS.get((issue.segment, issue.field, issue.component)) or _FIELD_COLUMNS.get(
            (issue.segment, issue.field, None)
        )
        if (issue.segment, issue.field) == ("PID", 3) and issue.repetition:
            # PID-3 repeats: the lab's patient id first, then the INS
            identifiers = [c for c, v in (("patient_id", row.patient_id), ("ins", row.ins)) if v]
            column = identifiers[issue.repetition - 1] if issue.repetition <= len(identifiers) else column
        if column is None:
            return row.where
        return row.paths.get(column) or f"{row.where}, column {column}"

    def value(
        self, segment: str, sequence: int, fld: int, text: str, rep: int = 1, component: int = 1
    ) -> None:
        """A value the lab sent (not "" for not sent), at its HL7 position, for the content screen."""
        if text:
            stored = fld in READ_FIELDS.get(segment, ())
            self.values.append(Value(segment, sequence, fld, rep, component, text, stored))


def _patient(content: RowContent, sequence: int, row: ResultRow) -> PatientDraft:
    add = content.value
    identifiers = [v for v in (row.patient_id, row.ins) if v]
    for rep, identifier in enumerate(identifiers, start=1):
        add("PID", sequence, 3, identifier, rep)
    add("PID", sequence, 5, row.birth_name)
    add("PID", sequence, 5, row.given_names, component=2)
    birth_date = to_dtm(row.birth_date) if row.birth_date else ""
    add("PID", sequence, 7, birth_date)
    upper = row.sex.strip().upper()
    sex = _SEXES.get(upper, upper)
    add("PID", sequence, 8, sex)
    address = None
    postal_code = row.postal_code.replace(" ", "") or None
    if row.street or row.city or row.postal_code or row.country:
        for component, text in ((1, row.street), (3, row.city), (5, row.postal_code), (6, row.country)):
            add("PID", sequence, 11, text, component=component)
        address = {
            "street": row.street,
            "other": "",
            "city": row.city,
            "postal_code": postal_code or "",
            "country": row.country,
        }
    add("PID", sequence, 13, row.phone)
    add("PID", sequence, 13, row.email, 2 if row.phone else 1, 4)
    add("PID", sequence, 23, row.birth_place)
    return PatientDraft(
        sequence,
        normalize_matricule(row.ins) if row.ins else None,
        row.patient_id or None,
        row.birth_name,
        row.given_names,
        birth_date,
        sex,
        postal_code if address else None,
        row.country,
        address,
        row.birth_place or None,
        row.phone or None,
        row.email or None,
    )


def _observation(content: RowContent, sequence: int, row: ResultRow) -> ObservationDraft:
    add = content.value
    loinc, result, status = row.loinc.strip(), row.result.strip(), row.status.strip().upper()
    observed_at = to_dtm(row.observed_at) if row.observed_at else ""
    for fld, text in ((3, loinc), (5, result), (11, status), (14, observed_at), (23, row.performing_lab)):
        add("OBX", sequence, fld, text)
    return ObservationDraft(
        sequence,
        loinc,
        False,
        status,
        result,
        ("", "", "") if result.isdigit() else (),  # a SNOMED CT code is coded (CWE), the rest text
        bool(result),
        observed_at,
        row.performing_lab or None,
    )


def read_rows(rows: Sequence[ResultRow]) -> RowContent:
    """One patient per distinct identity, one order per distinct specimen of a patient, one
    observation per row; positions numbered as in the ORU^R01 they make."""
    content = RowContent(rows)
    patients: dict[tuple[str, ...], dict[tuple[str, ...], list[int]]] = {}
    for index, row in enumerate(rows):
        identity = (row.ins, row.patient_id, row.birth_name, row.given_names, row.birth_date, row.sex)
        specimen = (row.specimen_id, row.collected_at, row.result_at, row.specimen_type)
        patients.setdefault(identity, {}).setdefault(specimen, []).append(index)
    orders_seen = observations_seen = 0
    for number, orders in enumerate(patients.values(), start=1):
        first = next(iter(orders.values()))[0]
        content.origins[("PID", number)] = first
        patient = _patient(content, number, rows[first])
        drafts: list[OrderDraft] = []
        for members in orders.values():
            row = rows[members[0]]
            orders_seen += 1
            seq = orders_seen
            content.origins[("OBR", seq)] = content.origins[("SPM", seq)] = members[0]
            result_at = to_dtm(row.result_at) if row.result_at else ""
            content.value("OBR", seq, 22, result_at)
            observations = []
            for member in members:
                observations_seen += 1
                content.origins[("OBX", observations_seen)] = member
                observations.append(_observation(content, observations_seen, rows[member]))
            collected_at = to_dtm(row.collected_at)
            for fld, text in ((2, row.specimen_id), (4, row.specimen_type), (17, collected_at)):
                content.value("SPM", seq, fld, text)
            # each value is at one place, so each of its problems is reported once: the specimen id
            # at SPM-2 only (not also OBR-3), the collection time at SPM-17 only (not also OBR-7)
            drafts.append(
                OrderDraft(
                    seq,
                    seq,
                    row.specimen_id or None,
                    "",
                    row.specimen_type or None,
                    collected_at,
                    "",
                    result_at,
                    observations,
                )
            )
        content.patients.append((patient, drafts))
    return content


def normalize_rows(
    rows: Sequence[ResultRow],
    header: MessageHeader,
    *,
    received_at: datetime,
    transport: Transport,
    protector: IdentityProtector,
    department_region: Mapping[str, str] | None = None,
    lab_time_zone: tzinfo = PARIS,
    now: datetime | None = None,
) -> tuple[Normalized, RowContent]:
    """Rows read from a FHIR Bundle or a CSV row, checked as HL7 messages are; and where they are."""
    content = read_rows(rows)
    control_id = Value("MSH", 1, 10, 1, 1, header.control_id, stored=True)
    findings = screen_values([control_id, *content.values])
    if findings:
        # what the store cannot carry (services.gateway.hl7.content): nothing else is worth reading
        issues = [
            catalogue.CONTENT_NOT_STORABLE.at(
                f.segment, f.sequence, f.field, f.component, f.text, f.repetition
            )
            for f in findings
        ]
        cleaned = dataclasses.replace(header, control_id=clean(header.control_id))
        return Normalized(cleaned, issues=issues), content
    normalized = normalize_drafts(
        header,
        content.patients,
        received_at=received_at,
        transport=transport,
        protector=protector,
        now=now,
        department_region=department_region,
        lab_time_zone=lab_time_zone,
    )
    return normalized, content
