"""FHIR and CSV rows are checked as HL7 v2 is: they answer what the ORU^R01 they stand for answers.

Rows are checked straight from their drafts (`result_drafts`); the oracle here writes the same rows as
that ORU^R01 (`build_oru`, how FHIR and CSV reached the normalizer before issue #13) and normalizes it
with `normalize_oru`. Over generated rows (several patients and specimens, valid and invalid values,
content the store cannot carry): the same ACK code, the same issues (code, position, text; for content
findings, measured on the values as sent rather than on ER7 text, the position only), the same
locations in the lab's terms, the same results (result_id, pseudonym, the identity that is sealed).
Line ends are left out: ER7 escaping turned CR into LF, rows keep them as sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypedDict

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from services.core.domain.model import Transport
from services.gateway import issue_catalogue as catalogue
from services.gateway.csv_intake import COLUMNS
from services.gateway.hl7.ack import escape
from services.gateway.hl7.normalize import normalize_oru
from services.gateway.identity import IdentityProtector
from services.gateway.result_drafts import (
    ResultRow,
    RowContent,
    header_for,
    normalize_rows,
    to_dtm,
)

NOW = datetime(2024, 1, 16, tzinfo=UTC)
SNOMED = "SCT"
_SEXES = {"FEMALE": "F", "MALE": "M", "OTHER": "O", "UNKNOWN": "U"}


class _OpenProtector(IdentityProtector):
    """Same pseudonyms; the identity "sealed" as readable JSON, to compare what would be sealed."""

    def seal(self, identity: dict[str, Any]) -> str:
        return json.dumps(identity, sort_keys=True)


PROTECTOR = _OpenProtector(b"0123456789abcdef0123456789abcdef", bytes(PrivateKey.generate().public_key))


def _sex(value: str) -> str:
    upper = value.strip().upper()
    return _SEXES.get(upper, upper)


def _value(result: str) -> tuple[str, str]:
    result = result.strip()
    if result.isdigit():
        return "CWE", f"{result}^^{SNOMED}"
    return "ST", escape(result)


def build_oru(
    lab_id: str,
    finess: str | None,
    control_id: str,
    rows: Sequence[ResultRow],
    *,
    sent_at: datetime,
) -> tuple[bytes, dict[tuple[str, int], int]]:
    """One ORU^R01 (2.5.1): one PID per patient, one OBR + SPM per specimen, one OBX per row."""
    e = escape
    facility = f"{e(lab_id)}^{e(finess)}^FINESS" if finess else e(lab_id)
    segments = [
        f"MSH|^~\\&|LABFLOW-HTTP|{facility}|LABFLOW|LABFLOW|{sent_at.strftime('%Y%m%d%H%M%S%z')}||"
        f"ORU^R01^ORU_R01|{e(control_id)}|P|2.5.1|||NE|NE||UNICODE UTF-8"
    ]
    origins: dict[tuple[str, int], int] = {}
    patients: dict[tuple[str, ...], dict[tuple[str, ...], list[int]]] = {}
    for index, row in enumerate(rows):
        patient = (row.ins, row.patient_id, row.birth_name, row.given_names, row.birth_date, row.sex)
        specimen = (row.specimen_id, row.collected_at, row.result_at, row.specimen_type)
        patients.setdefault(patient, {}).setdefault(specimen, []).append(index)
    counts = {"PID": 0, "OBR": 0, "OBX": 0}
    for orders in patients.values():
        first = rows[next(iter(orders.values()))[0]]
        counts["PID"] += 1
        origins[("PID", counts["PID"])] = next(iter(orders.values()))[0]
        segments.append(_pid(counts["PID"], first, lab_id))
        for members in orders.values():
            row = rows[members[0]]
            counts["OBR"] += 1
            origins[("OBR", counts["OBR"])] = origins[("SPM", counts["OBR"])] = members[0]
            specimen_id, collected = e(row.specimen_id), e(to_dtm(row.collected_at))
            result_at = e(to_dtm(row.result_at)) if row.result_at else ""
            segments.append("ORC|RE")
            # each value is written once, so each of its problems is reported once: the specimen id
            # to SPM-2 only (OBR-2/3 would repeat it), the collection time to SPM-17 only
            obr = ["OBR", str(counts["OBR"]), "", "", "", "", "", ""]
            obr += [""] * 14 + [result_at, "", "", "F"]
            segments.append("|".join(obr))
            for obx_index, member in enumerate(members, start=1):
                counts["OBX"] += 1
                origins[("OBX", counts["OBX"])] = member
                segments.append(_obx(obx_index, rows[member]))
            specimen_type = f"{e(row.specimen_type)}^^{SNOMED}" if row.specimen_type else ""
            spm = ["SPM", "1", f"{specimen_id}&{e(lab_id)}", "", specimen_type]
            spm += [""] * 12 + [collected]
            segments.append("|".join(spm))
    # a lone surrogate (a FHIR "\ud800") is passed on, for the content screen to refuse it where it is
    er7 = ("\r".join(segments) + "\r").encode("utf-8", "surrogatepass")
    return er7, origins


def _pid(index: int, row: ResultRow, lab_id: str) -> str:
    e = escape
    ids = []
    if row.patient_id:
        ids.append(f"{e(row.patient_id)}^^^{e(lab_id)}^PI")
    if row.ins:
        ids.append(f"{e(row.ins)}^^^ASIP-SANTE-INS-NIR&{e(row.ins_oid)}&ISO^INS")
    address = ""
    if row.street or row.city or row.postal_code or row.country:
        address = f"{e(row.street)}^^{e(row.city)}^^{e(row.postal_code)}^{e(row.country)}^H"
    telecom = []
    if row.phone:
        telecom.append(f"{e(row.phone)}^PRN^PH")
    if row.email:
        telecom.append(f"^NET^Internet^{e(row.email)}")
    birth_date = e(to_dtm(row.birth_date)) if row.birth_date else ""
    pid = ["PID", str(index), "", "~".join(ids), "", f"{e(row.birth_name)}^{e(row.given_names)}^^^^^L"]
    pid += ["", birth_date, e(_sex(row.sex)), "", "", address, "", "~".join(telecom)]
    pid += [""] * 9 + [e(row.birth_place)]
    return "|".join(pid)


def _obx(index: int, row: ResultRow) -> str:
    e = escape
    value_type, value = _value(row.result)
    observed = e(to_dtm(row.observed_at)) if row.observed_at else ""
    obx = ["OBX", str(index), value_type, f"{e(row.loinc.strip())}^^LN", "", value, "", "", "", ""]
    obx += ["", e(row.status.strip().upper()), "", "", observed]
    if row.performing_lab:
        obx += [""] * 8 + [e(row.performing_lab)]
    return "|".join(obx)


def _locate(rows: Sequence[ResultRow], origins: dict[tuple[str, int], int], issue: Any) -> str:
    return RowContent(rows, origins=origins).locate(issue)


# -- generated rows ---------------------------------------------------------------------------------

ODD = st.sampled_from(["", " ", "&", "^", "~", "|", "\\", "\\X00\\", "\n", "\t", "é", "ß", "Ä"])
TEXT = st.lists(st.one_of(st.text("abcXYZ019-+: ", max_size=4), ODD), max_size=4).map("".join)
NOT_STORABLE = st.one_of(
    st.sampled_from(["\x00", "S\x1b1", "\x85", "\ud800", "\udc80x"]),
    st.integers(190, 210).map(lambda n: "A" * n),
    st.integers(8, 12).map(lambda n: "7" * n),
)
TIMES = st.sampled_from(
    [
        "2024-01-10T08:15:00+01:00",
        "2024-01-10T08:15:00Z",
        "2024-01-10 08:15",
        "2024-01-10",
        "20240110081500+0100",
        "20240110",
        "2024-01",
        "10/01/2024",
        "2030-01-01",
        "2024-01-09",
        "00010101000000+2359",
        "2024-01-10T08:15:00.123+01:00",
        "",
    ]
)


def column(*good: str) -> st.SearchStrategy[str]:
    """Mostly `good` (its first value valid), sometimes any text."""
    return st.integers(0, 9).flatmap(
        lambda n: TEXT if n == 0 else st.sampled_from(good) if n < 5 else st.just(good[0])
    )


def time_column() -> st.SearchStrategy[str]:
    return st.one_of(st.just("2024-01-10T08:15:00+01:00"), st.just("2024-01-10 09:00"), TIMES, TEXT)


class PatientColumns(TypedDict):
    ins: str
    patient_id: str
    birth_name: str
    given_names: str
    birth_date: str
    sex: str
    street: str
    city: str
    postal_code: str
    country: str
    phone: str
    email: str
    birth_place: str


patients = st.builds(
    PatientColumns,
    ins=column("279035121518989", "279035121518988", "1800575123456", ""),
    patient_id=column("P-1", ""),
    birth_name=column("DUPONT", "N'GUYEN", ""),
    given_names=column("Marie", "Jean Paul", ""),
    birth_date=column("1979-03-21", "1979", "1979-03", "2030-01-01", "1850-01-01", "19790321", ""),
    sex=column("F", "male", "x", ""),
    street=column("1 rue X", ""),
    city=column("Paris", ""),
    postal_code=column("75011", "20000", "2A 004", "", "7 5 0 1 1 0 0 0 0"),
    country=column("FRA", "BEL", ""),
    phone=column("0600000000", ""),
    email=column("a@b.fr", ""),
    birth_place=column("Lyon", ""),
)


class OrderColumns(TypedDict):
    specimen_id: str
    collected_at: str
    result_at: str
    specimen_type: str


orders = st.builds(
    OrderColumns,
    specimen_id=column("S-1", "S-2", ""),
    collected_at=time_column(),
    result_at=st.one_of(st.just("2024-01-11T10:00:00+01:00"), time_column()),
    specimen_type=column("258500001", ""),
)


class ObservationColumns(TypedDict):
    loinc: str
    result: str
    status: str
    observed_at: str
    performing_lab: str


observations = st.builds(
    ObservationColumns,
    loinc=column("94500-6", "94558-4", "12345-6", "94309-2", ""),
    result=column("POSITIF", "negatif", "260373001", "1", "PEUT-ETRE", ""),
    status=column("F", "c", "X", "Z", ""),
    observed_at=st.one_of(st.just(""), time_column()),
    performing_lab=column("LAB-2", ""),
)


@st.composite
def result_rows(draw: st.DrawFn) -> list[ResultRow]:
    people = draw(st.lists(patients, min_size=1, max_size=2))
    specimens = draw(st.lists(orders, min_size=1, max_size=2))
    count = draw(st.integers(1, 4))
    rows = [
        ResultRow(
            **draw(st.sampled_from(people)),
            **draw(st.sampled_from(specimens)),
            **draw(observations),
            where=f"row {n}",
        )
        for n in range(1, count + 1)
    ]
    if draw(st.integers(0, 3)) == 0:  # a value the store cannot carry, somewhere
        index, name = draw(st.integers(0, count - 1)), draw(st.sampled_from(COLUMNS))
        # a column named at run time: mypy checks its str value against every field, `paths` (a Mapping)
        # included; every name in COLUMNS is a str field
        rows[index] = replace(rows[index], **{name: draw(NOT_STORABLE)})  # type: ignore[arg-type]
    return rows


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=result_rows(),
    control_id=st.one_of(st.just("C-1"), TEXT.map(lambda t: t or "C")),
    finess=st.sampled_from([None, "2A0000018"]),
)
def test_rows_are_checked_as_the_equivalent_hl7_message_was(
    rows: list[ResultRow], control_id: str, finess: str | None
) -> None:
    er7, origins = build_oru("LAB-HTTP", finess, control_id, rows, sent_at=NOW)
    before = normalize_oru(
        er7,
        received_at=NOW,
        transport=Transport.HTTP_CSV,
        protector=PROTECTOR,
        now=NOW,
        authenticated_lab="LAB-HTTP",
    )
    after, content = normalize_rows(
        rows,
        header_for("LAB-HTTP", finess, control_id),
        received_at=NOW,
        transport=Transport.HTTP_CSV,
        protector=PROTECTOR,
        now=NOW,
    )

    event(f"{before.ack_code}, {'some' if before.results else 'no'} results")
    content_kind = catalogue.CONTENT_NOT_STORABLE.id
    event("content findings" if any(i.kind == content_kind for i in before.issues) else "checked")
    assert after.ack_code == before.ack_code
    assert after.header == before.header

    def comparable(issue: Any) -> Any:
        return replace(issue, text="") if issue.kind == content_kind else issue

    assert [comparable(i) for i in after.issues] == [comparable(i) for i in before.issues]
    assert [content.locate(i) for i in after.issues] == [_locate(rows, origins, i) for i in before.issues]
    assert after.results == before.results
    assert after.non_results == before.non_results
