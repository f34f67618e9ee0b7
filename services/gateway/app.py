"""Gateway lifecycle: start what `bootstrap.py` built, serve until SIGTERM/SIGINT, drain, stop.

`/readyz` is 503 while Kafka is unreachable (see `publish.py` for how that is known) or the lab
registry is not loaded; the gateway itself stays up and answers AE meanwhile (labs send again).
On SIGTERM/SIGINT it drains: `/readyz` 503, no new connections or requests, what is in flight is
answered (at most `LABFLOW_GATEWAY_DRAIN_TIMEOUT_S`), the producer is flushed, and it exits 0.
"""

from __future__ import annotations

import asyncio
import signal

from services.core.config import Settings
from services.core.logs import configure_logging, get_logger
from services.core.ops_http import OpsServer
from services.core.runtime import tune_garbage_collector
from services.gateway.bootstrap import bootstrap

log = get_logger(__name__)


async def serve(settings: Settings, http: bool = False) -> None:
    gateway = bootstrap(settings, http)
    publisher, registry, server, http_server = gateway.publisher, gateway.registry, gateway.mllp, gateway.http
    if registry is not None:
        await registry.start()
    await server.start()
    tune_garbage_collector()
    if http_server is not None:
        http_server.start()
    stop = asyncio.Event()

    def ready() -> bool:
        return not stop.is_set() and publisher.reachable and (registry is None or registry.loaded)

    ops = OpsServer(settings.ops_host, settings.gateway_ops_port, ready=ready).start()
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
    asyncio.run(serve(settings, http))
