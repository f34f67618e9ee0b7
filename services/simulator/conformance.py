"""The simulator as a LIS under onboarding: the conformance plan's messages, as a lab would send them.

Every message is built from the plan's own definitions (`services.core.domain.conformance.PLAN`: the
test kind, outcome, status, INS or not, the names' spelling, the defect of an invalid case), so the
simulator conforms by construction to what `labflow conformance plan` prints. With `defects` it plays a
deliberately non-conforming LIS: each defect breaks one scenario in a way the report must name
(`NON_CONFORMING` is the one the tests use).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from services.core.domain.conformance import PLAN, Scenario, Send
from services.core.domain.model import Outcome, PseudonymBasis, ResultStatus, TestKind
from services.simulator.oru import Observation, Order, Patient, build_oru_r01, random_patient

LOINC = {TestKind.RT_PCR: "94500-6", TestKind.ANTIGEN: "94558-4"}
SNOMED = {Outcome.POSITIVE: "260373001", Outcome.NEGATIVE: "260385009"}
NAMES = {
    "accented": ("HÉBERT", "Hélène"),
    "unaccented": ("HEBERT", "Helene"),
    "composite": ("GAUTIER-MÜLLER", "Marie-Élodie"),
    "composite-plain": ("GAUTIER MULLER", "MARIE-ELODIE"),
}

NON_CONFORMING: Mapping[str, str] = {
    "LFC-01": "no-ins",  # the INS is left out: identified by traits
    "LFC-03": "other-birth-date",  # the second spelling comes with another birth date: two persons
    "LFC-05": "swapped",  # the final result is sent before the preliminary one
    "LFC-06": "final-not-corrected",  # the correction goes out as F instead of C
    "LFC-07": "not-sent",
    "LFC-08": "sent-once",
    "LFC-09": "new-specimen",  # the re-send gets a new specimen id: a second result
    "LFC-10": "one-patient",
    "LFC-11": "metropolitan",
    "LFC-21": "valid-ins",  # the INS key the scenario asks to get wrong is right: AA
    "LFC-26": "supported-version",
    "LFC-27": "not-sent",
}
"""A deliberately non-conforming LIS: scenario code -> its defect (every other scenario conforms)."""


def plan_messages(
    lab_id: str, now: datetime, defects: Mapping[str, str] | None = None
) -> list[tuple[str, bytes]]:
    """(control id, ORU^R01) in the order to send them; a message sent twice appears twice."""
    defects = defects or {}
    messages: list[tuple[str, bytes]] = []
    for number, scenario in enumerate(PLAN):
        defect = defects.get(scenario.code, "")
        if defect == "not-sent":
            continue
        built = _scenario_messages(scenario, lab_id, now, random.Random(number), defect)
        messages += list(reversed(built)) if defect == "swapped" else built
    return messages


def _scenario_messages(
    scenario: Scenario, lab_id: str, now: datetime, rng: random.Random, defect: str
) -> list[tuple[str, bytes]]:
    patient = random_patient(rng, {"75": 1.0}, today=now.date(), without_ins=0.0)
    specimen = f"{scenario.code}-{rng.randrange(10**8):08d}"
    collected = now - timedelta(hours=6)
    messages: list[tuple[str, bytes]] = []
    for step, send in enumerate(scenario.sends):
        step_patient = _patient(send, patient, now, defect)
        if defect == "other-birth-date" and step:
            step_patient = replace(step_patient, birth_date=step_patient.birth_date - timedelta(days=1))
        step_specimen = f"{specimen}-NEW" if defect == "new-specimen" and step else specimen
        order = Order(step_specimen, "258500001", collected, [_observation(send, now, step, defect)])
        patients_orders: list[tuple[Patient, list[Order]]] = [(step_patient, [order])]
        if send.patients == 2 and defect != "one-patient":
            other = random_patient(rng, {"69": 1.0}, today=now.date(), without_ins=0.0)
            patients_orders.append((other, [replace(order, specimen_id=f"{specimen}-B")]))
        version = "2.4" if send.variant == "version-2.4" and defect != "supported-version" else "2.5.1"
        payload = build_oru_r01(lab_id, send.control_id, patients_orders, version=version)
        if send.variant == "adt-message":
            payload = payload.replace(b"|ORU^R01^ORU_R01|", b"|ADT^A01^ADT_A01|", 1)
        times = 1 if defect == "sent-once" else send.times
        messages += [(send.control_id, payload)] * times
    return messages


def _patient(send: Send, base: Patient, now: datetime, defect: str) -> Patient:
    patient = base
    if send.variant in NAMES:
        birth_name, given_name = NAMES[send.variant]
        patient = replace(patient, birth_name=birth_name, given_name=given_name)
    if send.basis is PseudonymBasis.TRAITS or defect == "no-ins" or send.variant == "future-birth-date":
        patient = replace(patient, ins=None)
    if send.overseas and defect != "metropolitan":
        patient = replace(patient, postal_code="97411", city="Saint-Pierre")
    if send.variant == "bad-ins-key" and defect != "valid-ins" and patient.ins:
        wrong = (int(patient.ins[-2:]) + 1) % 97 or 1
        patient = replace(patient, ins=f"{patient.ins[:-2]}{wrong:02d}")
    if send.variant == "future-birth-date":
        patient = replace(patient, birth_date=now.date() + timedelta(days=30))
    return patient


def _observation(send: Send, now: datetime, step: int, defect: str) -> Observation:
    status = send.status
    if defect == "final-not-corrected" and status is ResultStatus.CORRECTED:
        status = ResultStatus.FINAL
    loinc = "12345-6" if send.variant == "unknown-loinc" else LOINC[send.test_kind]
    value = "PEUT-ETRE" if send.variant == "unreadable-value" else SNOMED[send.outcome]
    status_code = "" if send.variant == "no-result-status" else status.value
    # later steps are later results (a correction after the result it corrects)
    return Observation(loinc, value, status_code, now - timedelta(hours=2) + timedelta(minutes=step))
