import pytest

from services.core.domain.contracts import CONTRACTS, SCHEMAS_DIR, schema_text


@pytest.mark.parametrize("topic", sorted(CONTRACTS))
def test_committed_schema_matches_the_model(topic: str) -> None:
    path = SCHEMAS_DIR / f"{topic}.schema.json"
    assert path.exists(), f"{path} is missing: run `labflow schemas`"
    assert path.read_text() == schema_text(CONTRACTS[topic]), (
        f"{path.name} drifted from the code: run `labflow schemas` and review the contract change"
    )
