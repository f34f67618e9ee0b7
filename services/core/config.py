"""Configuration from environment variables (prefix `LABFLOW_`), see README § Configuration.

`labflow stack up` writes the connection settings and generated local secrets to
`<state dir>/labflow.env`; real environment variables always win over that file.

Database access is least privilege (SPEC §8): each service, and each operator command that writes,
connects with its own URL (`LABFLOW_<CLIENT>_DATABASE_URL`, a login role member of the group role
the migrations grant, see `services/core/db/roles.py`). `LABFLOW_DATABASE_URL` is the migrations'
(owner) URL and the fallback of any client URL left unset, so one URL still runs everything.
"""

from __future__ import annotations

import os
from datetime import time
from functools import cached_property
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.errors import OperatorError

ENV_FILE_NAME = "labflow.env"
REPO_ROOT = Path(__file__).resolve().parents[2]


DatabaseClient = Literal["gateway", "worker", "tracing", "opendata", "dashboard", "labs", "purge"]
"""Who connects to PostgreSQL: the five services, `labflow labs` and `labflow purge`."""
DATABASE_CLIENTS: tuple[DatabaseClient, ...] = get_args(DatabaseClient)


class Topics:
    """The SPEC §2 topics, optionally prefixed (tests use a prefix per run)."""

    def __init__(self, prefix: str = "") -> None:
        self.raw = f"{prefix}lab.results.raw.v1"
        self.results = f"{prefix}lab.results.v1"
        self.rejected = f"{prefix}lab.results.rejected.v1"
        self.cases = f"{prefix}cases.v1"

    def all(self) -> list[str]:
        return [self.raw, self.results, self.rejected, self.cases]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABFLOW_", extra="ignore")

    state_dir: Path = Field(default=REPO_ROOT / ".labflow", description="Local stack data, logs, pids")
    reference_dir: Path = Field(
        default=REPO_ROOT.parent / "shared" / "reference", description="Population and geography CSVs"
    )
    log_level: str = "INFO"

    # infrastructure: when both are set, `labflow stack up` starts nothing
    kafka_bootstrap: str | None = None
    database_url: str | None = Field(default=None, description="Migrations (owner); fallback of the below")
    gateway_database_url: str | None = Field(default=None, description="Role labflow_gateway")
    worker_database_url: str | None = Field(default=None, description="Role labflow_worker")
    tracing_database_url: str | None = Field(default=None, description="Role labflow_tracing")
    opendata_database_url: str | None = Field(default=None, description="Role labflow_opendata")
    dashboard_database_url: str | None = Field(default=None, description="Role labflow_dashboard")
    labs_database_url: str | None = Field(default=None, description="Role labflow_labs (`labflow labs`)")
    purge_database_url: str | None = Field(default=None, description="Role labflow_purge (`labflow purge`)")
    topic_prefix: str = ""
    topic_partitions: int = 12
    topic_replication: int = 1
    # Kafka over TLS, mutual when a client certificate is given (Strimzi KafkaUser, see deploy/helm)
    kafka_security_protocol: str = Field(default="PLAINTEXT", description="PLAINTEXT or SSL")
    kafka_ssl_ca_location: Path | None = Field(default=None, description="PEM CA of the brokers")
    kafka_ssl_certificate_location: Path | None = Field(default=None, description="PEM client certificate")
    kafka_ssl_key_location: Path | None = Field(default=None, description="PEM client key")
    # address of the /metrics, /healthz, /readyz listeners of gateway, worker and tracing
    ops_host: str = "127.0.0.1"
    # with replication > 1: an acks=all write needs this many in-sync replicas (capped at the replication)
    topic_min_insync_replicas: int = 2

    # local stack
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_heap: str = "768m"  # per broker
    kafka_brokers: int = Field(default=1, description="Nodes of the local KRaft cluster (3 for chaos tests)")
    kafka_proxy_port: int = Field(
        default=0, description="First port of a proxied listener per broker (0: none), stack/kafka.py"
    )
    postgres_port: int = 15432

    # gateway
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575
    mllp_max_message_bytes: int = 1024 * 1024
    mllp_max_connections: int = Field(
        default=5000, description="MLLP connections at once, per gateway process (open files: see runtime.py)"
    )
    mllp_idle_timeout_s: float = 300.0
    mllp_read_timeout_s: float = Field(default=30.0, description="Deadline of a whole frame, once started")
    mllp_first_message_timeout_s: float = Field(
        default=10.0, description="A new connection must start its first message (0x0B MSH) within this"
    )
    mllp_max_connections_per_address: int = Field(default=100, description="MLLP connections per source IP")
    gateway_processes: int = Field(
        default=1, ge=1, description="Gateway processes on the MLLP port (SO_REUSEPORT), processes.py"
    )
    gateway_process_index: int = Field(
        default=0, ge=0, description="Set by the gateway for its child processes (1…N); 0 in a lone gateway"
    )
    gateway_drain_timeout_s: float = Field(
        default=20.0, description="On SIGTERM: longest wait for the work in flight"
    )
    mllp_tls_cert: Path | None = Field(default=None, description="PEM certificate chain: enables TLS")
    mllp_tls_key: Path | None = Field(default=None, description="PEM private key of that certificate")
    mllp_tls_client_ca: Path | None = Field(
        default=None, description="PEM CA bundle: enables mutual TLS, the client certificate names the lab"
    )
    delivery_timeout_s: float = 10.0
    kafka_linger_ms: int = Field(
        default=10, ge=0, le=1000,
        description="Producers wait this long to batch records: fewer, larger batches cost Kafka and the "
        "gateway less CPU per record, and add up to this to each ACK (services/core/kafka.py)",
    )
    gateway_ops_port: int = 9101
    lab_registry_enforced: bool = Field(default=True, description="Only registered, enabled labs may send")
    lab_registry_refresh_s: float = 30.0
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    http_max_body_bytes: int = 10 * 1024 * 1024

    # worker
    worker_group: str = "labflow-worker"
    worker_batch_size: int = 5000
    worker_batch_timeout_s: float = 0.5
    worker_consumers: int = Field(
        default=2, ge=1,
        description="Results consumers in one worker process (threads, one consumer-group member each): "
        "while one waits for PostgreSQL, another decodes and deduplicates its batch",
    )
    worker_ops_port: int = 9102

    # open data (SPEC §7)
    opendata_dir: Path | None = Field(default=None, description="default <state dir>/opendata")
    opendata_keep_days: int = Field(
        default=90, ge=1, description="Days the timestamped (archived) publications are kept"
    )
    opendata_host: str = "127.0.0.1"
    opendata_port: int = 8081
    opendata_publish_at: time = Field(default=time(3, 0), description="Daily publication, Europe/Paris")
    opendata_small_count_threshold: int = 0
    opendata_threshold_departments: bool = False

    # contact-tracing handoff (SPEC §6)
    tracing_url: str | None = Field(default=None, description="Contact-tracing platform webhook URL")
    tracing_group: str = "labflow-tracing"
    tracing_ops_port: int = 9103
    tracing_timeout_s: float = 10.0
    tracing_max_attempts: int = 20
    tracing_give_up_after_s: float = 3600.0
    tracing_backoff_initial_s: float = 1.0
    tracing_backoff_max_s: float = 120.0
    tracing_concurrency: int = 16
    tracing_database_connections: int = Field(
        default=8, ge=1, description="PostgreSQL sessions of the delivery loop (its pool)"
    )
    tracing_standin_port: int = 9180

    # dashboard (query API + web page); it refuses to start without a token list or a JWT key
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8000
    dashboard_tokens: SecretStr | None = Field(default=None, description="Comma-separated bearer tokens")
    dashboard_jwt_jwks_url: str | None = Field(default=None, description="OIDC provider JWKS URL")
    dashboard_jwt_public_key: str | None = Field(default=None, description="PEM public key (instead of JWKS)")
    dashboard_jwt_issuer: str | None = None
    dashboard_jwt_audience: str | None = None
    dashboard_jwt_lab_claim: str = Field(
        default="labflow_lab", description="JWT claim naming the lab whose portal page a user may read"
    )
    dashboard_rollup_refresh_s: float = Field(
        default=60.0, description="Refresh period of the national and regional rollups"
    )
    dashboard_secure_cookie: bool = Field(default=False, description="Session cookie only over HTTPS")

    # privacy (SPEC §8): nominative data (sealed identities, raw payloads) is purged after this
    nominative_retention_days: int = 90

    # secrets (generated by `labflow stack up` for a laptop; injected by the platform in production)
    pseudonym_key: SecretStr | None = Field(default=None, description="HMAC key of patient pseudonyms (hex)")
    tracing_public_key: str | None = Field(default=None, description="Sealed-box public key (hex)")
    tracing_private_key: SecretStr | None = Field(default=None, description="Sealed-box private key (hex)")
    tracing_signing_secret: SecretStr | None = Field(
        default=None, description="HMAC secret shared with the tracing platform (request signatures)"
    )

    @cached_property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def lab_traffic_groups(self) -> dict[str, str]:
        """topic -> group of the worker's lab-traffic consumers (Kafka's, and `consumer_offsets`)."""
        return {self.topics.raw: f"{self.worker_group}.lab-traffic-raw",
                self.topics.rejected: f"{self.worker_group}.lab-traffic-rejections"}

    @property
    def opendata_path(self) -> Path:
        return self.opendata_dir or self.state_dir / "opendata"

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap:
            raise OperatorError("LABFLOW_KAFKA_BOOTSTRAP is not set: run `labflow stack up` or set it")
        return self.kafka_bootstrap

    def require_database(self) -> str:
        if not self.database_url:
            raise OperatorError("LABFLOW_DATABASE_URL is not set: run `labflow stack up` or set it")
        return self.database_url

    def database_url_for(self, client: DatabaseClient) -> str:
        """The URL `client` connects with: its own role's, else `LABFLOW_DATABASE_URL`."""
        url: str | None = getattr(self, f"{client}_database_url")
        return url or self.require_database()

    def with_owner_database(self, url: str) -> Settings:
        """These settings on another database, every client connecting as its owner (scratch databases)."""
        clients = {f"{client}_database_url": url for client in DATABASE_CLIENTS}
        return self.model_copy(update={"database_url": url, **clients})


def load_settings(**overrides: object) -> Settings:
    """Environment first, then `<state dir>/labflow.env` written by the local stack."""
    state_dir = Path(os.environ.get("LABFLOW_STATE_DIR", REPO_ROOT / ".labflow"))
    env_file = state_dir / ENV_FILE_NAME
    return Settings(_env_file=env_file if env_file.exists() else None, **overrides)  # type: ignore[arg-type]
