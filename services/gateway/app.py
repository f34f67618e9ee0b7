"""Gateway bootstrap: wires the Kafka publisher, the intake service and the MLLP listener.

`/readyz` is 503 while Kafka is unreachable (see `publish.py` for how that is known) or the lab
registry is not loaded; the gateway itself stays up and answers AE meanwhile (labs send again).
On SIGTERM/SIGINT it drains: `/readyz` 503, no new connections or requests, what is in flight is
answered (at most `LABFLOW_GATEWAY_DRAIN_TIMEOUT_S`), the producer is flushed, and it exits 0.
With `--processes N` this runs in N children of a parent that serves the ops port (processes.py).
"""

from __future__ import annotations

import asyncio
import signal
import ssl

from services.core.config import Settings
from services.core.errors import OperatorError
from services.core.kafka import producer_config
from services.core.logs import configure_logging, get_logger
from services.core.reference import load_reference
from services.core.runtime import ensure_open_files, tune_garbage_collector
from services.gateway.http_api import HttpServer
from services.gateway.identity import IdentityProtector
from services.gateway.intake import Intake
from services.gateway.labs import LabRegistry, registry_for
from services.gateway.mllp_server import MllpServer
from services.gateway.processes import gateway_ops, run_processes
from services.gateway.publish import KafkaPublisher
from services.gateway.tls import server_context

log = get_logger(__name__)


def identity_protector(settings: Settings) -> IdentityProtector:
    if settings.pseudonym_key is None or settings.tracing_public_key is None:
        raise OperatorError(
            "LABFLOW_PSEUDONYM_KEY and LABFLOW_TRACING_PUBLIC_KEY must be set "
            "(`labflow stack up` makes local ones)"
        )
    return IdentityProtector(
        bytes.fromhex(settings.pseudonym_key.get_secret_value()), bytes.fromhex(settings.tracing_public_key)
    )


def build_intake(settings: Settings, publisher: KafkaPublisher, labs: LabRegistry | None) -> Intake:
    reference = load_reference(settings.reference_dir)
    return Intake(publisher, settings.topics, identity_protector(settings), labs, reference.department_region)


def build_mllp_server(
    settings: Settings, publisher: KafkaPublisher, labs: LabRegistry | None = None
) -> MllpServer:
    return MllpServer(
        build_intake(settings, publisher, labs),
        host=settings.mllp_host,
        port=settings.mllp_port,
        max_message_bytes=settings.mllp_max_message_bytes,
        max_connections=settings.mllp_max_connections,
        idle_timeout_s=settings.mllp_idle_timeout_s,
        frame_timeout_s=settings.mllp_read_timeout_s,
        first_message_timeout_s=settings.mllp_first_message_timeout_s,
        max_connections_per_address=settings.mllp_max_connections_per_address,
        ssl_context=mllp_tls_context(settings),
        reuse_port=settings.gateway_processes > 1,
    )


def mllp_tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.mllp_tls_cert is None:
        return None
    if settings.mllp_tls_key is None:
        raise OperatorError("LABFLOW_MLLP_TLS_CERT is set but LABFLOW_MLLP_TLS_KEY is not")
    return server_context(settings.mllp_tls_cert, settings.mllp_tls_key, settings.mllp_tls_client_ca)


async def serve(settings: Settings, http: bool = False) -> None:
    publisher = KafkaPublisher(producer_config(settings))
    registry = registry_for(settings) if http or settings.lab_registry_enforced else None
    if registry is not None:
        await registry.start()
    server = build_mllp_server(settings, publisher, registry if settings.lab_registry_enforced else None)
    await server.start()
    tune_garbage_collector()
    http_server = HttpServer.for_gateway(settings, server.intake, registry) if registry and http else None
    if http_server is not None:
        http_server.start()
    stop = asyncio.Event()

    def ready() -> bool:
        return not stop.is_set() and publisher.reachable and (registry is None or registry.loaded)

    ops = gateway_ops(settings, ready)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("gateway draining", timeout_s=settings.gateway_drain_timeout_s)
    draining = [server.drain(settings.gateway_drain_timeout_s)]
    if http_server is not None:
        draining.append(http_server.stop())
    await asyncio.gather(*draining)
    if registry is not None:
        await registry.stop()
    ops.stop()
    publisher.close()
    log.info("gateway stopped")


def run_gateway(settings: Settings, http: bool = False) -> None:
    configure_logging("gateway", settings.log_level)
    if settings.gateway_processes > 1 and not settings.gateway_process_index:
        run_processes(settings, http)  # the parent of N gateway processes
        return
    ensure_open_files(settings.mllp_max_connections, "LABFLOW_MLLP_MAX_CONNECTIONS")
    asyncio.run(serve(settings, http))
