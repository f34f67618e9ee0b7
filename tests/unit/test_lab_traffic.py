"""What the lab-traffic consumer keeps of a rejection: the reasons the lab was answered, never the payload."""

from __future__ import annotations

from datetime import UTC, datetime

from services.core.domain.model import Transport
from services.gateway.hl7.normalize import Issue, normalize_header
from services.gateway.intake import rejection_for
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
