"""`labflow labs …`: the lab registry (who may send, with which token or client certificate).

A lab is registered in test mode unless `--mode production` is given (SPEC §8.1: its results go
through the whole pipeline into test storage only); `labflow labs promote` moves it to production once
its latest conformance report (`labflow conformance report`) passed, and refuses otherwise (exit 2,
one line) unless `--force`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from services.core.config import load_settings
from services.core.db.engine import make_engine
from services.core.domain.model import LabMode
from services.core.errors import OperatorError
from services.gateway.labs import LabDirectory, PromotionRefused

app = typer.Typer(
    help="Lab registry: labs allowed to send (MLLP client certificates, HTTP tokens).", no_args_is_help=True
)


def _directory() -> LabDirectory:
    return LabDirectory(make_engine(load_settings().database_url_for("labs")))


@app.command("add")
def add(
    lab_id: Annotated[str, typer.Argument(help="the lab id, as the lab sends it in MSH-4.1")],
    name: Annotated[str, typer.Option(help="the laboratory's name")],
    finess: Annotated[str | None, typer.Option(help="FINESS number (9 characters)")] = None,
    cert_fingerprint: Annotated[
        str | None, typer.Option(help="SHA-256 fingerprint of the lab's MLLP client certificate")
    ] = None,
    mode: Annotated[
        LabMode, typer.Option(help="test: results kept apart until `labflow labs promote` (SPEC §8.1)")
    ] = LabMode.TEST,
    time_zone: Annotated[
        str | None,
        typer.Option(help="IANA time zone of the lab's HL7 times [default: its FINESS department's]"),
    ] = None,
) -> None:
    """Register a lab (enabled, in test mode by default). Give it an HTTP token with `labflow labs token`."""
    try:
        lab = _directory().add(lab_id, name, finess, cert_fingerprint, mode=mode, time_zone=time_zone)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"registered {lab.lab_id} ({lab.name}) in {lab.mode.value} mode, time zone {lab.time_zone}")


@app.command("list")
def list_labs() -> None:
    """Every registered lab (never a token: only whether one is set)."""
    for lab in _directory().all():
        fingerprint = f"{lab.cert_fingerprint[:16]}…" if lab.cert_fingerprint else "-"
        typer.echo(
            "\t".join(
                (
                    lab.lab_id,
                    "enabled" if lab.enabled else "disabled",
                    lab.finess or "-",
                    "token" if lab.token_hash else "no-token",
                    fingerprint,
                    lab.name,
                    lab.mode.value,
                    lab.time_zone,
                )
            )
        )


def _set_enabled(lab_id: str, enabled: bool) -> None:
    if not _directory().set_enabled(lab_id, enabled):
        typer.echo(f"error: no lab {lab_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{lab_id} {'enabled' if enabled else 'disabled'} (gateways apply it within their refresh)")


@app.command("disable")
def disable(lab_id: str) -> None:
    """Refuse the lab's messages (MLLP `AR`, HTTP 403) from the gateways' next registry refresh."""
    _set_enabled(lab_id, False)


@app.command("enable")
def enable(lab_id: str) -> None:
    """Accept the lab's messages again."""
    _set_enabled(lab_id, True)


@app.command("token")
def token(lab_id: str) -> None:
    """Issue a new HTTP bearer token for the lab (the previous one stops working); printed once."""
    issued = _directory().issue_token(lab_id)
    if issued is None:
        typer.echo(f"error: no lab {lab_id}", err=True)
        raise typer.Exit(1)
    typer.echo(issued)


@app.command("promote")
def promote(
    lab_id: str,
    force: Annotated[
        bool, typer.Option("--force", help="promote even without a passing conformance report")
    ] = False,
) -> None:
    """Move a lab from test to production mode: its next results count (SPEC §8.1)."""
    try:
        promoted = _directory().promote(lab_id, force=force)
    except PromotionRefused as exc:
        raise OperatorError(str(exc)) from exc
    if not promoted:
        typer.echo(f"error: no lab {lab_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{lab_id} promoted to production (gateways apply it within their refresh)")
