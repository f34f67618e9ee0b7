"""`labflow run`: every service of a laptop stack as child processes, kept alive and stopped together.

Policy (SPEC §9.1, "supervisors forward SIGTERM/SIGINT and restart a crashed child"):
- SIGTERM, SIGINT and SIGHUP stop the platform: each running child gets SIGTERM (the signal every
  service drains on; a hang-up is no reason to stop a child abruptly), the supervisor waits up to
  `stop_timeout_s` for them, then kills what is left. Handlers are installed explicitly, so a
  supervisor started from a script with `&` (SIGINT ignored by inheritance) still stops on SIGINT.
- Each child runs in its own process group, so a Ctrl-C in the terminal reaches the supervisor alone
  and every child is stopped once, in order. Should the supervisor itself die (kill -9), the kernel
  sends each child SIGTERM (PR_SET_PDEATHSIG): no service is left holding its ports. Children are
  started by the one launcher of the project (`services.stack.process.launch`); the restart loop
  below is the supervisor's own.
- A child that exits on its own is restarted after an exponential backoff with jitter (1 s, 2 s, 4 s
  … at most 60 s), said on stderr; the backoff starts again once a child has run for a minute. The
  platform keeps running: a crashed worker must not take the gateway down with it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from services.core.config import load_settings
from services.stack.process import launch

SERVICES = ("gateway", "worker", "opendata", "tracing", "dashboard")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class RestartPolicy:
    initial_s: float = 1.0
    max_s: float = 60.0
    stable_after_s: float = 60.0  # a child that ran this long starts its backoff again

    def delay(self, restarts: int) -> float:
        base = min(self.max_s, self.initial_s * 2.0**restarts)
        return base / 2 + random.uniform(0, base / 2)


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0  # consecutive restarts without a stable run
    restart_at: float | None = None  # when an exited child is due to start again
    log: Path | None = field(default=None, repr=False)  # None: the supervisor's own stdout/stderr


class Supervisor:
    def __init__(
        self,
        services: Sequence[str] = SERVICES,
        log_dir: Path | None = None,
        *,
        command: Callable[[str], list[str]] | None = None,
        restart: RestartPolicy | None = None,
        stop_timeout_s: float = 15.0,
        interrupt_caller: bool = False,
    ) -> None:
        """`interrupt_caller`: a stop signal that arrives before `wait()` raises KeyboardInterrupt in
        the caller (the demo, busy replaying traffic, stops on it); otherwise it is only recorded, and
        `wait()` stops every child at once — a signal right after `start()` is a clean stop."""
        self.services = services
        self.log_dir = log_dir
        self.command = command or (lambda name: [sys.executable, "-m", "services.cli", *name.split()])
        self.restart = restart or RestartPolicy()
        self.stop_timeout_s = stop_timeout_s
        self.children: dict[str, Child] = {}
        self.env = os.environ.copy()
        self._stop_signal: int | None = None
        self._supervising = False
        self._interrupt_caller = interrupt_caller

    def start(self) -> None:
        names = list(self.services)
        if "tracing" in names:
            settings = load_settings()
            if not settings.tracing_url:
                # no tracing platform configured: the local stand-in (services/tracing/standin.py) plays it
                self.env["LABFLOW_TRACING_URL"] = f"http://127.0.0.1:{settings.tracing_standin_port}/cases"
                names.insert(names.index("tracing"), "tracing standin")
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_stop_signal)
        for name in names:
            child = Child(name, self.command(name))
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                child.log = self.log_dir / f"{name.replace(' ', '-')}.log"
            self.children[name] = child
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.proc = launch(child.argv, log=child.log, env=self.env, own_group=True, die_with_parent=True)
        child.started_at = time.monotonic()
        child.restart_at = None

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_signal = signum
        if self._interrupt_caller and not self._supervising:  # the demo replaying traffic
            raise KeyboardInterrupt

    @property
    def stop_requested(self) -> bool:
        return self._stop_signal is not None

    def poll_failed(self) -> str | None:
        """The first child that has exited and is not running again yet (start-up checks use it)."""
        for name, child in self.children.items():
            if child.proc is not None and child.proc.poll() is not None:
                return name
        return None

    def supervise_once(self) -> None:
        """Schedule a restart for each child that exited; start those that are due."""
        now = time.monotonic()
        for child in self.children.values():
            if child.proc is None or child.proc.poll() is None:
                continue
            if child.restart_at is None:
                if now - child.started_at >= self.restart.stable_after_s:
                    child.restarts = 0
                delay = self.restart.delay(child.restarts)
                child.restart_at = now + delay
                child.restarts += 1
                print(f"labflow: {child.name} exited with {child.proc.returncode}; restarting in "
                      f"{delay:.1f} s (restart {child.restarts})", file=sys.stderr, flush=True)
            elif now >= child.restart_at:
                self._spawn(child)

    def stop(self) -> None:
        running = [c.proc for c in self.children.values() if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for proc in running:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait(self, poll_s: float = 0.2) -> int:
        """Keep the children running until a stop signal; then stop them all. 0 after a clean stop."""
        self._supervising = True
        try:
            while self._stop_signal is None:
                self.supervise_once()
                time.sleep(poll_s)
            print(f"labflow: {signal.Signals(self._stop_signal).name} received, stopping every service",
                  file=sys.stderr, flush=True)
            return 0
        finally:
            self.stop()
