"""Per-client database URLs (SPEC §8): fallback to the owner's URL, local passwords generated once."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.config import DATABASE_CLIENTS, Settings
from services.core.db.roles import credentials, with_credentials
from services.stack.local import _write_env

OWNER = "postgresql://labflow:owner-secret@127.0.0.1:15432/labflow"


def test_a_client_without_its_own_url_uses_the_owner_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for client in DATABASE_CLIENTS:
        monkeypatch.delenv(f"LABFLOW_{client.upper()}_DATABASE_URL", raising=False)
    worker = "postgresql://worker:w@db:5432/labflow"
    settings = Settings(database_url=OWNER, worker_database_url=worker)
    assert settings.database_url_for("worker") == worker
    assert {settings.database_url_for(c) for c in DATABASE_CLIENTS if c != "worker"} == {OWNER}


def test_a_scratch_database_is_used_by_every_client_as_its_owner() -> None:
    settings = Settings(database_url=OWNER, worker_database_url="postgresql://worker:w@db/labflow")
    scratch = settings.with_owner_database(OWNER.replace("/labflow", "/bench"))
    assert {scratch.database_url_for(c) for c in DATABASE_CLIENTS} == {scratch.database_url}


def test_credentials_survive_characters_that_urls_reserve() -> None:
    url = with_credentials(OWNER, "labflow_gateway_login", "p@ss:w/rd%")
    assert url.startswith("postgresql://labflow_gateway_login:") and url.endswith("@127.0.0.1:15432/labflow")
    assert credentials(url) == ("labflow_gateway_login", "p@ss:w/rd%")


def read_env(path: str) -> dict[str, str]:
    lines = Path(path).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_the_local_stack_generates_each_client_password_once_and_follows_the_server(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    first = read_env(_write_env(settings, {"LABFLOW_DATABASE_URL": OWNER}, local_database=OWNER))
    moved = OWNER.replace("15432", "15832")
    second = read_env(_write_env(settings, {"LABFLOW_DATABASE_URL": moved}, local_database=moved))
    users = set()
    for client in DATABASE_CLIENTS:
        key = f"LABFLOW_{client.upper()}_DATABASE_URL"
        user, password = credentials(first[key])
        assert user == f"labflow_{client}_login" and password and len(password) >= 32
        assert credentials(second[key]) == (user, password)
        assert second[key].endswith("@127.0.0.1:15832/labflow")
        users.add(user)
    assert len(users) == len(DATABASE_CLIENTS)
    assert len({credentials(first[f"LABFLOW_{c.upper()}_DATABASE_URL"])[1] for c in DATABASE_CLIENTS}) == len(
        DATABASE_CLIENTS
    )
    assert (tmp_path / "labflow.env").stat().st_mode & 0o077 == 0


def test_an_external_database_keeps_no_local_client_url(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    _write_env(settings, {"LABFLOW_DATABASE_URL": OWNER}, local_database=OWNER)
    env = read_env(_write_env(settings, {}))
    assert not [key for key in env if key.endswith("_DATABASE_URL") and key != "LABFLOW_DATABASE_URL"]
