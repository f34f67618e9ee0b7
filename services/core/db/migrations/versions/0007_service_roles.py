"""one PostgreSQL role per service, with only the grants it needs (SPEC §8 least privilege)

The roles are NOLOGIN group roles: they hold the grants, they never hold a password. What logs in is
a LOGIN role made a member of one of them, by `labflow db upgrade` from the
`LABFLOW_<CLIENT>_DATABASE_URL` settings (services/core/db/roles.py) or by the platform. So neither
this file nor the database history ever carries a secret, and several databases in one cluster (one
per test) share the roles while each database holds its own grants.

Roles are cluster-wide: each is created only when missing (so the migrating role needs CREATEROLE only
when one is missing), tolerating a concurrent migration of another database creating it at the same
instant. The downgrade revokes this database's grants and leaves the roles, which other databases of
the cluster may still use.

No default privileges: a table added later is reachable by no service until its migration grants it
(tests/integration/test_db_roles.py fails on a table missing from the policy), so a reader never gains a
new nominative table by accident.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

RW = "SELECT, INSERT, UPDATE"
# role -> (privileges, object); objects are tables, views and sequences of this database
GRANTS: dict[str, tuple[tuple[str, str], ...]] = {
    # the lab registry (read), its HTTP submissions; never results
    "labflow_gateway": (("SELECT", "labs"), ("SELECT, INSERT", "submissions")),
    # results, person timelines, aggregates, lab statistics, cases, outbox (+ its relay), offsets
    "labflow_worker": (
        (RW, "results"),
        (RW, "persons"),
        (RW, "aggregates"),
        (RW, "lab_daily"),
        (RW, "lab_delays"),
        (RW, "cases"),
        (RW, "outbox"),
        (RW, "person_identities"),
        (RW, "consumer_offsets"),
        ("USAGE", "SEQUENCE outbox_id_seq"),
    ),
    # its deliveries; the identity comes sealed inside the case event, it reads no other table
    "labflow_tracing": ((RW, "tracing_deliveries"), ("USAGE", "SEQUENCE tracing_deliveries_id_seq")),
    "labflow_opendata": (("SELECT", "aggregates"),),
    # the rollups are refreshed through dashboard_refresh_rollups() below, never written directly
    "labflow_dashboard": (
        ("SELECT", "aggregates"),
        ("SELECT", "lab_daily"),
        ("SELECT", "lab_delays"),
        ("SELECT", "dashboard_national_daily"),
        ("SELECT", "dashboard_region_daily"),
        ("SELECT (lab_id, name)", "labs"),  # lab names on the page; never tokens or certificates
    ),
    # `labflow labs`: registers labs, enables them, issues tokens
    "labflow_labs": ((RW, "labs"),),
    # `labflow purge`: removes identities past the retention limit, touches nothing else
    "labflow_purge": (
        ("SELECT, DELETE", "person_identities"),
        ("SELECT, UPDATE (sealed_identity)", "tracing_deliveries"),
        ("SELECT, UPDATE (payload)", "outbox"),
    ),
}
# the worker's COPY goes through a temporary table
TEMPORARY = ("labflow_worker",)


def _on_database(statement: str) -> None:
    """`statement` with `{db}` = this database (identifiers cannot be bound parameters)."""
    sql = statement.replace("'", "''")
    op.execute(f"DO $$ BEGIN EXECUTE format('{sql}', current_database()); END $$")


def upgrade() -> None:
    # a role created beforehand (by the platform) needs no CREATEROLE here; a concurrent creation waits
    # for ours, then fails unique: either way the role is there
    for role in GRANTS:
        op.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
            f"CREATE ROLE {role} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION; END IF; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        )
    # nobody but the granted roles (and the owner) connects, creates objects or temporary tables
    _on_database("REVOKE ALL ON DATABASE %I FROM PUBLIC")
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    for role, grants in GRANTS.items():
        _on_database(f"GRANT CONNECT ON DATABASE %I TO {role}")
        op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        for privileges, target in grants:
            op.execute(f"GRANT {privileges} ON {target} TO {role}")
    for role in TEMPORARY:
        _on_database(f"GRANT TEMPORARY ON DATABASE %I TO {role}")
    # REFRESH needs the owner: a definer function does exactly that and nothing else
    op.execute(
        "CREATE FUNCTION dashboard_refresh_rollups() RETURNS void LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = pg_catalog, pg_temp AS $$ BEGIN "
        "REFRESH MATERIALIZED VIEW CONCURRENTLY public.dashboard_region_daily; "
        "REFRESH MATERIALIZED VIEW CONCURRENTLY public.dashboard_national_daily; "
        "END $$"
    )
    op.execute("REVOKE ALL ON FUNCTION dashboard_refresh_rollups() FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION dashboard_refresh_rollups() TO labflow_dashboard")


def downgrade() -> None:
    op.execute("DROP FUNCTION dashboard_refresh_rollups()")
    for role, grants in GRANTS.items():
        for _, target in grants:
            op.execute(f"REVOKE ALL ON {target} FROM {role}")
        op.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
        _on_database(f"REVOKE ALL ON DATABASE %I FROM {role}")
    _on_database("GRANT CONNECT, TEMPORARY ON DATABASE %I TO PUBLIC")
