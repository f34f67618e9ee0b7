"""The gateway's composition root: every adapter and the intake built once, from the settings.

One Kafka publisher, one lab registry (loaded from PostgreSQL when HTTP is served or the registry
is enforced), one identity protector and one `Intake`, handed to the MLLP listener and to the HTTP
API alike; the HTTP API's validation gets the same intake without publishing. Nothing here runs:
`app.serve` starts and stops what is built here.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from services.core.config import Settings
from services.core.errors import OperatorError
from services.core.kafka import producer_config
from services.core.reference import load_reference
from services.gateway.http_api import HttpServer
from services.gateway.identity import IdentityProtector
from services.gateway.intake import Intake
from services.gateway.labs import LabRegistry, registry_for
from services.gateway.mllp_server import MllpServer
from services.gateway.publish import KafkaPublisher, Publisher
from services.gateway.tls import server_context


def identity_protector(settings: Settings) -> IdentityProtector:
    if settings.pseudonym_key is None or settings.tracing_public_key is None:
        raise OperatorError(
            "LABFLOW_PSEUDONYM_KEY and LABFLOW_TRACING_PUBLIC_KEY must be set "
            "(`labflow stack up` makes local ones)"
        )
    return IdentityProtector(
        bytes.fromhex(settings.pseudonym_key.get_secret_value()), bytes.fromhex(settings.tracing_public_key)
    )


def build_intake(settings: Settings, publisher: Publisher, labs: LabRegistry | None) -> Intake:
    reference = load_reference(settings.reference_dir)
    return Intake(publisher, settings.topics, identity_protector(settings), labs, reference.department_region)


def mllp_tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.mllp_tls_cert is None:
        return None
    if settings.mllp_tls_key is None:
        raise OperatorError("LABFLOW_MLLP_TLS_CERT is set but LABFLOW_MLLP_TLS_KEY is not")
    return server_context(settings.mllp_tls_cert, settings.mllp_tls_key, settings.mllp_tls_client_ca)


def build_mllp_server(settings: Settings, intake: Intake, labs: LabRegistry | None) -> MllpServer:
    return MllpServer(
        intake,
        host=settings.mllp_host,
        port=settings.mllp_port,
        max_message_bytes=settings.mllp_max_message_bytes,
        max_connections=settings.mllp_max_connections,
        idle_timeout_s=settings.mllp_idle_timeout_s,
        frame_timeout_s=settings.mllp_read_timeout_s,
        first_message_timeout_s=settings.mllp_first_message_timeout_s,
        max_connections_per_address=settings.mllp_max_connections_per_address,
        ssl_context=mllp_tls_context(settings),
        labs=labs,
        reuse_port=settings.gateway_processes > 1,
    )


@dataclass(frozen=True, slots=True)
class Gateway:
    """What `app.serve` starts, serves with and stops."""

    publisher: KafkaPublisher
    registry: LabRegistry | None
    """Loaded when HTTP is served (tokens) or the registry is enforced (admission)."""
    intake: Intake
    mllp: MllpServer
    http: HttpServer | None


def bootstrap(settings: Settings, http: bool = False) -> Gateway:
    publisher = KafkaPublisher(producer_config(settings))
    registry = registry_for(settings) if http or settings.lab_registry_enforced else None
    admitting = registry if settings.lab_registry_enforced else None
    intake = build_intake(settings, publisher, admitting)
    http_server = None
    if http and registry is not None:
        http_server = HttpServer.for_gateway(settings, intake, registry, intake.without_publishing())
    return Gateway(publisher, registry, intake, build_mllp_server(settings, intake, admitting), http_server)
