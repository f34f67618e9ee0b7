"""The image's HEALTHCHECK: GET /healthz of the service this container runs (exit 0 = healthy).

The service is read from PID 1's command line (`labflow gateway`, `labflow worker`, …) and its port
from the same settings the service uses (LABFLOW_*_OPS_PORT, LABFLOW_OPENDATA_PORT,
LABFLOW_DASHBOARD_PORT). A command that serves nothing (`labflow db upgrade`) is healthy while it runs.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from services.core.config import load_settings

PORTS = {
    "gateway": "gateway_ops_port",
    "worker": "worker_ops_port",
    "tracing": "tracing_ops_port",
    "opendata": "opendata_port",
    "dashboard": "dashboard_port",
}


def main() -> int:
    argv = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    words = [a.decode() for a in argv if a]
    service = next((w for w in words if w in PORTS), None)
    if service is None or (service == "tracing" and "standin" in words):
        return 0
    port = getattr(load_settings(), PORTS[service])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
