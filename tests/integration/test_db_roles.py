"""Least privilege in PostgreSQL (SPEC §8): each client's role may do what its service needs, nothing else.

The policy below is stated a second time, independently of migration 0007, and compared with the
privileges a migrated database really holds: a table a later migration adds without deciding who may
touch it fails here. The e2e tests then run every service with its own role
(labflow_testkit/infrastructure.py).
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from alembic import command

from services.core.config import DATABASE_CLIENTS, DatabaseClient, Settings
from services.core.db.engine import libpq_url, make_engine
from services.core.db.migrate import alembic_config, upgrade
from services.core.db.roles import GROUP_ROLES, credentials, sync_login_roles, with_credentials
from services.dashboard.queries import refresh_rollups

pytestmark = pytest.mark.integration

RW = "SELECT, INSERT, UPDATE"
# relation -> group role -> privileges; every table, view and sequence of the schema is listed
POLICY: dict[str, dict[str, str]] = {
    "alembic_version": {},
    "department_regions": {},  # read by the rollups' owner only
    "results": {"labflow_worker": RW},
    "consumer_offsets": {"labflow_worker": RW},
    "persons": {"labflow_worker": RW},
    "aggregates": {"labflow_worker": RW, "labflow_opendata": "SELECT", "labflow_dashboard": "SELECT"},
    "lab_daily": {"labflow_worker": RW, "labflow_dashboard": "SELECT"},
    "lab_delays": {"labflow_worker": RW, "labflow_dashboard": "SELECT"},
    "cases": {"labflow_worker": RW},
    "outbox": {"labflow_worker": RW, "labflow_purge": "SELECT, UPDATE (payload)"},
    "outbox_id_seq": {"labflow_worker": "USAGE"},
    "person_identities": {"labflow_worker": RW, "labflow_purge": "SELECT, DELETE"},
    "tracing_deliveries": {"labflow_tracing": RW, "labflow_purge": "SELECT, UPDATE (sealed_identity)"},
    "tracing_deliveries_id_seq": {"labflow_tracing": "USAGE"},
    "labs": {"labflow_gateway": "SELECT", "labflow_labs": RW,
             "labflow_dashboard": "SELECT (lab_id), SELECT (name), SELECT (token_hash), SELECT (enabled), "
                                  "SELECT (mode)"},
    "submissions": {"labflow_gateway": "SELECT, INSERT"},
    "rejection_replays": {"labflow_gateway": RW, "labflow_dashboard": "SELECT"},
    "lab_acks": {"labflow_worker": RW, "labflow_dashboard": "SELECT"},
    "lab_rejections": {"labflow_worker": RW, "labflow_dashboard": "SELECT"},
    "test_results": {"labflow_worker": "INSERT", "labflow_labs": "SELECT"},
    "conformance_reports": {"labflow_labs": "SELECT, INSERT", "labflow_dashboard": "SELECT"},
    "dashboard_region_daily": {"labflow_dashboard": "SELECT"},
    "dashboard_national_daily": {"labflow_dashboard": "SELECT"},
}

RELATIONS = """
SELECT relname FROM pg_class
WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
"""
# privileges held by anyone but the owner, on relations and on their columns (grantee 0 = PUBLIC)
GRANTED = """
SELECT c.relname, coalesce(r.rolname, 'PUBLIC'), a.privilege_type
FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE c.relnamespace = 'public'::regnamespace AND a.grantee <> c.relowner
UNION ALL
SELECT c.relname, coalesce(r.rolname, 'PUBLIC'), a.privilege_type || ' (' || att.attname || ')'
FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid
CROSS JOIN LATERAL aclexplode(att.attacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE c.relnamespace = 'public'::regnamespace AND a.grantee <> c.relowner
"""


def granted_privileges(settings: Settings) -> dict[str, dict[str, set[str]]]:
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        relations = {str(r[0]) for r in conn.execute(RELATIONS).fetchall()}
        found: dict[str, dict[str, set[str]]] = {name: {} for name in relations}
        for relation, role, privilege in conn.execute(GRANTED).fetchall():
            found[relation].setdefault(role, set()).add(privilege)
    return found


def expected_privileges() -> dict[str, dict[str, set[str]]]:
    return {
        relation: {role: set(privileges.split(", ")) for role, privileges in grants.items()}
        for relation, grants in POLICY.items()
    }


def test_every_relation_has_exactly_the_grants_of_the_policy(fresh_settings: Settings) -> None:
    found = granted_privileges(fresh_settings)
    unlisted = sorted(set(found) - set(POLICY))
    assert not unlisted, f"relations with no privilege policy (grant them in their migration): {unlisted}"
    assert found == expected_privileges()


def test_the_database_and_the_refresh_function_are_closed_to_public(fresh_settings: Settings) -> None:
    with psycopg.connect(libpq_url(fresh_settings.require_database())) as conn:
        database = conn.execute(
            "SELECT coalesce(r.rolname, 'PUBLIC'), a.privilege_type FROM pg_database d "
            "CROSS JOIN LATERAL aclexplode(d.datacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee "
            "WHERE d.datname = current_database() AND a.grantee <> d.datdba"
        ).fetchall()
        function = conn.execute(
            "SELECT coalesce(r.rolname, 'PUBLIC'), a.privilege_type FROM pg_proc p "
            "CROSS JOIN LATERAL aclexplode(p.proacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee "
            "WHERE p.proname = 'dashboard_refresh_rollups' AND a.grantee <> p.proowner"
        ).fetchall()
    expected = {(role, "CONNECT") for role in GROUP_ROLES.values()} | {("labflow_worker", "TEMPORARY")}
    assert set(database) == expected
    assert function == [("labflow_dashboard", "EXECUTE")]


def test_no_service_role_holds_a_cluster_privilege(shared_settings: Settings) -> None:
    logins = {client: credentials(shared_settings.database_url_for(client))[0] for client in DATABASE_CLIENTS}
    with psycopg.connect(libpq_url(shared_settings.require_database())) as conn:
        for client, group in GROUP_ROLES.items():
            for role, can_login in ((group, False), (logins[client], True)):
                attributes = conn.execute(
                    "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
                    "FROM pg_roles WHERE rolname = %s",
                    (role,),
                ).fetchone()
                assert attributes == (can_login, False, False, False, False, False), role
            member_of = conn.execute(
                "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
                (logins[client],),
            ).fetchall()
            assert member_of == [(group,)]


# each statement touches no row: the privilege check is what is tested
ALLOWED: list[tuple[DatabaseClient, str]] = [
    ("gateway", "SELECT lab_id, token_hash, cert_fingerprint FROM labs"),
    ("gateway", "INSERT INTO submissions SELECT * FROM submissions WHERE false"),
    ("worker", "INSERT INTO results SELECT * FROM results WHERE false"),
    ("worker", "UPDATE results SET status = status WHERE false"),
    ("worker", "UPDATE aggregates SET p = p + 1 WHERE false"),
    ("worker", "INSERT INTO outbox (topic, key, payload) SELECT topic, key, payload FROM outbox WHERE false"),
    ("worker", "SELECT * FROM person_identities FOR UPDATE"),
    ("worker", "SELECT nextval('outbox_id_seq')"),
    ("worker", "CREATE TEMP TABLE incoming_results (LIKE results INCLUDING DEFAULTS)"),
    ("tracing", "UPDATE tracing_deliveries SET attempts = attempts + 1 WHERE false"),
    ("tracing", "SELECT nextval('tracing_deliveries_id_seq')"),
    ("opendata", "SELECT count(*) FROM aggregates"),
    ("dashboard", "SELECT count(*) FROM dashboard_region_daily, dashboard_national_daily, lab_delays"),
    ("dashboard", "SELECT dashboard_refresh_rollups()"),
    ("dashboard", "SELECT lab_id, token_hash, enabled FROM labs"),  # the lab portal verifies lab tokens
    ("dashboard", "SELECT count(*) FROM lab_acks, lab_rejections, rejection_replays"),
    ("worker", "UPDATE lab_acks SET ae = ae + 1 WHERE false"),
    ("worker", "INSERT INTO lab_rejections SELECT * FROM lab_rejections WHERE false"),
    ("labs", "UPDATE labs SET enabled = enabled WHERE false"),
    ("purge", "DELETE FROM person_identities WHERE received_at IS NULL"),
    ("purge", "UPDATE tracing_deliveries SET sealed_identity = NULL WHERE false"),
    ("purge", "UPDATE outbox SET payload = payload - 'sealed_identity' WHERE false"),
]

WRITE_RESULTS = [
    "INSERT INTO results (result_id) VALUES ('x')",
    "UPDATE results SET outcome = 'negative' WHERE false",
    "DELETE FROM results WHERE false",
    "TRUNCATE results",
]
REFUSED: list[tuple[DatabaseClient, str]] = [
    *((reader, sql) for reader in ("dashboard", "opendata") for sql in WRITE_RESULTS),
    ("dashboard", "SELECT count(*) FROM results"),
    ("dashboard", "SELECT cert_fingerprint, finess FROM labs"),
    ("dashboard", "UPDATE lab_acks SET ae = 0 WHERE false"),
    ("dashboard", "INSERT INTO rejection_replays (rejection_id, last_outcome) VALUES ('x', 'AA')"),
    ("dashboard", "UPDATE aggregates SET p = 0 WHERE false"),
    ("dashboard", "REFRESH MATERIALIZED VIEW dashboard_national_daily"),
    ("opendata", "SELECT count(*) FROM results"),
    ("opendata", "SELECT count(*) FROM person_identities"),
    ("gateway", "SELECT count(*) FROM results"),
    ("gateway", "INSERT INTO results (result_id) VALUES ('x')"),
    ("gateway", "UPDATE labs SET enabled = true WHERE false"),
    ("gateway", "SELECT count(*) FROM person_identities"),
    ("tracing", "INSERT INTO aggregates (day) VALUES ('2022-01-10')"),
    ("tracing", "UPDATE aggregates SET p = 0 WHERE false"),
    ("tracing", "SELECT count(*) FROM results"),
    ("tracing", "SELECT count(*) FROM person_identities"),
    ("tracing", "SELECT dashboard_refresh_rollups()"),
    ("worker", "CREATE TABLE intruder (i int)"),
    ("worker", "DROP TABLE results"),
    ("worker", "TRUNCATE results"),
    ("worker", "DELETE FROM results WHERE false"),
    ("worker", "SELECT count(*) FROM tracing_deliveries"),
    ("worker", "SELECT token_hash FROM labs"),
    ("labs", "SELECT count(*) FROM results"),
    ("purge", "SELECT count(*) FROM results"),
    ("purge", "UPDATE tracing_deliveries SET status = 'delivered' WHERE false"),
    ("purge", "INSERT INTO person_identities (patient_pseudonym) VALUES ('x')"),
    *((client, "CREATE TEMP TABLE scratch (i int)") for client in DATABASE_CLIENTS if client != "worker"),
]


@pytest.mark.parametrize(("client", "statement"), ALLOWED)
def test_a_client_can_do_what_its_service_needs(
    shared_settings: Settings, client: DatabaseClient, statement: str
) -> None:
    with psycopg.connect(libpq_url(shared_settings.database_url_for(client))) as conn:
        conn.execute(statement)
        conn.rollback()


@pytest.mark.parametrize(("client", "statement"), REFUSED)
def test_a_client_is_refused_what_its_service_must_not_do(
    shared_settings: Settings, client: DatabaseClient, statement: str
) -> None:
    with (
        psycopg.connect(libpq_url(shared_settings.database_url_for(client))) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


def test_the_dashboard_refreshes_its_rollups_with_its_own_role(shared_settings: Settings) -> None:
    engine = make_engine(shared_settings.database_url_for("dashboard"))
    try:
        assert refresh_rollups(engine)
    finally:
        engine.dispose()


def test_the_migration_runs_again_and_back_on_a_cluster_that_has_the_roles(fresh_settings: Settings) -> None:
    url = fresh_settings.require_database()
    command.downgrade(alembic_config(url), "0006")
    left = {table: grants for table, grants in granted_privileges(fresh_settings).items() if grants}
    assert not left, left
    upgrade(url)
    assert granted_privileges(fresh_settings) == expected_privileges()
    with psycopg.connect(libpq_url(fresh_settings.database_url_for("gateway"))) as conn:
        assert conn.execute("SELECT count(*) FROM labs").fetchone() == (0,)


def test_a_client_url_naming_a_privileged_role_is_refused_and_the_role_left_alone(
    fresh_settings: Settings,
) -> None:
    owner = libpq_url(fresh_settings.require_database())
    admin = f"labflow_admin_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {admin} LOGIN CREATEDB")
    try:
        wrong = fresh_settings.model_copy(
            update={"worker_database_url": with_credentials(fresh_settings.require_database(), admin, "x")}
        )
        with pytest.raises(RuntimeError, match="privileged"):
            sync_login_roles(wrong)
        with psycopg.connect(owner) as conn:
            kept = conn.execute("SELECT rolcreatedb FROM pg_roles WHERE rolname = %s", (admin,)).fetchone()
            member = conn.execute(
                "SELECT 1 FROM pg_auth_members m JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
                (admin,),
            ).fetchone()
        assert kept == (True,) and member is None
    finally:
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {admin}")
