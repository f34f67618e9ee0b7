"""PID → the patient of the results that follow it: pseudonym, residence, and the sealed identity.

Identity policy (SPEC §8): the pseudonym is the INS's when a valid INS is sent (PID-3 under an INS OID
or of type INS/NH), else the identity traits' (birth name, first given name, birth date, sex), which are
then all required. An invalid INS is reported and not used: falling back to traits would give the same
person a second pseudonym. The identity and contact details are kept only to be sealed (`sealed` is
filled by the normalizer when the first result of the patient is built: a patient without a valid
result costs no sealing). Residence is the first non-birth address (PID-11, type BDL is the birth
place); only a French postal code gives a department.

`patient_draft` reads a PID into the source-neutral `PatientDraft`; `check_patient` is the one set of
checks every format's patients go through (FHIR and CSV fill the draft themselves).

Issue texts never contain the name, INS, address, phone or birth date.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from services.core.domain.geography import department_from_postal_code
from services.core.domain.model import PseudonymBasis, Sex
from services.core.domain.terminology import ADMINISTRATIVE_SEXES, INS_OIDS
from services.gateway import issue_catalogue as catalogue
from services.gateway.drafts import PatientDraft
from services.gateway.hl7.datatypes import parse_dtm
from services.gateway.hl7.parse import ReadPlan, Segment
from services.gateway.identity import IdentityProtector
from services.gateway.ins import ins_error, normalize_matricule
from services.gateway.issues import Issue

INS_TYPE_CODES = frozenset({"INS", "NH"})
MAX_AGE_YEARS = 120
_FRANCE = frozenset({"", "FRA", "FR", "FRANCE", "250"})
_PID_READ = ReadPlan((7, 1), (8, 1), (23, 1))
_NO_NAME = [""] * 7


@dataclass(slots=True)
class Patient:
    sequence: int
    pseudonym: str | None
    """None when the patient cannot be pseudonymized (reported): none of its results is built."""
    basis: PseudonymBasis
    sex: Sex
    birth_date: date | None
    birth_year: int | None
    postal_code: str | None
    department: str | None
    region: str | None
    identity: dict[str, Any]
    sealed: str | None = None


def patient_draft(pid: Segment, seq: int) -> PatientDraft:
    """What one PID says of its patient, unchecked."""
    ins: str | None = None
    lab_patient_id: str | None = None
    for rep, identifier in enumerate(pid.repetitions_components(3, 5)):
        if identifier[4] in INS_TYPE_CODES or pid.subcomponent(3, 4, 2, rep) in INS_OIDS:
            if ins is None:
                ins = normalize_matricule(identifier[0])
        elif lab_patient_id is None:
            lab_patient_id = identifier[0] or None

    names = pid.repetitions_components(5, 7)
    # the legal name (type L), else the first
    name = next((n for n in names if n[6] == "L"), names[0]) if names else _NO_NAME
    birth_name = name[0]
    given_names = " ".join(filter(None, (name[1], name[2])))

    postal_code = None
    country = ""
    address: dict[str, str] | None = None
    birth_date, sex, birth_place_id = pid.read(_PID_READ)
    birth_place = birth_place_id or None
    for place in pid.repetitions_components(11, 9):
        street, other, city, _, postal, nation, kind, _, county = place[:9]
        if kind == "BDL":
            birth_place = birth_place or county or city or None
        elif address is None:
            country = nation
            postal_code = postal.replace(" ", "") or None
            address = {
                "street": street,
                "other": other,
                "city": city,
                "postal_code": postal_code or "",
                "country": country,
            }

    phone = email = None
    for telecom in pid.repetitions_components(13, 12):
        if telecom[1] == "NET" or telecom[2].upper() == "INTERNET":
            email = email or telecom[3] or None
        elif phone is None:
            local = telecom[6]
            phone = telecom[0] or telecom[11] or ("".join((telecom[4], telecom[5], local)) if local else None)
    return PatientDraft(
        seq,
        ins,
        lab_patient_id,
        birth_name,
        given_names,
        birth_date,
        sex.upper(),
        postal_code,
        country,
        address,
        birth_place,
        phone,
        email,
    )


def check_patient(
    draft: PatientDraft,
    *,
    protector: IdentityProtector,
    today: date,
    department_region: Mapping[str, str],
    issues: list[Issue],
) -> Patient:
    """The checked patient of a draft, whatever its format; its problems are appended to `issues`."""
    seq = draft.sequence
    ins = draft.ins
    if ins is not None:
        problem = ins_error(ins)
        if problem is not None:
            issues.append(catalogue.INS_INVALID.at("PID", seq, 3, 1, problem))
            ins = None
    birth_name, given_names = draft.birth_name, draft.given_names

    birth_date: date | None = None
    birth_year: int | None = None
    raw_birth = draft.birth_date
    if raw_birth:
        try:
            born = parse_dtm(raw_birth[:8] if len(raw_birth) >= 8 else raw_birth)
        except ValueError:
            issues.append(catalogue.BIRTH_DATE_INVALID.at("PID", seq, 7, None, "PID-7: invalid birth date"))
        else:
            if born.date() > today:
                issues.append(
                    catalogue.BIRTH_DATE_IN_FUTURE.at(
                        "PID", seq, 7, None, "PID-7: birth date is in the future"
                    )
                )
            elif today.year - born.year > MAX_AGE_YEARS:
                issues.append(
                    catalogue.BIRTH_DATE_TOO_OLD.at(
                        "PID", seq, 7, None, f"PID-7: birth date is more than {MAX_AGE_YEARS} years ago"
                    )
                )
            else:
                birth_year = born.year
                if len(raw_birth) >= 8:
                    birth_date = born.date()

    sex_code = draft.sex
    sex = ADMINISTRATIVE_SEXES.get(sex_code)
    if sex is None:
        sex = Sex.UNKNOWN
        if sex_code:
            issues.append(
                catalogue.SEX_UNKNOWN.at(
                    "PID",
                    seq,
                    8,
                    None,
                    f"PID-8: unknown administrative sex code '{sex_code[:5]}' (expected F, M, O, U, A or N)",
                )
            )

    pseudonym: str | None = None
    if ins is not None:
        pseudonym = protector.pseudonym_from_ins(ins)
        basis = PseudonymBasis.INS
    else:
        basis = PseudonymBasis.TRAITS
        if not birth_name:
            issues.append(
                catalogue.BIRTH_NAME_MISSING.at(
                    "PID", seq, 5, 1, "PID-5: birth name required when no INS is sent"
                )
            )
        if not given_names:
            issues.append(
                catalogue.GIVEN_NAME_MISSING.at(
                    "PID", seq, 5, 2, "PID-5: given name required when no INS is sent"
                )
            )
        if birth_date is None and not raw_birth:
            issues.append(
                catalogue.BIRTH_DATE_MISSING.at(
                    "PID", seq, 7, None, "PID-7: birth date required when no INS is sent"
                )
            )
        if birth_name and given_names and birth_date is not None:
            pseudonym = protector.pseudonym_from_traits(birth_name, given_names, birth_date, sex.value)

    postal_code, department = draft.postal_code, None
    if postal_code and draft.country.upper() in _FRANCE:
        department = department_from_postal_code(postal_code)

    identity: dict[str, Any] = {
        "ins": ins,
        "lab_patient_id": draft.lab_patient_id,
        "birth_name": birth_name,
        "given_names": given_names,
        "birth_date": birth_date.isoformat() if birth_date else None,
        "sex": sex.value,
        "birth_place": draft.birth_place,
        "address": draft.address,
        "phone": draft.phone,
        "email": draft.email,
    }
    region = department_region.get(department) if department else None
    return Patient(
        seq, pseudonym, basis, sex, birth_date, birth_year, postal_code, department, region, identity
    )
