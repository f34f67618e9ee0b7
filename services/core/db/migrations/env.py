from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from services.core.db.tables import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
connectable = config.attributes.get("connection")

if connectable is None:
    # no pool: the owner's connection closes with the migration instead of idling in the caller
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connectable, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
