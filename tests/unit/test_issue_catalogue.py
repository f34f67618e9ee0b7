"""The issue catalogue is the one definition of what a lab can get back; docs/errors.md is its output."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from services.core.domain.model import Transport
from services.gateway import issue_catalogue
from services.gateway.hl7.normalize import normalize_oru
from services.gateway.identity import IdentityProtector
from services.gateway.issues import ERROR_NAMES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
PORTAL_HINTS = Path(__file__).resolve().parents[2] / "services" / "dashboard" / "static" / "hints.fr.json"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7"
NOW = datetime(2024, 1, 16, tzinfo=UTC)
PROTECTOR = IdentityProtector(b"0123456789abcdef0123456789abcdef", bytes(PrivateKey.generate().public_key))


def test_docs_errors_md_is_the_generators_output() -> None:
    # regenerate with: python -m services.gateway.issue_catalogue > docs/errors.md
    assert DOCS.read_text(encoding="utf-8") == issue_catalogue.render_markdown()


def test_the_portals_french_hints_are_the_generators_output() -> None:
    # regenerate with:
    # python -m services.gateway.issue_catalogue --portal-hints > services/dashboard/static/hints.fr.json
    assert PORTAL_HINTS.read_text(encoding="utf-8") == issue_catalogue.render_portal_hints()


def test_every_kind_is_complete_and_defined_once() -> None:
    kinds = issue_catalogue.CATALOGUE
    assert len({k.id for k in kinds}) == len(kinds)
    for kind in kinds:
        assert kind.code in ERROR_NAMES and kind.severity in ("E", "W"), kind.id
        assert kind.cause and kind.hint and kind.hint_fr and kind.example, kind.id
        assert not (kind.reject and kind.severity == "W"), kind.id


def test_an_issue_carries_the_hint_and_id_of_its_kind() -> None:
    issue = issue_catalogue.LOINC_UNKNOWN.at("OBX", 2, 3, 1, "OBX-3: unknown LOINC code 12345-6")

    assert (issue.code, issue.severity, issue.reject) == ("103", "E", False)
    assert (issue.kind, issue.hint) == ("LOINC_UNKNOWN", issue_catalogue.LOINC_UNKNOWN.hint)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("a[er]_*.hl7")))
def test_every_issue_of_a_refused_message_comes_from_the_catalogue(name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    normalized = normalize_oru(raw, received_at=NOW, transport=Transport.MLLP, protector=PROTECTOR, now=NOW)
    assert normalized.issues
    kinds = {kind.id: kind for kind in issue_catalogue.CATALOGUE}
    for issue in normalized.issues:
        kind = kinds[issue.kind]
        assert (issue.code, issue.severity, issue.reject, issue.hint) == (
            kind.code, kind.severity, kind.reject, kind.hint)
