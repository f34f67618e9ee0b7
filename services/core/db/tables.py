"""PostgreSQL schema (SQLAlchemy 2 declarative). Alembic migrations in `migrations/` create it."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, DateTime, Integer, SmallInteger, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Result(Base):
    """The version of each result that counts (SPEC §5), keyed by the idempotency key."""

    __tablename__ = "results"

    result_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    precedence: Mapped[int] = mapped_column(SmallInteger)
    version_key: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(1))
    outcome: Mapped[str] = mapped_column(String(16))
    test_kind: Mapped[str] = mapped_column(String(16))
    loinc: Mapped[str] = mapped_column(String(16))
    patient_pseudonym: Mapped[str] = mapped_column(String(64), index=True)
    pseudonym_basis: Mapped[str] = mapped_column(String(8))
    sex: Mapped[str] = mapped_column(String(1))
    birth_year: Mapped[int | None] = mapped_column(SmallInteger)
    age_class: Mapped[str | None] = mapped_column(String(2))
    postal_code: Mapped[str | None] = mapped_column(String(10))
    department: Mapped[str | None] = mapped_column(String(3))
    region: Mapped[str | None] = mapped_column(String(3))
    sending_application: Mapped[str] = mapped_column(Text)
    sending_facility: Mapped[str] = mapped_column(Text, index=True)
    lab_finess: Mapped[str | None] = mapped_column(String(16))
    performing_lab: Mapped[str | None] = mapped_column(Text)
    message_control_id: Mapped[str] = mapped_column(Text)
    transport: Mapped[str] = mapped_column(String(16))
    specimen_id: Mapped[str | None] = mapped_column(Text)
    specimen_type: Mapped[str | None] = mapped_column(Text)
    collected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    collection_day: Mapped[date] = mapped_column(Date, index=True)
    observed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ConsumerOffset(Base):
    """Consumer positions stored in the same transaction as the data they led to (SPEC §2)."""

    __tablename__ = "consumer_offsets"

    group_id: Mapped[str] = mapped_column(Text, primary_key=True)
    topic: Mapped[str] = mapped_column(Text, primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
