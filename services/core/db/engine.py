"""SQLAlchemy engine for the psycopg 3 driver."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine

from services.core.errors import OperatorError


def sqlalchemy_url(database_url: str) -> str:
    """Accept plain `postgresql://` URLs and select the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise OperatorError("LABFLOW_DATABASE_URL must be a postgresql:// URL")


def libpq_url(database_url: str) -> str:
    """The same URL for psycopg used directly (COPY on the hot path)."""
    return "postgresql://" + sqlalchemy_url(database_url)[len("postgresql+psycopg://") :]


def make_engine(database_url: str, **kwargs: object) -> Engine:
    return create_engine(sqlalchemy_url(database_url), pool_pre_ping=True, **kwargs)
