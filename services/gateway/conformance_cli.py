"""`labflow conformance …`: the onboarding plan a LIS must send, and the report of what a lab sent.

`report` exits 0 when every scenario passed and 1 otherwise (so a script or a CI job can gate on it);
either way the Markdown and JSON reports are written and the outcome is stored for `labflow labs
promote`. An unknown lab is a one-line error (exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.core.config import load_settings
from services.core.db.engine import make_engine
from services.core.domain.conformance import Status, plan_text
from services.core.errors import OperatorError
from services.gateway.conformance import ConformanceRecords, write_report
from services.gateway.rejections import read_rejections

app = typer.Typer(
    help="Lab onboarding: the conformance plan and a lab's conformance report (SPEC §8.1).",
    no_args_is_help=True,
)


@app.command("plan")
def plan() -> None:
    """The scenarios a LIS must send in test mode, with their control ids and the expected answers."""
    typer.echo(plan_text(), nl=False)


@app.command("report")
def report(
    lab_id: str,
    out: Annotated[Path, typer.Option(help="folder for the Markdown and JSON reports")] = Path("."),
) -> None:
    """Check what the lab sent (test storage and its rejections) against the plan."""
    settings = load_settings()
    records = ConformanceRecords(make_engine(settings.database_url_for("labs")))
    if not records.lab_exists(lab_id):
        raise OperatorError(f"no lab {lab_id} in the registry: register it with `labflow labs add`")
    written = write_report(records, lab_id, read_rejections(settings), out)
    result = written.report
    for outcome in result.outcomes:
        if outcome.status is not Status.PASSED:
            typer.echo(f"{outcome.scenario.code} {outcome.status.value}: {'; '.join(outcome.reasons)}")
    verdict = "passed" if result.passed else "NOT passed"
    typer.echo(
        f"{lab_id}: {verdict} ({result.count(Status.PASSED)} passed, {result.count(Status.FAILED)} failed, "
        f"{result.count(Status.MISSING)} missing); wrote {written.markdown} and {written.json}"
    )
    if not result.passed:
        raise typer.Exit(1)
