"""The issue catalogue is the one definition of what a lab can get back; docs/errors.md is its output."""

from __future__ import annotations

from pathlib import Path

from services.gateway import issue_catalogue
from services.gateway.issues import ERROR_NAMES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def test_docs_errors_md_is_the_generators_output() -> None:
    # regenerate with: python -m services.gateway.issue_catalogue > docs/errors.md
    assert DOCS.read_text(encoding="utf-8") == issue_catalogue.render_markdown()


def test_every_kind_is_complete_and_defined_once() -> None:
    kinds = issue_catalogue.CATALOGUE
    assert len({k.id for k in kinds}) == len(kinds)
    for kind in kinds:
        assert kind.code in ERROR_NAMES and kind.severity in ("E", "W"), kind.id
        assert kind.cause and kind.hint and kind.example, kind.id
        assert not (kind.reject and kind.severity == "W"), kind.id


def test_an_issue_carries_the_hint_and_id_of_its_kind() -> None:
    issue = issue_catalogue.LOINC_UNKNOWN.at("OBX", 2, 3, 1, "OBX-3: unknown LOINC code 12345-6")

    assert (issue.code, issue.severity, issue.reject) == ("103", "E", False)
    assert (issue.kind, issue.hint) == ("LOINC_UNKNOWN", issue_catalogue.LOINC_UNKNOWN.hint)
