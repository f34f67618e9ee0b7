"""`labflow validate FILE…`: what the gateway would answer for these files, offline (SPEC §8.1).

Each file is validated as if `--lab` sent it over HTTP (the lab a token would authenticate): the
same submission use cases and intake checks as the gateway, through a publisher that writes nothing.
It needs neither Kafka nor PostgreSQL: the lab registry is not read (that the lab is registered and
enabled is checked by the gateway, and by `POST /v1/validate`, which uses it), and pseudonyms are
made with a throwaway key (they are never shown). Reference data comes from LABFLOW_REFERENCE_DIR.

Format: `--format`, else the extension (.hl7/.er7, .json/.fhir, .csv), else the content. Exit code 0
when every item would be accepted (AA), 1 otherwise, 2 on an operator error (a file that cannot be
read, a malformed `--lab`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from nacl.public import PrivateKey

from services.core.config import Settings, load_settings
from services.core.errors import OperatorError
from services.core.record_sizes import SizeLimits
from services.core.reference import load_reference
from services.gateway.identity import IdentityProtector
from services.gateway.intake import Intake
from services.gateway.labs import Lab, default_time_zone, validate_finess, validate_lab_id, validate_time_zone
from services.gateway.publish import NotPublishing
from services.gateway.validation import FORMATS, Format, ValidationReport, detect_format, validate


def offline_intake(settings: Settings, lab: Lab) -> Intake:
    """The gateway's intake without Kafka, PostgreSQL or the gateway's keys; `lab`'s times without an
    offset are read in its zone, as the gateway reads them from the registry."""
    protector = IdentityProtector(secrets.token_bytes(32), bytes(PrivateKey.generate().public_key))
    limit = SizeLimits.of(settings).record_bytes
    reference = load_reference(settings.reference_dir)
    return Intake(
        NotPublishing(limit), settings.topics, protector, None, reference.department_region, counted=False,
        lab_time_zone=lambda _: ZoneInfo(lab.time_zone),
    )


def offline_lab(lab_id: str, finess: str | None, time_zone: str | None = None) -> Lab:
    try:
        lab_finess = validate_finess(finess) if finess else None
        zone = validate_time_zone(time_zone) if time_zone else default_time_zone(lab_finess)
        return Lab(validate_lab_id(lab_id), lab_id, lab_finess, True, None, None, time_zone=zone)
    except ValueError as exc:
        raise OperatorError(f"--lab/--finess/--time-zone: {exc}") from exc


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise OperatorError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def render(name: str, report: ValidationReport) -> list[str]:
    """A readable report: a line per file, a line per item, a line per issue (and its hint)."""
    lines = [
        f"{name} ({report.format}): intake would answer {report.intake_status}, {report.would_be} "
        f"({report.accepted} accepted, {report.rejected} rejected)"
    ]
    if report.detail:
        lines.append(f"  {report.detail}")
    lines += [f"  warning: {w}" for w in report.warnings]
    for item in report.items:
        control = f" [{item.control_id}]" if item.control_id else ""
        lines.append(f"  {item.ref}{control}: {item.ack_code}")
        for issue in item.issues:
            where = f"{issue.location}: " if issue.location else ""
            lines.append(f"    {issue.severity} {issue.code} {where}{issue.text}")
            if issue.hint:
                lines.append(f"      hint: {issue.hint}")
        for c in item.counted:
            lines.append(
                f"    counted: {c.test_kind} {c.outcome} ({c.status}), collected {c.collection_day}, "
                f"department {c.department or '-'}, age class {c.age_class or '-'}"
            )
    return lines


def validate_files(
    files: Annotated[list[Path], typer.Argument(help="HL7 v2 (ER7, FHS/BHS batch), FHIR R4 Bundle or CSV")],
    lab: Annotated[str, typer.Option("--lab", help="the lab the files are sent as (its token's lab id)")],
    finess: Annotated[str | None, typer.Option(help="that lab's FINESS, when registered with one")] = None,
    time_zone: Annotated[str | None, typer.Option(
        "--time-zone", help="the lab's time zone (default: its FINESS department's, else Europe/Paris)"
    )] = None,
    kind: Annotated[
        str | None, typer.Option("--format", help="hl7, fhir or csv (default: by extension, then content)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the reports as JSON, a list (one per file)")] = (
        False
    ),
) -> None:
    """What the gateway would answer for these files, storing nothing (no Kafka, no database needed).
    Exit 0 when every item would be accepted (AA), 1 otherwise."""
    if kind is not None and kind not in FORMATS:
        raise OperatorError(f"--format: '{kind}' is not one of {', '.join(FORMATS)}")
    chosen: Format | None = next((f for f in FORMATS if f == kind), None)
    settings = load_settings()
    sender = offline_lab(lab, finess, time_zone)
    intake = offline_intake(settings, sender)
    bodies = [(path, _read(path)) for path in files]

    async def run() -> list[ValidationReport]:
        return [
            await validate(intake, sender, body, chosen or detect_format(body, name=path.name))
            for path, body in bodies
        ]

    reports = asyncio.run(run())
    named = [(str(path), report) for (path, _), report in zip(bodies, reports, strict=True)]
    if as_json:
        listed = [{"file": name, **report.model_dump(mode="json")} for name, report in named]
        typer.echo(json.dumps(listed, indent=2, ensure_ascii=False))
    else:
        for name, report in named:
            typer.echo("\n".join(render(name, report)))
    raise typer.Exit(0 if all(r.all_accepted for r in reports) else 1)
