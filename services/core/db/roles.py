"""Login roles of the database clients (SPEC §8: one role per service, least privilege).

The migrations create one NOLOGIN group role per client and grant it what that client needs
(`migrations/versions/0007_service_roles.py`). What connects is a LOGIN role, member of its client's
group role, named with its password in `LABFLOW_<CLIENT>_DATABASE_URL`. `labflow db upgrade` creates or
updates those login roles from the URLs it is given (the local stack generates them, a platform may
inject them), so the password lives only in configuration, and reaches the server as a SCRAM verifier
computed here, never in clear (statement logs included).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from services.core.config import DATABASE_CLIENTS, DatabaseClient, Settings
from services.core.db.engine import libpq_url

GROUP_ROLES: dict[DatabaseClient, str] = {client: f"labflow_{client}" for client in DATABASE_CLIENTS}


def with_credentials(url: str, user: str, password: str) -> str:
    """`url` (same server and database) for another user."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def credentials(url: str) -> tuple[str | None, str | None]:
    parts = urlsplit(url)
    return (
        unquote(parts.username) if parts.username is not None else None,
        unquote(parts.password) if parts.password is not None else None,
    )


def ensure_login_role(conn: psycopg.Connection[Any], login: str, password: str | None, group: str) -> None:
    """`login` can log in (with `password` when given), holds no attribute, and is a member of `group`."""
    attributes: sql.Composable = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION INHERIT")
    if password is not None:
        verifier = conn.pgconn.encrypt_password(password.encode(), login.encode(), b"scram-sha-256")
        attributes = sql.SQL("{} PASSWORD {}").format(attributes, sql.Literal(verifier.decode()))
    exists = conn.execute(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls "
        "FROM pg_roles WHERE rolname = %s",
        (login,),
    ).fetchone()
    if exists and exists[0]:
        # a URL naming an administrator by mistake must not strip its attributes, nor run a service as it
        raise RuntimeError(f"the database role {login} is privileged: a service must not log in as it")
    verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
    conn.execute(sql.SQL("{} {} WITH {}").format(verb, sql.Identifier(login), attributes))
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(login)))


def sync_login_roles(settings: Settings) -> dict[DatabaseClient, str]:
    """Login roles of every client whose own URL names a user other than the owner's: client -> role."""
    admin = settings.require_database()
    owner, _ = credentials(admin)
    done: dict[DatabaseClient, str] = {}
    with psycopg.connect(libpq_url(admin), autocommit=True) as conn:
        for client in DATABASE_CLIENTS:
            url: str | None = getattr(settings, f"{client}_database_url")
            if not url:
                continue
            login, password = credentials(url)
            if login is None or login == owner:
                continue
            ensure_login_role(conn, login, password, GROUP_ROLES[client])
            done[client] = login
    return done


def drop_login_roles(admin_url: str, logins: list[str]) -> None:
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        for login in logins:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login)))
