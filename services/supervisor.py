"""`labflow run`: every service of a laptop stack as child processes, stopped together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from services.core.config import load_settings

SERVICES = ("gateway", "worker", "opendata", "tracing", "dashboard")


class Supervisor:
    def __init__(self, services: Sequence[str] = SERVICES, log_dir: Path | None = None) -> None:
        self.services = services
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        env, names = os.environ.copy(), list(self.services)
        settings = load_settings()
        if "tracing" in names and not settings.tracing_url:
            # no tracing platform configured: the local stand-in (services/tracing/standin.py) plays it
            env["LABFLOW_TRACING_URL"] = f"http://127.0.0.1:{settings.tracing_standin_port}/cases"
            names.insert(names.index("tracing"), "tracing standin")
        for name in names:
            out = None
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                out = (self.log_dir / f"{name.replace(' ', '-')}.log").open("ab")
            self.children[name] = subprocess.Popen(
                [sys.executable, "-m", "services.cli", *name.split()], stdout=out, stderr=out, env=env
            )

    def poll_failed(self) -> str | None:
        for name, child in self.children.items():
            if child.poll() is not None:
                return name
        return None

    def stop(self, timeout_s: float = 15.0) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children.values():
            try:
                child.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def wait(self) -> int:
        """Block until a child dies or we are interrupted; then stop the others."""
        try:
            while (failed := self.poll_failed()) is None:
                time.sleep(0.5)
            print(f"labflow: {failed} exited with {self.children[failed].returncode}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            self.stop()
