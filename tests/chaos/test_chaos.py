"""The chaos suite's most telling scenarios inside `make test` (≈ 4 min on 2 cores): kill -9 one
broker, PostgreSQL fast shutdown and restart, kill -9 of the services — on a 3-broker KRaft cluster,
PostgreSQL and Toxiproxy that this module starts itself (load_tests/chaos.py) and always stops.
Shorter traffic than `make chaos`, same checks; a missing binary or service fails, never skips.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from load_tests.chaos import (
    PYTEST_SUBSET,
    SCENARIOS,
    ChaosStack,
    Options,
    chaos_stack,
    failures,
    run_scenario,
)
from services.core.config import load_settings

pytestmark = pytest.mark.chaos
# bounded waits short enough that a failing run (e.g. a worker in a crash loop) stays near 4 minutes
OPTIONS = Options(warmup_s=5.0, after_s=10.0, kills=3, drain_s=40.0, recover_s=30.0)


@pytest.fixture(scope="module")
def stack() -> Iterator[ChaosStack]:
    with chaos_stack(state_dir=load_settings().state_dir / "chaos-pytest") as started:
        yield started


@pytest.mark.parametrize("name", PYTEST_SUBSET)
def test_scenario_loses_nothing_doubles_nothing_and_recovers(stack: ChaosStack, name: str) -> None:
    row = run_scenario(stack, SCENARIOS[name], OPTIONS)
    problems = failures(row)
    assert not problems, f"{name}: {'; '.join(problems)} (details: {row.get('folder')})"
