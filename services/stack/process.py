"""Starting processes: every process LabFlow's tools start and leave running goes through `launch`.

One launcher, one policy, whoever the caller (`labflow stack up`, `labflow run`, the tests, the load
tests and the chaos suite through `labflow_testkit.processes.ServiceProcess`):
- stdin is /dev/null: a background process never competes for the terminal;
- stdout and stderr go to one log file, appended to (a restarted process adds to its file), or are
  inherited when no file is given;
- `detached`: a session of its own (the local stack's Kafka and PostgreSQL, the chaos suite's
  Toxiproxy): it outlives the command that started it and is found again by its pid file
  (`ManagedProcess`);
- `own_group`: a process group of its own (the supervisor's children): a Ctrl-C in the terminal
  reaches the parent alone, which then stops each child once, in order;
- `die_with_parent`: SIGTERM when the parent dies, even by kill -9 (PR_SET_PDEATHSIG, Linux), so no
  child is left holding its ports; SIGINT back to its default in the child.
Without these a child shares its parent's process group, so a Ctrl-C stops both (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def launch(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    detached: bool = False,
    own_group: bool = False,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `argv` (see the module's policy); its output goes to the end of `log`."""
    if log is None:
        return _popen(argv, None, env, detached, own_group, die_with_parent)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:  # the child keeps its own descriptor of the file
        return _popen(argv, out.fileno(), env, detached, own_group, die_with_parent)


def _popen(
    argv: Sequence[str],
    out: int | None,
    env: Mapping[str, str] | None,
    detached: bool,
    own_group: bool,
    die_with_parent: bool,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT if out is not None else None,
        env=env,
        start_new_session=detached,
        process_group=0 if own_group else None,
        preexec_fn=_die_with_parent if die_with_parent else None,
    )


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM when the parent dies, default SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the parent's own stop still covers it
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """A background process started by `labflow stack up` and remembered by its pid file."""

    def __init__(self, name: str, pid_file: Path, log_file: Path) -> None:
        self.name = name
        self.pid_file = pid_file
        self.log_file = log_file

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        proc = launch(argv, log=self.log_file, env=env, detached=True)
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def adopt(self, pid: int) -> None:
        """Remember a pid started by another launcher (pg_ctl daemonizes the server itself)."""
        self.pid_file.write_text(str(pid))

    def stop(self, timeout_s: float, sig: signal.Signals = signal.SIGTERM) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True
