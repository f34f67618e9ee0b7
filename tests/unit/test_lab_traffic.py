"""The lab-traffic consumers: what they keep of a rejection (the reasons, never the payload) and how they
weigh in the worker's readiness."""

from __future__ import annotations

from datetime import UTC, datetime

from services.core.domain.model import Transport
from services.core.readiness import DATABASE, GROUP, KAFKA, Readiness
from services.gateway.hl7.normalize import Issue, normalize_header
from services.gateway.intake import rejection_for
from services.worker.app import worker_ready
from services.worker.lab_traffic import reasons_json
from tests.support import lab_message


def test_the_kept_reasons_are_those_the_lab_was_answered_and_no_payload() -> None:
    head = lab_message("LAB-R", "R-1")[:200]
    issue = Issue("OBX", 1, 5, None, "103", "E", "OBX-5: 'peut-être' is not a coded result", False)
    rejection = rejection_for(b"MSH|payload", Transport.MLLP, datetime.now(UTC), "AE",
                              normalize_header(head), [issue])
    assert reasons_json(rejection) == (
        '[{"segment": "OBX", "sequence": 1, "field": 5, "code": "103", "severity": "E", '
        '"text": "OBX-5: \'peut-être\' is not a coded result"}]'
    )


def test_a_lab_traffic_consumer_without_partitions_leaves_the_worker_ready_not_one_without_kafka() -> None:
    results, raw, rejections = (Readiness(KAFKA, DATABASE, GROUP) for _ in range(3))
    for readiness in (results, raw, rejections):
        readiness.ok(KAFKA)
        readiness.ok(DATABASE)
    results.ok(GROUP)
    raw.ok(GROUP)
    assert worker_ready([results], [raw, rejections])  # more workers than the rejected topic's partitions
    rejections.fail(KAFKA, "all brokers down")
    assert not worker_ready([results], [raw, rejections])
    rejections.ok(KAFKA)
    results.fail(GROUP, "partitions revoked")
    assert not worker_ready([results], [raw, rejections])
