"""`labflow rejected list|show|replay`: what was refused, why, and sending it again after a fix."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from services.core.config import load_settings
from services.core.domain.rejection import Rejection

if TYPE_CHECKING:
    from services.gateway.rejections import Replayed, ReplayLog

app = typer.Typer(
    help="Inspect and replay rejected payloads (lab.results.rejected.v1).", no_args_is_help=True
)


def _replay_log() -> ReplayLog:
    from services.core.db.engine import make_engine
    from services.gateway.rejections import ReplayLog

    return ReplayLog(make_engine(load_settings().database_url_for("gateway")))


def _replayed(done: Replayed | None) -> str:
    if done is None:
        return ""
    times = "" if done.replays == 1 else f" ({done.replays} times)"
    return f"  [replayed {done.last_replayed_at:%Y-%m-%d %H:%M} → {done.last_outcome}{times}]"


def _summary(r: Rejection) -> str:
    reason = r.reasons[0] if r.reasons else None
    where = f"{reason.segment}-{reason.field}" if reason and reason.segment and reason.field else "-"
    text = f"{where} {reason.code}: {reason.text}" if reason else ""
    more = f" (+{len(r.reasons) - 1} more)" if len(r.reasons) > 1 else ""
    return (
        f"{r.rejection_id}  {r.received_at:%Y-%m-%d %H:%M:%S}  {r.stage:7s}  {r.ack_code or '--'}  "
        f"lab={r.lab or '?'}  control_id={r.message_control_id or '?'}  {text}{more}"
    )


@app.command("list")
def list_rejections(
    lab: Annotated[str | None, typer.Option(help="only this lab")] = None,
    stage: Annotated[str | None, typer.Option(help="gateway, worker or tracing")] = None,
    limit: Annotated[int, typer.Option(help="the most recent N")] = 50,
) -> None:
    """One line per rejection: id, time, stage, ACK code, lab, control id and the first reason."""
    from services.gateway.rejections import read_rejections

    rows = [
        r
        for r in read_rejections(load_settings())
        if (lab is None or r.lab == lab) and (stage is None or r.stage == stage)
    ]
    rows.sort(key=lambda r: r.received_at)
    shown = rows[-limit:]
    replayed = _replay_log().find(r.rejection_id for r in shown)
    for r in shown:
        typer.echo(_summary(r) + _replayed(replayed.get(r.rejection_id)))
    typer.echo(f"{len(rows)} rejection(s)", err=True)


@app.command()
def show(
    rejection_id: str,
    payload: Annotated[
        bool, typer.Option("--payload", help="also print the raw payload (nominative)")
    ] = False,
) -> None:
    """Every reason of one rejection; the payload itself only with --payload."""
    from services.gateway.rejections import find_rejection

    rejection = find_rejection(load_settings(), rejection_id)
    if rejection is None:
        typer.echo(f"no rejection {rejection_id}", err=True)
        raise typer.Exit(1)
    typer.echo(_summary(rejection))
    for reason in rejection.reasons:
        location = "^".join(str(x) for x in (reason.segment, reason.sequence, reason.field) if x is not None)
        typer.echo(f"  [{reason.severity}] {location or '-'} code {reason.code}: {reason.text}")
    if not rejection.payload_kept:
        typer.echo(
            f"  payload not kept (over the size limit): {rejection.payload_size} bytes, "
            f"SHA-256 {rejection.payload_sha256}, transport {rejection.transport or '-'}"
        )
        return
    typer.echo(f"  payload: {len(rejection.payload)} bytes, transport {rejection.transport or '-'}")
    if payload:
        typer.echo(rejection.payload.decode("utf-8", errors="replace").replace("\r", "\n"))


@app.command()
def replay(
    rejection_ids: Annotated[list[str] | None, typer.Argument(help="rejection ids")] = None,
    all_from_lab: Annotated[str | None, typer.Option("--lab", help="every rejection of this lab")] = None,
    again: Annotated[bool, typer.Option("--again", help="also those already replayed")] = False,
) -> None:
    """Submit rejected payloads again through the current validation; print what became of each.
    An item already replayed is skipped (and named) unless --again."""
    from services.gateway.bootstrap import build_intake
    from services.gateway.labs import registry_for
    from services.gateway.rejections import read_rejections, replay_publisher
    from services.gateway.rejections import replay as replay_one

    settings = load_settings()
    wanted = set(rejection_ids or [])
    if not wanted and all_from_lab is None:
        typer.echo("name rejection ids or --lab LAB", err=True)
        raise typer.Exit(2)
    chosen = [
        r
        for r in read_rejections(settings)
        if r.rejection_id in wanted or (all_from_lab is not None and r.lab == all_from_lab)
    ]
    missing = wanted - {r.rejection_id for r in chosen}
    log = _replay_log()
    earlier = log.find(r.rejection_id for r in chosen)
    skipped = [r for r in chosen if r.rejection_id in earlier and not again]
    chosen = [r for r in chosen if r not in skipped]
    for r in skipped:
        typer.echo(f"{r.rejection_id}: already replayed{_replayed(earlier[r.rejection_id])}; "
                   "add --again to replay it again", err=True)
    publisher = replay_publisher(settings)

    async def run() -> None:
        # replayed payloads pass the same admission as new ones: a lab must be registered and enabled
        registry = registry_for(settings) if settings.lab_registry_enforced else None
        if registry is not None:
            await registry.start()
        intake = build_intake(settings, publisher, registry)
        try:
            for r in chosen:
                outcome = await replay_one(settings, intake, publisher, r)
                log.record(r.rejection_id, outcome)
                typer.echo(f"{r.rejection_id}: {outcome}")
        finally:
            if registry is not None:
                await registry.stop()

    try:
        asyncio.run(run())
    finally:
        publisher.close()
    for rejection_id in sorted(missing):
        typer.echo(f"{rejection_id}: not found", err=True)
    if missing or skipped:
        raise typer.Exit(1)
