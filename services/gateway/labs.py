"""The lab registry (SPEC §8: labs authenticate and may only send as themselves).

`LabDirectory` is the database side (the `labs` table, used by `labflow labs …` and the registry);
`LabRegistry` is what the gateway asks on the hot path: an in-memory snapshot of every lab, reloaded
every `refresh_s` and, at most every `miss_refresh_s`, when a lab id it does not know shows up (so a
newly registered lab can send at once without a query per message).

Onboarding (SPEC §8.1): a lab is registered in `test` mode unless told otherwise; the gateway admits
it like any lab and marks its results (`LabResult.lab_mode`, in `services.gateway.intake`) so the worker
keeps them apart. `promote` moves it to `production` once its latest conformance report passed (the
`conformance_reports` table, written by `labflow conformance report`). Each lab carries the IANA time zone
its offset-less HL7 times are read in, by default its FINESS department's (overseas departments have
their own, `services.core.domain.geography.department_time_zone`).

HTTP tokens are `<lab id>.<secret>`; only a salted scrypt hash is stored (`services.core.lab_tokens`,
shared with the dashboard's lab portal). A verified token is remembered in memory (keyed by its
SHA-256 and the stored hash) so scrypt runs once per token and process, and issuing a new token
revokes the old one at the next refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from services.core.config import Settings
from services.core.db import tables
from services.core.db.engine import make_engine
from services.core.domain.geography import PARIS, department_time_zone, finess_department
from services.core.domain.model import LabMode
from services.core.lab_tokens import hash_token, new_token, token_fingerprint, token_lab_id, verify_token
from services.core.logs import get_logger
from services.gateway import issue_catalogue as catalogue
from services.gateway.hl7.normalize import APPLICATION_INTERNAL_ERROR, Issue, MessageHeader

log = get_logger(__name__)

MISS_REFRESH_S = 2.0
"""Longest time before a gateway sees a newly registered lab (reload on an unknown lab id)."""
_LAB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FINESS = re.compile(r"^(\d{2}|2A|2B)\d{7}$")

REGISTRY_UNAVAILABLE = Issue.about_message(
    APPLICATION_INTERNAL_ERROR, "the lab registry could not be read right now; send it again"
)


class RegistryUnavailable(Exception):
    """The registry has never been loaded: no lab can be admitted or refused yet."""


@dataclass(frozen=True, slots=True)
class Lab:
    lab_id: str
    name: str
    finess: str | None
    enabled: bool
    token_hash: str | None
    cert_fingerprint: str | None
    mode: LabMode = LabMode.PRODUCTION
    time_zone: str = PARIS.key


class PromotionRefused(Exception):
    """The lab's latest conformance report did not pass (or there is none)."""


def validate_lab_id(lab_id: str) -> str:
    """A lab id is what the lab sends in MSH-4.1: no HL7 delimiters, no spaces."""
    if not _LAB_ID.match(lab_id):
        raise ValueError(
            "lab id must be 1-64 characters among letters, digits, '.', '_' and '-' (as sent in MSH-4.1)"
        )
    return lab_id


def validate_finess(finess: str) -> str:
    value = finess.strip().upper()
    if not _FINESS.match(value):
        raise ValueError("FINESS must be 9 characters: a department (2 digits, 2A or 2B) then 7 digits")
    return value


def validate_time_zone(zone: str) -> str:
    """An IANA time zone name PostgreSQL and Python both know (`Europe/Paris`, `America/Cayenne`…)."""
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone '{zone[:40]}': give an IANA name such as Europe/Paris") from exc
    return zone


def default_time_zone(finess: str | None) -> str:
    """The lab's FINESS department's time zone; Europe/Paris when no FINESS is known."""
    return department_time_zone(finess_department(finess)).key if finess else PARIS.key


def normalize_fingerprint(fingerprint: str) -> str:
    """SHA-256 certificate fingerprint as 64 lowercase hex digits (colons and spaces are dropped)."""
    value = fingerprint.replace(":", "").replace(" ", "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError("certificate fingerprint must be a SHA-256 digest: 64 hex digits")
    return value


class LabDirectory:
    """The `labs` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(
        self,
        lab_id: str,
        name: str,
        finess: str | None,
        cert_fingerprint: str | None,
        *,
        mode: LabMode = LabMode.PRODUCTION,
        time_zone: str | None = None,
    ) -> Lab:
        """Register a lab; ValueError when it (or its certificate) is already registered.

        `time_zone` defaults to the FINESS department's."""
        checked_finess = validate_finess(finess) if finess else None
        lab = Lab(
            validate_lab_id(lab_id),
            name,
            checked_finess,
            True,
            None,
            normalize_fingerprint(cert_fingerprint) if cert_fingerprint else None,
            mode,
            validate_time_zone(time_zone) if time_zone else default_time_zone(checked_finess),
        )
        row = tables.Lab(
            lab_id=lab.lab_id,
            name=name,
            finess=lab.finess,
            enabled=True,
            cert_fingerprint=lab.cert_fingerprint,
            mode=lab.mode.value,
            time_zone=lab.time_zone,
        )
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
        except IntegrityError as exc:
            raise ValueError(f"lab {lab_id} or its certificate fingerprint is already registered") from exc
        return lab

    def all(self) -> list[Lab]:
        with Session(self.engine) as session:
            rows = session.scalars(select(tables.Lab).order_by(tables.Lab.lab_id)).all()
            return [
                Lab(
                    r.lab_id,
                    r.name,
                    r.finess,
                    r.enabled,
                    r.token_hash,
                    r.cert_fingerprint,
                    LabMode(r.mode),
                    r.time_zone,
                )
                for r in rows
            ]

    def promote(self, lab_id: str, *, force: bool = False) -> bool:
        """Move a lab to production; False when it is not registered. Unless `force`, PromotionRefused
        when its latest conformance report did not pass (or it has none)."""
        if not force:
            with Session(self.engine) as session:
                if session.get(tables.Lab, lab_id) is None:
                    return False
                passed = session.scalars(
                    select(tables.ConformanceReport.passed)
                    .where(tables.ConformanceReport.lab_id == lab_id)
                    .order_by(tables.ConformanceReport.generated_at.desc())
                    .limit(1)
                ).first()
            if passed is None:
                raise PromotionRefused(
                    f"lab {lab_id} has no conformance report: run `labflow conformance report {lab_id}` "
                    "(or promote with --force)"
                )
            if not passed:
                raise PromotionRefused(
                    f"the latest conformance report of lab {lab_id} did not pass: fix what it names and run "
                    f"`labflow conformance report {lab_id}` again (or promote with --force)"
                )
        return self._update(lab_id, mode=LabMode.PRODUCTION.value)

    def set_time_zone(self, lab_id: str, time_zone: str) -> bool:
        """False when the lab is not registered; ValueError for an unknown zone."""
        return self._update(lab_id, time_zone=validate_time_zone(time_zone))

    def set_enabled(self, lab_id: str, enabled: bool) -> bool:
        """False when the lab is not registered."""
        return self._update(lab_id, enabled=enabled)

    def issue_token(self, lab_id: str) -> str | None:
        """A new bearer token (replacing any previous one), or None when the lab is not registered."""
        token = new_token(lab_id)
        return token if self._update(lab_id, token_hash=hash_token(token)) else None

    def _update(self, lab_id: str, **values: object) -> bool:
        statement = (
            update(tables.Lab)
            .where(tables.Lab.lab_id == lab_id)
            .values(**values, updated_at=func.now())
            .returning(tables.Lab.lab_id)
        )
        with Session(self.engine) as session, session.begin():
            return session.execute(statement).first() is not None


@dataclass(frozen=True, slots=True)
class Authentication:
    lab: Lab | None
    """None: no lab has this token (401). A disabled lab is returned: it is told so (403)."""


def registry_for(settings: Settings) -> LabRegistry:
    directory = LabDirectory(make_engine(settings.database_url_for("gateway")))
    return LabRegistry(directory.all, refresh_s=settings.lab_registry_refresh_s)


class LabRegistry:
    """In-memory snapshot of the registry, for the gateway's hot path."""

    def __init__(
        self,
        load: Callable[[], Sequence[Lab]],
        *,
        refresh_s: float = 30.0,
        miss_refresh_s: float = MISS_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self.refresh_s = refresh_s
        self.miss_refresh_s = miss_refresh_s
        self._clock = clock
        self._labs: dict[str, Lab] | None = None
        self._by_fingerprint: dict[str, Lab] = {}
        self._loaded_at = float("-inf")
        self._refreshing: asyncio.Lock | None = None
        self._verified: dict[str, str] = {}  # sha256(token) -> the stored hash it was verified against
        self._task: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        return self._labs is not None

    def install(self, labs: Sequence[Lab]) -> None:
        self._labs = {lab.lab_id: lab for lab in labs}
        self._by_fingerprint = {lab.cert_fingerprint: lab for lab in labs if lab.cert_fingerprint}
        hashes = {lab.token_hash for lab in labs if lab.token_hash}
        self._verified = {k: v for k, v in self._verified.items() if v in hashes}
        self._loaded_at = self._clock()

    async def refresh(self) -> bool:
        """Reload the snapshot; on failure keep the previous one (False)."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            try:
                labs = await asyncio.to_thread(self._load)
            except SQLAlchemyError as exc:
                log.warning("lab registry not refreshed", error=str(exc).splitlines()[0])
                return False
            self.install(labs)
            return True

    async def start(self) -> None:
        """Load now (a failure is retried in the background), then refresh every `refresh_s`."""
        ok = await self.refresh()
        self._task = asyncio.create_task(self._run(ok))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, ok: bool) -> None:
        while True:
            await asyncio.sleep(self.refresh_s if ok else min(self.refresh_s, 2.0))
            ok = await self.refresh()

    async def find(self, lab_id: str) -> Lab | None:
        labs = self._labs
        lab = labs.get(lab_id) if labs is not None else None
        if lab is None and self._clock() - self._loaded_at >= self.miss_refresh_s:
            await self.refresh()
            labs = self._labs
            lab = labs.get(lab_id) if labs is not None else None
        if labs is None:
            raise RegistryUnavailable()
        return lab

    def time_zone(self, lab_id: str) -> ZoneInfo:
        """The zone the lab's offset-less timestamps are read in (SPEC §8.1), from the snapshot (no
        query); Europe/Paris for a lab it does not hold (such a lab is refused when the registry is
        enforced)."""
        lab = self._labs.get(lab_id) if self._labs is not None else None
        return ZoneInfo(lab.time_zone) if lab is not None else PARIS

    def in_test_mode(self, lab_id: str) -> bool:
        """Whether the lab is in test mode, from the snapshot it was just admitted from (no query)."""
        lab = self._labs.get(lab_id) if self._labs is not None else None
        return lab is not None and lab.mode is LabMode.TEST

    def lab_for_fingerprint(self, fingerprint: str) -> Lab | None:
        """The enabled lab whose client certificate has this SHA-256 fingerprint (MLLP mutual TLS)."""
        lab = self._by_fingerprint.get(normalize_fingerprint(fingerprint))
        return lab if lab is not None and lab.enabled else None

    async def admission_issue(self, header: MessageHeader) -> Issue | None:
        """Why a message from this sending facility is refused (AR), or None when the lab may send."""
        lab_id = header.sending_facility
        lab = await self.find(lab_id) if lab_id else None
        if lab is not None and lab.enabled:
            return None
        shown = lab_id[:40]
        reason = "is disabled in the lab registry" if lab is not None else "is not a registered lab"
        return catalogue.UNREGISTERED_LAB.at(
            "MSH", 1, 4, 1,
            f"MSH-4: sending facility '{shown}' {reason}; ask the LabFlow operators to register it",
        )

    async def authenticate(self, token: str) -> Authentication:
        lab_id = token_lab_id(token)
        lab = await self.find(lab_id) if lab_id else None
        if lab is None or lab.token_hash is None:
            return Authentication(None)
        key = token_fingerprint(token)
        if self._verified.get(key) == lab.token_hash:
            return Authentication(lab)
        if not await asyncio.to_thread(verify_token, token, lab.token_hash):
            return Authentication(None)
        self._verified[key] = lab.token_hash
        return Authentication(lab)
