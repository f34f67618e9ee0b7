"""Gateway bootstrap: wires the Kafka publisher, the intake service and the MLLP listener."""

from __future__ import annotations

import asyncio
import signal
import ssl

from services.core.config import Settings
from services.core.kafka import producer_config
from services.core.logs import configure_logging, get_logger
from services.core.ops_http import OpsServer
from services.gateway.identity import IdentityProtector
from services.gateway.intake import Intake
from services.gateway.mllp_server import MllpServer
from services.gateway.publish import KafkaPublisher
from services.gateway.tls import server_context

log = get_logger(__name__)


def identity_protector(settings: Settings) -> IdentityProtector:
    if settings.pseudonym_key is None or settings.tracing_public_key is None:
        raise RuntimeError(
            "LABFLOW_PSEUDONYM_KEY and LABFLOW_TRACING_PUBLIC_KEY must be set "
            "(`labflow stack up` makes local ones)"
        )
    return IdentityProtector(
        bytes.fromhex(settings.pseudonym_key.get_secret_value()), bytes.fromhex(settings.tracing_public_key)
    )


def build_mllp_server(settings: Settings, publisher: KafkaPublisher) -> MllpServer:
    intake = Intake(publisher, settings.topics, identity_protector(settings))
    return MllpServer(
        intake,
        host=settings.mllp_host,
        port=settings.mllp_port,
        max_message_bytes=settings.mllp_max_message_bytes,
        max_connections=settings.mllp_max_connections,
        idle_timeout_s=settings.mllp_idle_timeout_s,
        read_timeout_s=settings.mllp_read_timeout_s,
        ssl_context=mllp_tls_context(settings),
    )


def mllp_tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.mllp_tls_cert is None:
        return None
    if settings.mllp_tls_key is None:
        raise RuntimeError("LABFLOW_MLLP_TLS_CERT is set but LABFLOW_MLLP_TLS_KEY is not")
    return server_context(settings.mllp_tls_cert, settings.mllp_tls_key, settings.mllp_tls_client_ca)


async def serve(settings: Settings) -> None:
    publisher = KafkaPublisher(producer_config(settings))
    server = build_mllp_server(settings, publisher)
    await server.start()
    ops = OpsServer(settings.mllp_host, settings.gateway_ops_port, ready=lambda: True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("gateway stopping")
    await server.close()
    ops.stop()
    publisher.close()


def run_gateway(settings: Settings) -> None:
    configure_logging("gateway", settings.log_level)
    asyncio.run(serve(settings))
