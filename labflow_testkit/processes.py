"""LabFlow services as real processes (started by `services.stack.process.launch`), and waiting for them.

Waits are on a condition (`wait_until`), never a fixed sleep: a test or benchmark goes on as soon as
what it waits for is true, and fails with what it waited for when it never is.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from services.stack.process import launch

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], T], timeout_s: float = 30.0, interval_s: float = 0.1, what: str = "") -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or check}")
        time.sleep(interval_s)


class ServiceProcess:
    """`labflow <service> [args]` as a real process, its output kept in a log file for the failure report.

    `ServiceProcess("worker", env, log_dir)`; `ServiceProcess("tracing standin", env, log_dir, "--port",
    "8099")`. Stopped with SIGTERM (the signal every service drains on), killed after `timeout_s`.
    """

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path, *args: str) -> None:
        self.name = name
        self.log_path = log_dir / f"{name.replace(' ', '-')}-{uuid.uuid4().hex[:6]}.log"
        argv = [sys.executable, "-m", "services.cli", *name.split(), *args]
        self.proc = launch(argv, log=self.log_path, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


