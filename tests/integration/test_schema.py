"""The migrated schema is the one `services/core/db/tables.py` declares (its one Python definition)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.core.config import Settings
from services.core.db.engine import make_engine
from services.core.db.tables import Base


def test_migrations_create_exactly_the_tables_the_orm_declares(shared_settings: Settings) -> None:
    engine = make_engine(shared_settings.require_database())
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
