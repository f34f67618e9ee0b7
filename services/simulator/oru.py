"""Realistic HL7 v2 ORU^R01 messages, for the demo, load tests and tests.

`build_oru_r01` writes proper ER7 (escaped names, PID-3 with a local id then the INS, SPM segments
in 2.5 / 2.5.1, specimen in OBR-15 / OBR-3 in 2.3.1); `random_patient` and `random_order` draw a
plausible population (residence weighted by the reference population, valid INS keys, ~20 % without
INS, French names with accents, hyphens and apostrophes) and a plausible test mix.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from services.core.domain.model import PARIS
from services.core.reference import load_reference

INS_ASSIGNER = "ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO"
SNOMED_TEXT = {
    "260373001": "Detected",
    "10828004": "Positive",
    "260415000": "Not detected",
    "260385009": "Negative",
    "419984006": "Inconclusive",
    "455371000124106": "Invalid",
}
LOINC_TEXT = {
    "94500-6": "SARS-CoV-2 RNA Resp Ql NAA+probe",
    "94309-2": "SARS-CoV-2 RNA Specimen Ql NAA+probe",
    "94316-7": "SARS-CoV-2 N gene Resp Ql NAA+probe",
    "94531-1": "SARS-CoV-2 RNA panel Resp NAA+probe",
    "94660-8": "SARS-CoV-2 RNA Ser/Plas Ql NAA+probe",
    "94558-4": "SARS-CoV-2 Ag Resp Ql IA.rapid",
    "96119-3": "SARS-CoV-2 Ag Resp Ql IA",
    "97097-0": "SARS-CoV-2 Ag Upper resp Ql IA.rapid",
    "94762-2": "SARS-CoV-2 Ab Ser/Plas Ql IA",
    "94505-5": "SARS-CoV-2 IgG Ser/Plas IA-aCnc",
    "94547-7": "SARS-CoV-2 IgG+IgM Ser/Plas Ql IA",
    "35659-2": "Age at specimen collection",
}
SPECIMEN_TYPES = {
    "258500001": "Nasopharyngeal swab",
    "871810001": "Mid-turbinate nasal swab",
    "697989009": "Anterior nares swab",
    "258529004": "Throat swab",
    "119342007": "Saliva specimen",
}

_BIRTH_NAMES = (
    "MARTIN",
    "BERNARD",
    "DUBOIS",
    "THOMAS",
    "ROBERT",
    "RICHARD",
    "PETIT",
    "DURAND",
    "LEROY",
    "MOREAU",
    "SIMON",
    "LAURENT",
    "LEFÈVRE",
    "MICHEL",
    "GARCIA",
    "DAVID",
    "BERTRAND",
    "ROUX",
    "VINCENT",
    "FOURNIER",
    "MOREL",
    "GIRARD",
    "ANDRÉ",
    "MERCIER",
    "DUPONT",
    "LAMBERT",
    "BONNET",
    "FRANÇOIS",
    "MARTINEZ",
    "LE GOFF",
    "N'DIAYE",
    "D'ALMEIDA",
    "DE LA FONTAINE",
    "HÉBERT",
    "BENOÎT",
    "GAUTIER-MÜLLER",
    "COEURDEROY",
    "NGUYEN",
    "O'NEILL",
    "SAINT-CLAIR",
)
_GIVEN_NAMES_F = (
    "Marie",
    "Camille",
    "Léa",
    "Manon",
    "Chloé",
    "Emma",
    "Inès",
    "Zoé",
    "Anaïs",
    "Élodie",
    "Marie-Élodie",
    "Hélène",
    "Noémie",
    "Maëlys",
    "Françoise",
    "Sophie",
    "Nathalie",
    "Anne-Sophie",
    "Aurélie",
    "Océane",
)
_GIVEN_NAMES_M = (
    "Jean",
    "Lucas",
    "Hugo",
    "Louis",
    "Gabriel",
    "Jules",
    "Noël",
    "Jérôme",
    "François",
    "Thomas",
    "Léo",
    "Jean-Baptiste",
    "Raphaël",
    "Mathéo",
    "Benoît",
    "Pierre",
    "Nicolas",
    "Loïc",
    "Anthony",
    "Jean-François",
)
_TEXT_VALUES = {
    "positive": ("POSITIF", "Positif", "DÉTECTÉ", "Détecté", "DETECTE"),
    "negative": ("NEGATIF", "Négatif", "NON DÉTECTÉ", "Non détecté", "NEGATIF"),
    "inconclusive": ("INDETERMINE", "Douteux"),
    "invalid": ("NON INTERPRETABLE",),
}
_SNOMED_VALUES = {
    "positive": ("260373001", "10828004"),
    "negative": ("260415000", "260385009"),
    "inconclusive": ("419984006",),
    "invalid": ("455371000124106",),
}
_PCR_PANEL = ("94500-6", "94316-7", "94309-2")


@dataclass(frozen=True, slots=True)
class Patient:
    ins: str | None
    birth_name: str
    given_name: str
    birth_date: date
    sex: str
    postal_code: str | None
    phone: str | None = None
    city: str = ""
    local_id: str = ""


@dataclass(frozen=True, slots=True)
class Observation:
    loinc: str
    value: str
    """A SNOMED CT code (digits) or a result text."""
    status: str = "F"
    result_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Order:
    specimen_id: str
    specimen_type: str
    collection_time: datetime
    observations: list[Observation] = field(default_factory=list)


def escape(text: str) -> str:
    """ER7 escaping with the default delimiters."""
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
        .replace("\r", "\\X0D\\")
        .replace("\n", "\\.br\\")
    )


def dtm(value: datetime) -> str:
    """HL7 DTM with seconds and UTC offset."""
    return value.strftime("%Y%m%d%H%M%S%z")


def ins_key(first13: str) -> int:
    return 97 - int(first13[:5] + first13[5:7].replace("2A", "19").replace("2B", "18") + first13[7:]) % 97


def _result_time(order: Order) -> datetime:
    times = [o.result_time for o in order.observations if o.result_time is not None]
    return max(times) if times else order.collection_time


def _pid(index: int, patient: Patient, lab_id: str, version: str) -> str:
    local = patient.local_id or f"P{index:06d}"
    ids = f"{escape(local)}^^^{escape(lab_id)}^PI"
    if patient.ins:
        ids += f"~{patient.ins}^^^{INS_ASSIGNER}^INS"
    name = f"{escape(patient.birth_name)}^{escape(patient.given_name)}^^^^^L"
    address = f"^^{escape(patient.city)}^^{patient.postal_code}^FRA^H" if patient.postal_code else ""
    phone = f"{escape(patient.phone)}^PRN^PH" if patient.phone else ""
    fields = [
        "PID",
        str(index),
        "",
        ids,
        "",
        name,
        "",
        patient.birth_date.strftime("%Y%m%d"),
        patient.sex,
        "",
        "",
        address,
        "",
        phone,
    ]
    if version != "2.3.1":
        fields += [""] * 18 + ["VALI" if patient.ins else "PROV"]
    return "|".join(fields)


def build_oru_r01(
    lab_id: str,
    control_id: str,
    patients_orders: Sequence[tuple[Patient, Sequence[Order]]],
    version: str = "2.5.1",
    sending_app: str = "LIS",
    crlf: bool = False,
    sent_at: datetime | None = None,
) -> bytes:
    """One ORU^R01 in ER7 (UTF-8). `sent_at` (MSH-7) defaults to the latest result time."""
    modern = version != "2.3.1"
    latest = [_result_time(order) for _, orders in patients_orders for order in orders]
    sent = sent_at or (max(latest) if latest else datetime(2024, 1, 1, tzinfo=PARIS))
    coded = "CWE" if modern else "CE"
    segments = [
        f"MSH|^~\\&|{escape(sending_app)}|{escape(lab_id)}|LABFLOW|LABFLOW|{dtm(sent)}||ORU^R01^ORU_R01|"
        f"{escape(control_id)}|P|{version}|||AL|NE||UNICODE UTF-8"
    ]
    obr_index = 0
    for p_index, (patient, orders) in enumerate(patients_orders, start=1):
        segments.append(_pid(p_index, patient, lab_id, version))
        segments.append("PV1|1|O")
        for order in orders:
            obr_index += 1
            first = order.observations[0].loinc if order.observations else "94500-6"
            service = f"{first}^{LOINC_TEXT.get(first, '')}^LN"
            specimen_text = SPECIMEN_TYPES.get(order.specimen_type, "")
            result_time = dtm(_result_time(order))
            placer = f"CMD{obr_index:04d}{escape(order.specimen_id)}"
            filler = escape(order.specimen_id) if not modern else f"{escape(order.specimen_id)}-{obr_index}"
            segments.append(f"ORC|RE|{placer}|{filler}")
            obr = ["OBR", str(obr_index), placer, filler, service, "", "", dtm(order.collection_time)]
            obr += [""] * 7 + ["" if modern else f"{order.specimen_type}&{escape(specimen_text)}&SCT"]
            obr += [""] * 6 + [result_time, "", "", "F"]
            segments.append("|".join(obr))
            for o_index, obs in enumerate(order.observations, start=1):
                if obs.value.isdigit():
                    value_type = coded
                    value = f"{obs.value}^{SNOMED_TEXT.get(obs.value, '')}^SCT"
                else:
                    value_type, value = "ST", escape(obs.value)
                observed = dtm(obs.result_time) if obs.result_time else ""
                obx = [
                    "OBX",
                    str(o_index),
                    value_type,
                    f"{obs.loinc}^{LOINC_TEXT.get(obs.loinc, '')}^LN",
                    "",
                    value,
                    "",
                    "",
                    "",
                    "",
                    "",
                    obs.status,
                    "",
                    "",
                    observed,
                ]
                if modern:
                    obx += [""] * 8 + [f"{escape(lab_id)}^^^^^^^^^{escape(lab_id)}"]
                segments.append("|".join(obx))
            if modern:
                spm = [
                    "SPM",
                    "1",
                    f"{escape(order.specimen_id)}&{escape(lab_id)}",
                    "",
                    f"{order.specimen_type}^{specimen_text}^SCT",
                ]
                spm += [""] * 12 + [dtm(order.collection_time)]
                segments.append("|".join(spm))
    end = "\r\n" if crlf else "\r"
    return (end.join(segments) + end).encode("utf-8")


@functools.cache
def _population_weights() -> tuple[tuple[str, ...], tuple[float, ...]]:
    population = load_reference().population
    departments = tuple(sorted(dep for dep, cl in population if cl == "0"))
    return departments, tuple(itertools.accumulate(population[(dep, "0")] for dep in departments))


def _postal_code(rng: random.Random, department: str) -> str:
    if department == "2A":
        return f"20{rng.randrange(0, 200):03d}"
    if department == "2B":
        return f"2{rng.randrange(200, 700):04d}"
    if department == "975":
        return "97500"
    if department == "977":
        return "97133"
    if department == "978":
        return "97150"
    if len(department) == 3:
        return f"{department}{rng.randrange(0, 30):02d}"
    return f"{department}{rng.randrange(0, 1000):03d}"


def _birth_place(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.08:
        return f"99{rng.randrange(100, 500):03d}"  # born abroad: 99 + country code
    if roll < 0.1:
        return f"{rng.choice(('2A', '2B'))}{rng.randrange(1, 400):03d}"
    if roll < 0.13:
        return f"97{rng.randrange(1, 5)}{rng.randrange(1, 35):02d}"
    department = rng.randrange(1, 96)
    return f"{department + (department == 20):02d}{rng.randrange(1, 700):03d}"  # no department 20 since 1976


def random_ins(rng: random.Random, sex: str, birth_date: date) -> str:
    first13 = (
        ("2" if sex == "F" else "1")
        + birth_date.strftime("%y%m")
        + _birth_place(rng)
        + f"{rng.randrange(1, 1000):03d}"
    )
    return f"{first13}{ins_key(first13):02d}"


def random_patient(
    rng: random.Random,
    department_weights: Mapping[str, float] | None = None,
    *,
    today: date | None = None,
    without_ins: float = 0.2,
) -> Patient:
    """A plausible patient living in a department drawn by population (or by `department_weights`)."""
    if department_weights is None:
        departments, cumulative = _population_weights()
        department = rng.choices(departments, cum_weights=cumulative)[0]
    else:
        department = rng.choices(list(department_weights), weights=list(department_weights.values()))[0]
    sex = "F" if rng.random() < 0.52 else "M"
    today = today or date(2024, 1, 15)
    age_days = int(rng.triangular(0, 100, 40) * 365.25)
    birth_date = today - timedelta(days=age_days)
    given = rng.choice(_GIVEN_NAMES_F if sex == "F" else _GIVEN_NAMES_M)
    return Patient(
        ins=None if rng.random() < without_ins else random_ins(rng, sex, birth_date),
        birth_name=rng.choice(_BIRTH_NAMES),
        given_name=given,
        birth_date=birth_date,
        sex=sex,
        postal_code=_postal_code(rng, department),
        phone=f"06{rng.randrange(10**8):08d}" if rng.random() < 0.9 else None,
        local_id=f"P{rng.randrange(10**8):08d}",
    )


def random_order(
    rng: random.Random,
    result_time: datetime,
    *,
    observations: int = 1,
    positivity: float = 0.1,
) -> Order:
    """One specimen: ≈70 % RT-PCR / 30 % antigen, collected 0–24 h before `result_time`.

    With `observations` > 1 the order is an RT-PCR panel of that many targets (same outcome).
    """
    pcr = observations > 1 or rng.random() < 0.7
    roll = rng.random()
    if roll < positivity:
        outcome = "positive"
    elif roll < positivity + 0.01:
        outcome = "inconclusive"
    elif roll < positivity + 0.015:
        outcome = "invalid"
    else:
        outcome = "negative"
    use_snomed = rng.random() < 0.5
    if pcr:
        loincs = list(_PCR_PANEL[:observations]) if observations > 1 else [rng.choice(("94500-6", "94309-2"))]
    else:
        loincs = [rng.choice(("94558-4", "94558-4", "96119-3", "97097-0"))]
    values = _SNOMED_VALUES[outcome] if use_snomed else _TEXT_VALUES[outcome]
    obs = [Observation(loinc, rng.choice(values), "F", result_time) for loinc in loincs]
    collected = result_time - timedelta(seconds=rng.randrange(0, 24 * 3600))
    specimen_type = rng.choice(tuple(SPECIMEN_TYPES)) if pcr else rng.choice(("258500001", "697989009"))
    return Order(f"{rng.randrange(10**10):010d}", specimen_type, collected, obs)
