"""PostgreSQL schema (SQLAlchemy 2 declarative). Alembic migrations in `migrations/` create it.

The one definition of the tables' columns in Python: the worker derives the columns it writes from
`Result` (services/worker/store.py). The migrated schema must equal this metadata — tables, columns,
types, nullability, defaults, indexes — which tests/integration/test_schema.py checks with Alembic's
autogenerate comparison. (Materialized views are not compared: they live in the migrations alone.)
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import CheckConstraint


class Base(DeclarativeBase):
    pass


class Result(Base):
    """The version of each result that counts (SPEC §5), keyed by the idempotency key."""

    __tablename__ = "results"

    result_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # with the pseudonym: a "wrong patient" (W) on one person must not cancel the same specimen
    # re-sent under the right person
    patient_pseudonym: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    precedence: Mapped[int] = mapped_column(SmallInteger)
    version_key: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(1))
    outcome: Mapped[str] = mapped_column(String(16))
    test_kind: Mapped[str] = mapped_column(String(16))
    loinc: Mapped[str] = mapped_column(String(16))
    pseudonym_basis: Mapped[str] = mapped_column(String(8))
    sex: Mapped[str] = mapped_column(String(1))
    birth_year: Mapped[int | None] = mapped_column(SmallInteger)
    age_class: Mapped[str | None] = mapped_column(String(2))
    postal_code: Mapped[str | None] = mapped_column(String(10))
    department: Mapped[str | None] = mapped_column(String(3))
    region: Mapped[str | None] = mapped_column(String(3))
    sending_application: Mapped[str] = mapped_column(Text)
    sending_facility: Mapped[str] = mapped_column(Text)
    lab_finess: Mapped[str | None] = mapped_column(String(16))
    performing_lab: Mapped[str | None] = mapped_column(Text)
    message_control_id: Mapped[str] = mapped_column(Text)
    transport: Mapped[str] = mapped_column(String(16))
    specimen_id: Mapped[str | None] = mapped_column(Text)
    specimen_type: Mapped[str | None] = mapped_column(Text)
    collected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    collection_day: Mapped[date] = mapped_column(Date)
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


class Person(Base):
    """A person's last P/T contributions, so a re-evaluation applies only the difference."""

    __tablename__ = "persons"

    patient_pseudonym: Mapped[str] = mapped_column(String(64), primary_key=True)
    contributions: Mapped[list[list[object]]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Aggregate(Base):
    """P and T per collection day × department × age class × sex × test kind (SPEC §5).

    Unknown department or age class is stored as '' (they count only in the national figures).
    """

    __tablename__ = "aggregates"
    __table_args__ = (
        Index(
            "ix_aggregates_department_day", "department", "day",
            postgresql_include=["age_class", "sex", "test_kind", "p", "t"],
        ),
    )

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    department: Mapped[str] = mapped_column(String(3), primary_key=True)
    age_class: Mapped[str] = mapped_column(String(2), primary_key=True)
    sex: Mapped[str] = mapped_column(String(1), primary_key=True)
    test_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    p: Mapped[int] = mapped_column(Integer)
    t: Mapped[int] = mapped_column(Integer)


class DepartmentRegion(Base):
    """INSEE department → region, for the dashboard's regional views (filled by migration 0005)."""

    __tablename__ = "department_regions"

    department: Mapped[str] = mapped_column(String(3), primary_key=True)
    region: Mapped[str] = mapped_column(String(3))


class LabDaily(Base):
    """Per lab and reception day: results received and positives among them."""

    __tablename__ = "lab_daily"
    __table_args__ = (Index("ix_lab_daily_day", "day"),)

    lab: Mapped[str] = mapped_column(Text, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    results: Mapped[int] = mapped_column(Integer)
    positives: Mapped[int] = mapped_column(Integer)


class LabDelay(Base):
    """Histogram of collection → reception delay (whole hours) per lab and day, for medians and p90."""

    __tablename__ = "lab_delays"
    __table_args__ = (Index("ix_lab_delays_day", "day", "lab", "delay_hours", postgresql_include=["n"]),)

    lab: Mapped[str] = mapped_column(Text, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    delay_hours: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(Integer)


class Case(Base):
    __tablename__ = "cases"

    case_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    patient_pseudonym: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(10))
    onset_day: Mapped[date] = mapped_column(Date)
    last_positive_day: Mapped[date] = mapped_column(Date)
    department: Mapped[str | None] = mapped_column(String(3))
    region: Mapped[str | None] = mapped_column(String(3))
    age_class: Mapped[str | None] = mapped_column(String(2))
    sex: Mapped[str] = mapped_column(String(1))
    test_kind: Mapped[str] = mapped_column(String(16))
    first_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Outbox(Base):
    """Case events written with the data that caused them; a relay publishes them to `cases.v1`."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL")),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, object]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PersonIdentity(Base):
    """The latest sealed identity of a person (nominative: subject to the retention purge)."""

    __tablename__ = "person_identities"

    patient_pseudonym: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed_identity: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TracingDelivery(Base):
    """One case event on its way to the contact-tracing platform (SPEC §6).

    Events of one case are delivered in `id` order. Only the sealed identity is kept; it is opened
    in memory right before sending.
    """

    __tablename__ = "tracing_deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="ck_tracing_deliveries_status"),
        Index("ix_tracing_deliveries_case_id", "case_id", "id"),
        Index(
            "ix_tracing_deliveries_undelivered", "case_id", "id",
            postgresql_where=text("status <> 'delivered'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    case_id: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(10), server_default="pending")
    message: Mapped[dict[str, object]] = mapped_column(JSONB)
    sealed_identity: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Lab(Base):
    """A laboratory allowed to send: lab id = MSH-4 namespace id; only a salted hash of its HTTP token."""

    __tablename__ = "labs"
    __table_args__ = (CheckConstraint("mode IN ('production', 'test')", name="ck_labs_mode"),)

    lab_id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    finess: Mapped[str | None] = mapped_column(String(9))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=true())
    mode: Mapped[str] = mapped_column(String(10), server_default="production")
    time_zone: Mapped[str] = mapped_column(Text, server_default="Europe/Paris")
    token_hash: Mapped[str | None] = mapped_column(Text)
    cert_fingerprint: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Submission(Base):
    """One HTTP submission and the JSON answered for it (`GET /v1/submissions/{id}`)."""

    __tablename__ = "submissions"
    __table_args__ = (Index("ix_submissions_lab_id_received_at", "lab_id", "received_at"),)

    submission_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    lab_id: Mapped[str] = mapped_column(Text)
    transport: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20))
    accepted: Mapped[int] = mapped_column(Integer)
    rejected: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, object]] = mapped_column(JSONB)


class RejectionReplay(Base):
    """A rejected payload an operator replayed (`labflow rejected replay`): how often, last outcome."""

    __tablename__ = "rejection_replays"

    rejection_id: Mapped[str] = mapped_column(Text, primary_key=True)
    replays: Mapped[int] = mapped_column(Integer, server_default="1")
    last_outcome: Mapped[str] = mapped_column(Text)
    first_replayed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_replayed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LabAcks(Base):
    """Per lab and reception day: messages written raw, and the gateway's AE / AR among them."""

    __tablename__ = "lab_acks"

    lab: Mapped[str] = mapped_column(Text, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    messages: Mapped[int] = mapped_column(Integer, server_default="0")
    ae: Mapped[int] = mapped_column(Integer, server_default="0")
    ar: Mapped[int] = mapped_column(Integer, server_default="0")
    rejected_with_copy: Mapped[int] = mapped_column(Integer, server_default="0")
    last_received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LabRejection(Base):
    """One gateway rejection of a lab's message: when, AE/AR, and its reasons (never the payload)."""

    __tablename__ = "lab_rejections"
    __table_args__ = (Index("ix_lab_rejections_lab_received_at", "lab", "received_at"),)

    rejection_id: Mapped[str] = mapped_column(Text, primary_key=True)
    lab: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ack_code: Mapped[str] = mapped_column(String(2))
    transport: Mapped[str | None] = mapped_column(Text)
    message_control_id: Mapped[str | None] = mapped_column(Text)
    reasons: Mapped[list[dict[str, object]]] = mapped_column(JSONB)


class TestResult(Base):
    """A result of a lab in test mode (SPEC §8.1), one row per reception; never counted or handed on."""

    __tablename__ = "test_results"
    __table_args__ = (Index("ix_test_results_lab_id_received_at", "lab_id", "received_at"),)

    result_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_pseudonym: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    lab_id: Mapped[str] = mapped_column(Text)
    message_control_id: Mapped[str] = mapped_column(Text)
    record: Mapped[dict[str, object]] = mapped_column(JSONB)
    """The canonical record (`LabResult` JSON) without its sealed identity."""
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ConformanceReport(Base):
    """The outcome of one `labflow conformance report` (read by `labflow labs promote`)."""

    __tablename__ = "conformance_reports"

    lab_id: Mapped[str] = mapped_column(Text, primary_key=True)
    generated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, server_default=func.now()
    )
    passed: Mapped[bool] = mapped_column(Boolean)
    report: Mapped[dict[str, object]] = mapped_column(JSONB)
