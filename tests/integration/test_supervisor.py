"""`labflow run` as an operator uses it: stopped by a signal it leaves nothing running; a crashed
service is restarted instead of stopping the platform; a dead supervisor takes its children along."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import free_port, http_status, port_open, wait_until
from services.core.config import REPO_ROOT, Settings

pytestmark = pytest.mark.integration


def _ignore_sigint() -> None:
    """What a shell does to a job started with `&` in a script: SIGINT ignored, inherited by exec."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_run(settings: Settings, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Settings, Path]:
    settings = settings.model_copy(update={
        name: free_port() for name in (
            "mllp_port", "http_port", "gateway_ops_port", "worker_ops_port", "tracing_ops_port",
            "opendata_port", "dashboard_port", "tracing_standin_port",
        )
    })
    env = settings_env(settings, LABFLOW_STATE_DIR=str(tmp_path), LABFLOW_DASHBOARD_TOKENS="t0ken",
                       LABFLOW_TRACING_SIGNING_SECRET="s3cret",
                       LABFLOW_LAB_REGISTRY_ENFORCED="false")
    log = tmp_path / "run.log"
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "run"], env=env, cwd=REPO_ROOT,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, preexec_fn=_ignore_sigint)
    return proc, settings, log


def _children(proc: subprocess.Popen[bytes]) -> dict[str, psutil.Process]:
    """The services under the supervisor, by service name (`services.cli <name…>`)."""
    named = {}
    for child in psutil.Process(proc.pid).children():
        try:
            argv = child.cmdline()
        except psutil.Error:  # exited, not reaped yet
            continue
        if "services.cli" in argv:
            named[" ".join(argv[argv.index("services.cli") + 1:])] = child
    return named


def _all_ready(proc: subprocess.Popen[bytes], settings: Settings, log: Path) -> bool:
    assert proc.poll() is None, f"labflow run exited:\n{log.read_text()[-3000:]}"
    return (port_open(settings.mllp_port)
            and http_status(f"http://127.0.0.1:{settings.worker_ops_port}/readyz") == 200
            and http_status(f"http://127.0.0.1:{settings.tracing_ops_port}/readyz") == 200
            and port_open(settings.dashboard_port) and port_open(settings.opendata_port))


def _gone(processes: list[psutil.Process]) -> bool:
    return not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_sigint_from_a_background_job_stops_everything_and_a_killed_service_is_restarted(
    fresh_settings: Settings, tmp_path: Path
) -> None:
    proc, settings, log = _start_run(fresh_settings, tmp_path)
    try:
        wait_until(lambda: _all_ready(proc, settings, log), timeout_s=90, what="every service ready")
        children = _children(proc)
        assert set(children) == {"gateway", "worker", "opendata", "tracing standin", "tracing", "dashboard"}

        os.kill(children["worker"].pid, signal.SIGKILL)
        def restarted() -> bool:
            worker = _children(proc).get("worker")
            return worker is not None and worker.pid != children["worker"].pid

        wait_until(restarted, timeout_s=20, what="a new worker process")
        wait_until(lambda: http_status(f"http://127.0.0.1:{settings.worker_ops_port}/readyz") == 200,
                   timeout_s=60, what="the restarted worker ready")
        assert proc.poll() is None, "the platform stopped because one service crashed"
        assert port_open(settings.mllp_port), "the gateway went down with the worker"
        assert "worker exited with -9; restarting" in log.read_text()

        running = list(_children(proc).values())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        wait_until(lambda: _gone(running), timeout_s=5, what="every service stopped")
        assert not port_open(settings.mllp_port) and not port_open(settings.dashboard_port)
    finally:
        if proc.poll() is None:
            proc.kill()
        for child in psutil.Process().children(recursive=True):
            child.kill()


def test_sigterm_stops_every_service(fresh_settings: Settings, tmp_path: Path) -> None:
    proc, settings, log = _start_run(fresh_settings, tmp_path)
    try:
        wait_until(lambda: _all_ready(proc, settings, log), timeout_s=90, what="every service ready")
        running = list(_children(proc).values())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        wait_until(lambda: _gone(running), timeout_s=5, what="every service stopped")
        assert "SIGTERM received, stopping every service" in log.read_text()
        for port in (settings.mllp_port, settings.dashboard_port, settings.opendata_port,
                     settings.worker_ops_port, settings.tracing_ops_port):
            assert not port_open(port), f"port {port} still held after the stop"
    finally:
        if proc.poll() is None:
            proc.kill()


SLEEPER_SUPERVISOR = textwrap.dedent("""
    import sys
    from services.supervisor import RestartPolicy, Supervisor

    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    supervisor = Supervisor(("a", "b"), command=lambda name: sleeper,
                            restart=RestartPolicy(initial_s=0.1, max_s=0.2))
    supervisor.start()
    print("started", flush=True)
    sys.exit(supervisor.wait())
""")


def test_a_stop_signal_between_start_and_wait_is_a_clean_stop() -> None:
    """The window `labflow run` has between starting its children and supervising them: a SIGHUP
    there (as when the test above signals the moment "started" is printed) used to raise
    KeyboardInterrupt out of the caller (exit -2). It is a clean stop: exit 0, no child left."""
    script = SLEEPER_SUPERVISOR.replace(
        'print("started", flush=True)',
        'import os, signal\nprint("started", flush=True)\nos.kill(os.getpid(), signal.SIGHUP)',
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
        assert proc.stderr is not None and b"SIGHUP received, stopping every service" in proc.stderr.read()
    finally:
        for child in psutil.Process().children(recursive=True):
            child.kill()
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("how", ["SIGHUP", "SIGKILL of the supervisor"])
def test_no_child_outlives_its_supervisor(how: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER_SUPERVISOR], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
        children = psutil.Process(proc.pid).children()
        assert len(children) == 2
        if how == "SIGHUP":
            proc.send_signal(signal.SIGHUP)
            assert proc.wait(10) == 0
        else:
            proc.kill()
            proc.wait(10)
        wait_until(lambda: _gone(children), timeout_s=5, what="the children to stop with their supervisor")
    finally:
        for child in psutil.Process().children(recursive=True):
            child.kill()
        if proc.poll() is None:
            proc.kill()
