"""The lab registry against the real database: `labflow labs …`, tokens, admission, refreshes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from labflow_testkit.infrastructure import settings_env
from services.cli import app
from services.core.config import REPO_ROOT, Settings
from services.core.db import tables
from services.core.db.engine import make_engine
from services.core.domain.model import LabMode
from services.gateway.hl7.normalize import MessageHeader, normalize_header
from services.gateway.labs import Lab, LabDirectory, LabRegistry, PromotionRefused, RegistryUnavailable

pytestmark = pytest.mark.integration
FINGERPRINT = "AB:" * 31 + "CD"


@pytest.fixture
def engine(fresh_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(fresh_settings.database_url_for("labs"))
    yield engine
    engine.dispose()


class LabsCli:
    """`labflow labs …` against the fresh database."""

    def __init__(self, settings: Settings) -> None:
        self.runner, self.env = CliRunner(), settings_env(settings)

    def run(self, *args: str) -> Result:
        return self.runner.invoke(app, ["labs", *args], env=self.env)

    def __call__(self, *args: str) -> str:
        """The output of a command that must succeed (exit 0)."""
        result = self.run(*args)
        assert result.exit_code == 0, result.output
        return result.output


@pytest.fixture
def labflow(fresh_settings: Settings) -> LabsCli:
    return LabsCli(fresh_settings)


def header(lab: str) -> MessageHeader:
    parsed = normalize_header(f"MSH|^~\\&|LIS|{lab}|LABFLOW|LABFLOW|20240110||ORU^R01|C1|P|2.5.1")
    assert parsed is not None
    return parsed


def test_the_cli_registers_lists_issues_tokens_and_disables(labflow: LabsCli, engine: Engine) -> None:
    assert "registered LAB-CLI" in labflow(
        "add", "LAB-CLI", "--name", "Laboratoire CLI", "--finess", "2a0000018",
        "--cert-fingerprint", FINGERPRINT,
    )
    token = labflow("token", "LAB-CLI").strip()
    assert token.startswith("LAB-CLI.") and len(token) > 40
    listed = labflow("list")
    assert listed.split("\t")[:4] == ["LAB-CLI", "enabled", "2A0000018", "token"]
    assert token not in listed
    assert "LAB-CLI disabled" in labflow("disable", "LAB-CLI")
    assert "disabled" in labflow("list")

    with engine.connect() as conn:
        stored = conn.execute(text("SELECT token_hash, cert_fingerprint FROM labs")).one()
    assert stored.token_hash.startswith("scrypt$") and token not in stored.token_hash
    assert stored.cert_fingerprint == "ab" * 31 + "cd"

    duplicate = labflow.run("add", "LAB-CLI", "--name", "again")
    assert duplicate.exit_code == 1 and "already registered" in duplicate.output
    for args in (["add", "LAB|X", "--name", "x"], ["add", "LAB-Y", "--name", "y", "--finess", "123"],
                 ["token", "LAB-NONE"], ["disable", "LAB-NONE"]):
        assert labflow.run(*args).exit_code == 1


def test_the_registry_admits_registered_enabled_labs_only(engine: Engine) -> None:
    directory = LabDirectory(engine)
    directory.add("LAB-A", "A", None, None)
    directory.add("LAB-B", "B", None, FINGERPRINT)
    directory.set_enabled("LAB-B", False)
    registry = LabRegistry(directory.all, refresh_s=3600, miss_refresh_s=0)

    async def check() -> None:
        await registry.refresh()
        assert await registry.admission_issue(header("LAB-A")) is None
        disabled = await registry.admission_issue(header("LAB-B"))
        unknown = await registry.admission_issue(header("LAB-Z"))
        assert disabled is not None and unknown is not None
        assert (disabled.code, disabled.reject, disabled.field) == ("204", True, 4)
        assert "'LAB-B' is disabled in the lab registry" in disabled.text
        assert "'LAB-Z' is not a registered lab" in unknown.text
        # a lab registered after the last load is seen at once (reload on an unknown id)
        directory.add("LAB-Z", "Z", None, None)
        assert await registry.admission_issue(header("LAB-Z")) is None

    asyncio.run(check())
    assert registry.lab_for_fingerprint(FINGERPRINT) is None  # LAB-B is disabled
    directory.set_enabled("LAB-B", True)
    asyncio.run(registry.refresh())
    found = registry.lab_for_fingerprint(FINGERPRINT.lower())
    assert found is not None and found.lab_id == "LAB-B"


def test_tokens_authenticate_their_lab_until_replaced(engine: Engine) -> None:
    directory = LabDirectory(engine)
    directory.add("LAB-T", "T", None, None)
    first = directory.issue_token("LAB-T")
    assert first is not None
    registry = LabRegistry(directory.all, refresh_s=3600, miss_refresh_s=3600)

    async def check() -> None:
        await registry.refresh()
        authenticated = await registry.authenticate(first)
        assert authenticated.lab is not None and authenticated.lab.lab_id == "LAB-T"
        assert (await registry.authenticate(first)).lab is not None  # from the verified-token cache
        assert (await registry.authenticate(first[:-1] + "x")).lab is None
        assert (await registry.authenticate("LAB-OTHER." + first.split(".", 1)[1])).lab is None
        assert (await registry.authenticate("no-dot")).lab is None
        second = directory.issue_token("LAB-T")
        assert second is not None
        await registry.refresh()
        assert (await registry.authenticate(first)).lab is None
        assert (await registry.authenticate(second)).lab is not None

    asyncio.run(check())


def test_a_registry_never_loaded_is_unavailable_and_a_loaded_one_survives_outages() -> None:
    calls = {"n": 0}
    labs = [Lab("LAB-A", "A", None, True, None, None)]

    def load() -> list[Lab]:
        calls["n"] += 1
        if calls["n"] != 3:
            raise OperationalError("SELECT", {}, Exception("connection refused"))
        return labs

    registry = LabRegistry(load, refresh_s=3600, miss_refresh_s=0)

    async def check() -> None:
        assert not await registry.refresh()
        with pytest.raises(RegistryUnavailable):
            await registry.find("LAB-A")
        assert await registry.find("LAB-A") is not None  # the retry on a miss loaded it
        assert await registry.find("LAB-Z") is None  # reload fails: the last snapshot stays
        assert registry.loaded

    asyncio.run(check())


def test_a_new_lab_starts_in_test_mode_with_its_department_time_zone(
    labflow: LabsCli, engine: Engine
) -> None:
    assert "in test mode, time zone Indian/Reunion" in labflow(
        "add", "LAB-974", "--name", "Laboratoire de La Réunion", "--finess", "974000019"
    )
    assert "time zone America/Cayenne" in labflow(
        "add", "LAB-973", "--name", "Cayenne", "--finess", "973000019"
    )
    assert "in production mode, time zone Europe/Paris" in labflow(
        "add", "LAB-75", "--name", "Paris", "--finess", "750000019", "--mode", "production"
    )
    assert "time zone Europe/Paris" in labflow("add", "LAB-NOFINESS", "--name", "Sans FINESS")
    assert "time zone America/Martinique" in labflow(
        "add", "LAB-TZ", "--name", "Explicit", "--finess", "750000027", "--time-zone", "America/Martinique"
    )
    wrong = labflow.run("add", "LAB-BAD", "--name", "x", "--time-zone", "Mars/Olympus")
    assert wrong.exit_code == 1 and "unknown time zone 'Mars/Olympus'" in wrong.output
    listed = {line.split("\t")[0]: line.split("\t")[-2:] for line in labflow("list").splitlines()}
    assert listed["LAB-974"] == ["test", "Indian/Reunion"]
    assert listed["LAB-75"] == ["production", "Europe/Paris"]
    by_id = {lab.lab_id: lab for lab in LabDirectory(engine).all()}
    assert (by_id["LAB-974"].mode, by_id["LAB-974"].time_zone) == (LabMode.TEST, "Indian/Reunion")


def test_promote_needs_a_passing_conformance_report_unless_forced(
    fresh_settings: Settings, engine: Engine
) -> None:
    directory = LabDirectory(engine)
    directory.add("LAB-P", "P", None, None, mode=LabMode.TEST)
    directory.add("LAB-F", "F", None, None, mode=LabMode.TEST)

    refused = subprocess.run(
        [sys.executable, "-m", "services.cli", "labs", "promote", "LAB-P"],
        env=settings_env(fresh_settings), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "has no conformance report" in refused.stderr

    def report(passed: bool) -> None:
        with Session(engine) as session, session.begin():
            session.add(tables.ConformanceReport(lab_id="LAB-P", passed=passed, report={}))

    report(True)
    report(False)  # the latest one counts
    with pytest.raises(PromotionRefused, match="did not pass"):
        directory.promote("LAB-P")
    report(True)
    assert directory.promote("LAB-P")
    assert directory.promote("LAB-F", force=True)
    assert not directory.promote("LAB-NONE", force=True)
    assert {lab.lab_id: lab.mode for lab in directory.all()} == {
        "LAB-P": LabMode.PRODUCTION, "LAB-F": LabMode.PRODUCTION,
    }


def test_the_registry_knows_which_labs_are_in_test_mode() -> None:
    registry = LabRegistry(lambda: [], refresh_s=3600)
    registry.install([Lab("LAB-T", "T", None, True, None, None, LabMode.TEST),
                      Lab("LAB-P", "P", None, True, None, None)])
    assert registry.in_test_mode("LAB-T")
    assert not registry.in_test_mode("LAB-P") and not registry.in_test_mode("LAB-UNKNOWN")
