"""The lab portal's API on the real stack: messages through the gateway's intake → Kafka → the worker's
consumers → PostgreSQL → `/portal/api/v1/…`. Lab A's token never returns lab B's rows, whatever the
request says; a missing, wrong, revoked or staff token is a 401 with a JSON reason; a disabled lab 403."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from pydantic import SecretStr

from labflow_testkit.infrastructure import isolated_settings
from services.core.config import Settings
from services.core.db.engine import libpq_url, make_engine
from services.core.domain.conformance import PLAN, judge
from services.dashboard.app import build_app
from services.dashboard.portal import PORTAL_COOKIE
from services.gateway.conformance import ConformanceRecords
from services.gateway.labs import LabDirectory
from services.gateway.rejections import ReplayLog
from tests.conftest import Infrastructure
from tests.support import count_lab_traffic, lab_message, through_intake

pytestmark = pytest.mark.integration
STAFF_TOKEN = "staff-dashboard-token"
# lab -> answers it gets; control ids are `<lab>-<answer>-<n>`
SENT = {"LAB-A": {"AA": 5, "AE": 2, "AR": 1}, "LAB-B": {"AA": 3, "AE": 0, "AR": 4}}


@dataclass
class Portal:
    settings: Settings
    client: TestClient
    tokens: dict[str, str]
    key: rsa.RSAPrivateKey
    replayed: str


def control_ids(lab: str) -> list[tuple[str, str]]:
    return [(f"{lab}-{answer}-{i}", answer) for answer, n in SENT[lab].items() for i in range(n)]


@pytest.fixture(scope="module")
def portal(infrastructure: Infrastructure) -> Iterator[Portal]:
    with isolated_settings(infrastructure.kafka_bootstrap, infrastructure.database_url) as settings:
        engine = make_engine(settings.require_database())
        directory = LabDirectory(engine)
        tokens = {}
        for lab in ("LAB-A", "LAB-B", "LAB-OFF"):
            directory.add(lab, f"Laboratoire {lab}", None, None)
            tokens[lab] = directory.issue_token(lab) or ""
        directory.set_enabled("LAB-OFF", False)
        payloads = [lab_message(lab, cid, answer) for lab in SENT for cid, answer in control_ids(lab)]
        assert through_intake(settings, payloads) == [a for lab in SENT for _, a in control_ids(lab)]

        def results_stored() -> bool:
            with psycopg.connect(libpq_url(settings.require_database())) as conn:
                row = conn.execute("SELECT sum(results) FROM lab_daily").fetchone()
            return row is not None and row[0] == SENT["LAB-A"]["AA"] + SENT["LAB-B"]["AA"]

        count_lab_traffic(settings, SENT, results_stored)
        with psycopg.connect(libpq_url(settings.require_database())) as conn:
            row = conn.execute(
                "SELECT rejection_id FROM lab_rejections WHERE message_control_id = 'LAB-A-AE-0'"
            ).fetchone()
        assert row is not None
        replayed = str(row[0])
        ReplayLog(engine).record(replayed, "AE")
        engine.dispose()

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        app_settings = settings.model_copy(update={
            "dashboard_tokens": SecretStr(STAFF_TOKEN), "dashboard_jwt_public_key": pem,
        })
        with TestClient(build_app(app_settings)) as client:
            yield Portal(settings, client, tokens, key, replayed)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jwt_for(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "someone", "iat": now, "exp": now + 300, **claims}, key, algorithm="RS256")


def everything(portal: Portal, headers: dict[str, str], query: str = "") -> dict[str, Any]:
    found = {}
    for path in ("session", "traffic", "rejections"):
        response = portal.client.get(f"/portal/api/v1/{path}{query}", headers=headers)
        assert response.status_code == 200, response.text
        found[path] = response.json()
    return found


@pytest.mark.parametrize(("lab", "other"), [("LAB-A", "LAB-B"), ("LAB-B", "LAB-A")])
def test_a_lab_sees_its_own_traffic_and_never_another_labs(portal: Portal, lab: str, other: str) -> None:
    # a lab id in the query string is no way in: the lab is the token's
    seen = everything(portal, bearer(portal.tokens[lab]), f"?lab={other}&lab_id={other}")
    assert seen["session"]["lab"] == lab
    days = seen["traffic"]["days"]
    sent = SENT[lab]
    assert sum(d["messages"] for d in days) == sum(sent.values())
    assert (sum(d["aa"] for d in days), sum(d["ae"] for d in days), sum(d["ar"] for d in days)) == (
        sent["AA"], sent["AE"], sent["AR"])
    assert sum(d["results"] for d in days) == sent["AA"]
    assert seen["traffic"]["last_received_at"] is not None
    assert sum(b["results"] for b in seen["traffic"]["delays"]["buckets"]) == sent["AA"]
    rejections = seen["rejections"]["rejections"]
    assert sorted(r["message_control_id"] for r in rejections) == sorted(
        cid for cid, answer in control_ids(lab) if answer != "AA")
    for r in rejections:
        assert r["reasons"] and all({"code", "text"} <= reason.keys() for reason in r["reasons"])
        assert r["ack_code"] in ("AE", "AR")
    # nothing of the other lab anywhere in what this lab can read
    body = json.dumps(seen)
    assert other not in body
    assert not any(cid in body for cid, _ in control_ids(other))


def test_reasons_carry_their_location_and_code_and_the_replay_status(portal: Portal) -> None:
    rejections = everything(portal, bearer(portal.tokens["LAB-A"]))["rejections"]["rejections"]
    by_id = {r["message_control_id"]: r for r in rejections}
    ae, ar = by_id["LAB-A-AE-0"], by_id["LAB-A-AR-0"]
    assert (ae["ack_code"], ae["reasons"][0]["segment"], ae["reasons"][0]["field"]) == ("AE", "PID", 3)
    assert (ar["ack_code"], ar["reasons"][0]["segment"], ar["reasons"][0]["field"]) == ("AR", "MSH", 9)
    assert ae["rejection_id"] == portal.replayed
    assert ae["replay"]["replays"] == 1 and ae["replay"]["last_outcome"] == "AE"
    assert by_id["LAB-A-AE-1"]["replay"] is None
    frequent = everything(portal, bearer(portal.tokens["LAB-A"]))["traffic"]["frequent_reasons"]
    assert {(r["segment"], r["field"], r["code"], r["rejections"]) for r in frequent} == {
        ("PID", 3, "102", 2), ("MSH", 9, "200", 1)}


def test_a_lab_sees_its_mode_and_only_its_own_latest_conformance_report(portal: Portal) -> None:
    """SPEC §8.1 in the portal: the lab's mode and its latest report (the scenarios not passed, with
    why); another lab's report is never shown."""
    records = ConformanceRecords(make_engine(portal.settings.require_database()))
    records.record(judge("LAB-B", [], datetime(2024, 1, 1, tzinfo=UTC)))  # nothing sent: all missing
    records.record(judge("LAB-B", [], datetime(2024, 1, 2, tzinfo=UTC)))
    a = everything(portal, bearer(portal.tokens["LAB-A"]))["session"]["conformance"]
    b = everything(portal, bearer(portal.tokens["LAB-B"]))["session"]["conformance"]
    assert a == {"mode": "production", "report": None}
    assert b["mode"] == "production" and b["report"]["passed"] is False
    assert b["report"]["generated_at"].startswith("2024-01-02")
    assert b["report"]["summary"] == {"passed": 0, "failed": 0, "missing": len(PLAN)}
    assert sorted(s["code"] for s in b["report"]["not_passed"]) == sorted(s.code for s in PLAN)


def test_the_browser_login_sets_a_portal_cookie_for_that_lab(portal: Portal) -> None:
    client = TestClient(portal.client.app)
    response = client.post("/portal/login", json={"token": portal.tokens["LAB-B"]})
    assert response.status_code == 200 and response.json() == {"lab": "LAB-B"}
    cookie = response.headers["set-cookie"]
    assert PORTAL_COOKIE in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/portal" in cookie, "the portal's cookie is sent to the portal only"
    assert client.get("/portal/api/v1/session").json()["lab"] == "LAB-B"
    # each login takes its own kind of token: a staff token opens no portal, a lab token no dashboard
    assert client.post("/portal/login", json={"token": STAFF_TOKEN}).status_code == 401
    assert client.post("/login", json={"token": portal.tokens["LAB-B"]}).status_code == 401
    assert client.post("/portal/logout").status_code == 200
    assert client.get("/portal/api/v1/session").status_code == 401


def test_an_oidc_identity_reads_the_lab_of_its_claim(portal: Portal) -> None:
    seen = everything(portal, bearer(jwt_for(portal.key, labflow_lab="LAB-B")))
    assert seen["session"] | {"method": "jwt"} == seen["session"] and seen["session"]["lab"] == "LAB-B"
    assert "LAB-A" not in json.dumps(seen)


def refused(portal: Portal, headers: dict[str, str]) -> tuple[int, str]:
    codes = set()
    details = set()
    for path in ("session", "traffic", "rejections"):
        response = portal.client.get(f"/portal/api/v1/{path}", headers=headers)
        assert response.headers["content-type"] == "application/json"
        codes.add(response.status_code)
        details.add(response.json()["detail"])
    assert len(codes) == 1 and len(details) == 1
    return codes.pop(), details.pop()


def test_no_token_a_wrong_one_or_a_staff_one_is_a_401_with_a_json_reason(portal: Portal) -> None:
    token_a = portal.tokens["LAB-A"]
    lab, _, secret = token_a.rpartition(".")
    assert refused(portal, {})[0] == 401
    assert "lab token is required" in refused(portal, {})[1]
    for wrong in (f"{lab}.{secret[:-1]}x", f"LAB-B.{secret}", "LAB-NOBODY.secret", "garbage", STAFF_TOKEN):
        assert refused(portal, bearer(wrong)) == (401, "unknown or revoked lab token"), wrong
    assert refused(portal, bearer(jwt_for(portal.key)))[0] == 401  # staff identity: no lab claim
    assert refused(portal, bearer(jwt_for(portal.key, labflow_lab="LAB-NOBODY")))[0] == 401
    assert refused(portal, bearer(jwt_for(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                                          labflow_lab="LAB-A")))[0] == 401
    assert portal.client.post("/portal/login", json={"token": "garbage"}).json() == {
        "detail": "unknown or revoked lab token"}


def test_a_disabled_lab_is_403_and_a_replaced_token_stops_at_once(portal: Portal) -> None:
    code, detail = refused(portal, bearer(portal.tokens["LAB-OFF"]))
    assert code == 403 and "disabled" in detail
    engine = make_engine(portal.settings.require_database())
    try:
        directory = LabDirectory(engine)
        directory.add("LAB-ROT", "Rotation", None, None)
        old = directory.issue_token("LAB-ROT") or ""
        assert everything(portal, bearer(old))["session"]["lab"] == "LAB-ROT"
        new = directory.issue_token("LAB-ROT") or ""
    finally:
        engine.dispose()
    assert refused(portal, bearer(old)) == (401, "unknown or revoked lab token")
    assert everything(portal, bearer(new))["session"]["lab"] == "LAB-ROT"
