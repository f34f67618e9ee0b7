"""The conformance plan of lab onboarding (SPEC §8.1), and how what a lab sent is judged against it.

Pure: no I/O. ONE definition, `PLAN`, serves `labflow conformance plan` (what a LIS must send),
`labflow conformance report` (what it actually sent, judged here) and the simulator that plays a
conforming LIS in the tests (`services.simulator.conformance` builds each message from these
definitions), so the three cannot drift apart.

Each scenario names the message control ids (MSH-10) the lab must use: that is how a message is tied
to its scenario without any identity in clear (the report sees pseudonyms, never names). A scenario is
one or more messages (`Send`); what is checked:

- every message was answered as expected: AA, or AE/AR with the expected HL7 error code (table 0357)
  at the expected place (`PID-3`…); the lab's LATEST reception of a control id is judged, so a lab that
  fixed its interface and ran the plan again is judged on its last run;
- an accepted message carried what the scenario says: the number of patients and results, the test
  kind, outcome and status, whether the patient was identified by INS or by traits, an overseas
  residence;
- relations between messages: the same person (accented or composite names spelled two ways must give
  one pseudonym), the same result (preliminary then final, correction, cancellation, re-send under a
  new control id: one result id, received in the plan's order), a message re-sent with the same
  control id (received at least twice).

A scenario is `passed`, `failed` (each reason named) or `missing` (none of its messages arrived); the
plan passes when every scenario passed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from services.core.domain.model import Outcome, PseudonymBasis, ResultStatus, TestKind

OVERSEAS_DEPARTMENTS = frozenset({"971", "972", "973", "974", "976"})
AckCode = Literal["AA", "AE", "AR"]


@dataclass(frozen=True, slots=True)
class Send:
    """One message the lab sends (or one message sent `times` times with the same control id)."""

    control_id: str
    what: str
    """What the message must carry, for the LIS's developers."""
    ack: AckCode = "AA"
    test_kind: TestKind = TestKind.RT_PCR
    outcome: Outcome = Outcome.POSITIVE
    status: ResultStatus = ResultStatus.FINAL
    basis: PseudonymBasis = PseudonymBasis.INS
    patients: int = 1
    overseas: bool = False
    times: int = 1
    error: str | None = None
    """For AE/AR: the HL7 error code (table 0357) expected in an ERR segment."""
    where: str | None = None
    """For AE/AR: where the error is expected (`PID-3`, `MSH-12`…)."""
    variant: str = ""
    """The simulator's recipe for this message (names spelled a given way, the defect to put in)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    code: str
    title: str
    sends: tuple[Send, ...]
    same: Literal["person", "result"] | None = None
    """Relation between the accepted messages: one pseudonym, or one result id in the plan's order."""


def _invalid(
    number: int, title: str, what: str, ack: AckCode, error: str, where: str, variant: str
) -> Scenario:
    code = f"LFC-{number:02d}"
    return Scenario(code, title, (Send(code, what, ack=ack, error=error, where=where, variant=variant),))


_PCR_POSITIVE = "RT-PCR (LOINC 94500-6), positive, final (OBX-11 F)"
PLAN: tuple[Scenario, ...] = (
    Scenario("LFC-01", "positive RT-PCR with INS", (
        Send("LFC-01", f"{_PCR_POSITIVE}; PID-3 carries the patient's INS (qualified identity)"),
    )),
    Scenario("LFC-02", "negative antigen test without INS", (
        Send("LFC-02", "antigen test (LOINC 94558-4), negative, final; no INS in PID-3 (traits only)",
             test_kind=TestKind.ANTIGEN, outcome=Outcome.NEGATIVE, basis=PseudonymBasis.TRAITS),
    )),
    Scenario("LFC-03", "accented names", (
        Send("LFC-03-1", "no INS; birth name and given name with accents (e.g. HÉBERT Hélène)",
             basis=PseudonymBasis.TRAITS, variant="accented"),
        Send("LFC-03-2", "the same person (same birth date and sex), names without accents (HEBERT Helene)",
             basis=PseudonymBasis.TRAITS, variant="unaccented"),
    ), same="person"),
    Scenario("LFC-04", "composite names", (
        Send("LFC-04-1", "no INS; hyphenated birth and given names (e.g. GAUTIER-MÜLLER Marie-Élodie)",
             basis=PseudonymBasis.TRAITS, variant="composite"),
        Send("LFC-04-2", "the same person, written another way (GAUTIER MULLER MARIE-ELODIE)",
             basis=PseudonymBasis.TRAITS, variant="composite-plain"),
    ), same="person"),
    Scenario("LFC-05", "preliminary then final", (
        Send("LFC-05-1", f"{_PCR_POSITIVE.replace('final (OBX-11 F)', 'preliminary (OBX-11 P)')}",
             status=ResultStatus.PRELIMINARY),
        Send("LFC-05-2", "the same specimen and test, final (OBX-11 F), sent after LFC-05-1"),
    ), same="result"),
    Scenario("LFC-06", "correction", (
        Send("LFC-06-1", _PCR_POSITIVE),
        Send("LFC-06-2", "the same specimen and test corrected to negative (OBX-11 C), sent after LFC-06-1",
             outcome=Outcome.NEGATIVE, status=ResultStatus.CORRECTED),
    ), same="result"),
    Scenario("LFC-07", "cancellation", (
        Send("LFC-07-1", _PCR_POSITIVE),
        Send("LFC-07-2", "the same specimen and test cancelled (OBX-11 X), sent after LFC-07-1",
             status=ResultStatus.CANCELLED),
    ), same="result"),
    Scenario("LFC-08", "re-sent with the same control id", (
        Send("LFC-08", f"{_PCR_POSITIVE}; then the very same message again (as after a lost ACK)", times=2),
    )),
    Scenario("LFC-09", "re-sent with a new control id", (
        Send("LFC-09-1", _PCR_POSITIVE),
        Send("LFC-09-2", "the same result again, unchanged, under a new control id"),
    ), same="result"),
    Scenario("LFC-10", "two patients in one message", (
        Send("LFC-10", "two PID groups in one ORU^R01, each with its own negative RT-PCR result",
             outcome=Outcome.NEGATIVE, patients=2),
    )),
    Scenario("LFC-11", "overseas resident", (
        Send("LFC-11", f"{_PCR_POSITIVE}; the patient lives overseas (PID-11 postal code 971xx…976xx)",
             overseas=True),
    )),
    _invalid(21, "invalid INS key", "an INS whose 2-digit key is wrong", "AE", "102", "PID-3", "bad-ins-key"),
    _invalid(22, "unknown LOINC code", "OBX-3 with a code that is no SARS-CoV-2 LOINC (e.g. 12345-6)",
             "AE", "103", "OBX-3", "unknown-loinc"),
    _invalid(23, "result value that cannot be read", "OBX-5 with a free text that is no result (PEUT-ETRE)",
             "AE", "103", "OBX-5", "unreadable-value"),
    _invalid(24, "birth date in the future", "PID-7 after the message date", "AE", "102", "PID-7",
             "future-birth-date"),
    _invalid(25, "result status missing", "OBX-11 empty", "AE", "101", "OBX-11", "no-result-status"),
    _invalid(26, "unsupported HL7 version", "MSH-12 = 2.4", "AR", "203", "MSH-12", "version-2.4"),
    _invalid(27, "not a result message", "MSH-9 = ADT^A01 (only ORU^R01 is accepted)", "AR", "200", "MSH-9",
             "adt-message"),
)


# what the lab sent, as the report sees it


@dataclass(frozen=True, slots=True)
class ObservedResult:
    result_id: str
    patient_pseudonym: str
    pseudonym_basis: PseudonymBasis
    test_kind: TestKind
    outcome: Outcome
    status: ResultStatus
    department: str | None


@dataclass(frozen=True, slots=True)
class Reception:
    """One message of the lab as the gateway answered it: accepted (with its results) or rejected."""

    control_id: str
    received_at: datetime
    ack: str
    results: tuple[ObservedResult, ...] = ()
    errors: tuple[tuple[str, str], ...] = ()
    """(HL7 error code, where: `PID-3`…) of a rejected message."""


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class ScenarioOutcome:
    scenario: Scenario
    status: Status
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConformanceReport:
    lab_id: str
    generated_at: datetime
    outcomes: tuple[ScenarioOutcome, ...]
    receptions: int = 0
    unplanned: tuple[str, ...] = field(default=())
    """Control ids received that the plan does not name (listed, not judged)."""

    @property
    def passed(self) -> bool:
        return all(o.status is Status.PASSED for o in self.outcomes)

    def count(self, status: Status) -> int:
        return sum(o.status is status for o in self.outcomes)

    def as_json(self) -> dict[str, Any]:
        return {
            "lab_id": self.lab_id,
            "generated_at": self.generated_at.isoformat(),
            "passed": self.passed,
            "summary": {s.value: self.count(s) for s in Status},
            "messages_received": self.receptions,
            "scenarios": [
                {"code": o.scenario.code, "title": o.scenario.title, "status": o.status.value,
                 "reasons": list(o.reasons), "control_ids": [s.control_id for s in o.scenario.sends]}
                for o in self.outcomes
            ],
            "unplanned_control_ids": list(self.unplanned),
        }

    def as_markdown(self) -> str:
        verdict = "PASSED" if self.passed else "NOT PASSED"
        lines = [
            f"# Conformance report: {self.lab_id}",
            "",
            f"Generated {self.generated_at.isoformat(timespec='seconds')} from {self.receptions} messages "
            f"received. **{verdict}**: {self.count(Status.PASSED)} passed, {self.count(Status.FAILED)} "
            f"failed, {self.count(Status.MISSING)} missing (of {len(self.outcomes)} scenarios).",
            "",
            "| Scenario | | Status | Reasons |",
            "|---|---|---|---|",
        ]
        for o in self.outcomes:
            reasons = "<br>".join(r.replace("|", "\\|") for r in o.reasons)
            lines.append(f"| {o.scenario.code} | {o.scenario.title} | {o.status.value} | {reasons} |")
        if self.unplanned:
            lines += ["", f"Control ids not in the plan (not judged): {', '.join(self.unplanned)}"]
        return "\n".join(lines) + "\n"


def plan_text(plan: Sequence[Scenario] = PLAN) -> str:
    """What `labflow conformance plan` prints: each scenario, its control ids and the expected answer."""
    lines = [
        "LabFlow conformance plan: send each message below with exactly the MSH-10 control id shown,",
        "in the order shown, while the lab is in test mode; then ask for `labflow conformance report`.",
        "",
    ]
    for scenario in plan:
        lines.append(f"{scenario.code}  {scenario.title}")
        for send in scenario.sends:
            expected = send.ack if send.ack == "AA" else f"{send.ack}, ERR {send.error} at {send.where}"
            times = f" (send it {send.times} times)" if send.times > 1 else ""
            lines.append(f"  MSH-10 {send.control_id}: {send.what}{times} -> expect {expected}")
        lines.append("")
    return "\n".join(lines)


def judge(
    lab_id: str, receptions: Iterable[Reception], generated_at: datetime, plan: Sequence[Scenario] = PLAN
) -> ConformanceReport:
    by_control_id: dict[str, list[Reception]] = {}
    received = sorted(receptions, key=lambda r: r.received_at)
    for reception in received:
        by_control_id.setdefault(reception.control_id, []).append(reception)
    planned = {s.control_id for scenario in plan for s in scenario.sends}
    return ConformanceReport(
        lab_id,
        generated_at,
        tuple(_judge_scenario(scenario, by_control_id) for scenario in plan),
        len(received),
        tuple(sorted(set(by_control_id) - planned)),
    )


def _judge_scenario(scenario: Scenario, by_control_id: dict[str, list[Reception]]) -> ScenarioOutcome:
    if not any(send.control_id in by_control_id for send in scenario.sends):
        return ScenarioOutcome(scenario, Status.MISSING, ("no message with this control id was received",))
    reasons: list[str] = []
    latest: list[Reception] = []
    for send in scenario.sends:
        got = by_control_id.get(send.control_id, [])
        if not got:
            reasons.append(f"{send.control_id}: not received")
            continue
        latest.append(got[-1])
        reasons += _judge_send(send, got)
    if not reasons and scenario.same is not None:
        reasons += _judge_relation(scenario, latest)
    return ScenarioOutcome(scenario, Status.FAILED if reasons else Status.PASSED, tuple(reasons))


def _answer(reception: Reception) -> str:
    errors = ", ".join(f"{code} at {where}" for code, where in reception.errors[:3])
    return f"{reception.ack} ({errors})" if errors else reception.ack


def _judge_send(send: Send, got: list[Reception]) -> list[str]:
    last = got[-1]
    cid = send.control_id
    if send.ack != "AA":
        if last.ack != send.ack:
            expected = f"{send.ack} with error {send.error} at {send.where}"
            return [f"{cid}: answered {_answer(last)}, expected {expected}"]
        if (send.error, send.where) not in last.errors:
            return [f"{cid}: answered {_answer(last)}, expected error {send.error} at {send.where}"]
        return []
    if last.ack != "AA":
        return [f"{cid}: answered {_answer(last)}, expected AA"]
    reasons = []
    accepted = [r for r in got if r.ack == "AA"]
    if len(accepted) < send.times:
        reasons.append(f"{cid}: received {len(accepted)} time(s), expected {send.times} (same control id)")
    results = last.results
    if len(results) != send.patients:
        reasons.append(f"{cid}: {len(results)} result(s), expected {send.patients}")
    persons = {r.patient_pseudonym for r in results}
    if len(persons) != send.patients:
        reasons.append(f"{cid}: {len(persons)} patient(s), expected {send.patients}")
    for r in results:
        for what, seen, expected in (
            ("test kind", r.test_kind, send.test_kind),
            ("outcome", r.outcome, send.outcome),
            ("status (OBX-11)", r.status, send.status),
            ("patient identified by", r.pseudonym_basis, send.basis),
        ):
            if seen != expected:
                reasons.append(f"{cid}: {what} {seen.value}, expected {expected.value}")
        if send.overseas and r.department not in OVERSEAS_DEPARTMENTS:
            department = r.department or "unknown"
            reasons.append(f"{cid}: residence department {department}, expected an overseas one")
    return list(dict.fromkeys(reasons))  # one line per distinct reason (two patients, same defect)


def _judge_relation(scenario: Scenario, latest: list[Reception]) -> list[str]:
    codes = ", ".join(s.control_id for s in scenario.sends)
    if scenario.same == "person":
        persons = {r.patient_pseudonym for reception in latest for r in reception.results}
        return [] if len(persons) == 1 else [f"{codes}: not recognised as one person (names spelled "
                                             "differently must be the same patient: same birth date, sex and "
                                             "names up to accents, spaces and hyphens)"]
    reasons = []
    result_ids = {r.result_id for reception in latest for r in reception.results}
    if len(result_ids) != 1:
        reasons.append(f"{codes}: not one result (the same specimen id and LOINC code must be sent again)")
    for before, after in itertools.pairwise(latest):
        if before.received_at > after.received_at:
            reasons.append(f"{after.control_id} was received before {before.control_id}")
    return reasons
