"""The conformance kit without infrastructure: the simulator's plan messages, normalized by the
gateway's own code, judged by the report (the e2e test runs the same through the real stack)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nacl.public import PrivateKey

from services.core.domain.conformance import PLAN, Reception, Status, judge, plan_text
from services.core.domain.model import Transport
from services.gateway.conformance import accepted_receptions, rejected_receptions
from services.gateway.hl7.normalize import normalize_oru
from services.gateway.identity import IdentityProtector
from services.gateway.intake import rejection_for
from services.simulator.conformance import NON_CONFORMING, plan_messages

NOW = datetime(2024, 3, 5, 10, tzinfo=UTC)
PROTECTOR = IdentityProtector(b"0123456789abcdef0123456789abcdef", bytes(PrivateKey.generate().public_key))


def receptions(messages: list[tuple[str, bytes]]) -> list[Reception]:
    """What the gateway would answer and keep for each message, in the report's terms."""
    out: list[Reception] = []
    for i, (_, raw) in enumerate(messages):
        at = NOW + timedelta(seconds=i)
        normalized = normalize_oru(raw, received_at=at, transport=Transport.MLLP, protector=PROTECTOR, now=at)
        if normalized.ack_code == "AA":
            out += accepted_receptions(normalized.results)
        else:
            rejection = rejection_for(raw, Transport.MLLP, at, normalized.ack_code, normalized.header,
                                      normalized.issues)
            out += rejected_receptions("LAB-K", [rejection])
    return out


def test_the_plan_names_every_scenario_with_its_control_ids_and_expected_answers() -> None:
    text = plan_text()
    for scenario in PLAN:
        assert scenario.code in text and scenario.title in text
        for send in scenario.sends:
            assert f"MSH-10 {send.control_id}:" in text
    assert "LFC-21: an INS whose 2-digit key is wrong -> expect AE, ERR 102 at PID-3" in text
    assert "(send it 2 times)" in text


def test_the_simulator_as_a_conforming_lis_passes_every_scenario() -> None:
    report = judge("LAB-K", receptions(plan_messages("LAB-K", NOW)), NOW)
    assert [(o.scenario.code, o.status, o.reasons) for o in report.outcomes] == [
        (s.code, Status.PASSED, ()) for s in PLAN
    ]
    assert report.passed and report.unplanned == ()


def test_a_non_conforming_lis_gets_each_failure_named() -> None:
    report = judge("LAB-K", receptions(plan_messages("LAB-K", NOW, NON_CONFORMING)), NOW)
    outcomes = {o.scenario.code: o for o in report.outcomes}
    assert not report.passed
    assert {code for code, o in outcomes.items() if o.status is Status.PASSED} == {
        s.code for s in PLAN if s.code not in NON_CONFORMING
    }
    assert outcomes["LFC-07"].status is Status.MISSING and outcomes["LFC-27"].status is Status.MISSING
    reasons = {code: " ".join(o.reasons) for code, o in outcomes.items()}
    assert "patient identified by traits, expected ins" in reasons["LFC-01"]
    assert "not recognised as one person" in reasons["LFC-03"]
    assert "LFC-05-2 was received before LFC-05-1" in reasons["LFC-05"]
    assert "LFC-06-2: status (OBX-11) F, expected C" in reasons["LFC-06"]
    assert "LFC-08: received 1 time(s), expected 2" in reasons["LFC-08"]
    assert "not one result" in reasons["LFC-09"]
    assert "LFC-10: 1 result(s), expected 2" in reasons["LFC-10"]
    assert "LFC-11: residence department 75, expected an overseas one" in reasons["LFC-11"]
    assert reasons["LFC-21"] == "LFC-21: answered AA, expected AE with error 102 at PID-3"
    assert reasons["LFC-26"] == "LFC-26: answered AA, expected AR with error 203 at MSH-12"
    markdown = report.as_markdown()
    assert "**NOT PASSED**" in markdown and "| LFC-07 | cancellation | missing |" in markdown
    assert report.as_json()["summary"] == {"passed": len(PLAN) - len(NON_CONFORMING), "failed": 10,
                                           "missing": 2}


def test_the_latest_run_of_a_control_id_is_judged() -> None:
    """A lab that fixed its interface and sent the plan again passes on its last run."""
    first = plan_messages("LAB-K", NOW, {"LFC-21": "valid-ins"})
    again = [m for m in plan_messages("LAB-K", NOW) if m[0] == "LFC-21"]
    assert judge("LAB-K", receptions(first + again), NOW).passed
