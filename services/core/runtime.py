"""Process tuning shared by the hot-path services."""

from __future__ import annotations

import gc
import resource

from services.core.errors import OperatorError


def tune_garbage_collector() -> None:
    """Fewer cyclic collections: batches allocate many short-lived objects without cycles, and with the
    default thresholds the collector re-scans every long-lived object thousands of times a second
    (it cost the worker ~40 % of its time in profiles). Start-up objects are moved out of its sight.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


OPEN_FILES_HEADROOM = 512
"""Descriptors a service needs besides its client connections: Kafka and PostgreSQL sockets, the HTTP
and ops listeners and their clients, log and metrics files, the interpreter's own."""


def ensure_open_files(connections: int, setting: str) -> int:
    """Make room for `connections` sockets (+ OPEN_FILES_HEADROOM) in RLIMIT_NOFILE, or refuse to start.

    A gateway that runs out of descriptors fails late and confusingly (accept() errors under load, a
    Kafka reconnect that cannot open its socket), so the limit is checked at start: the soft limit is
    raised when the hard limit allows (an unprivileged process may do that), else the operator gets
    one line naming the limit, the setting behind the need, and both ways out. Returns the soft limit.
    """
    needed = connections + OPEN_FILES_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise OperatorError(
                f"{setting}={connections:,} needs {needed:,} open files but RLIMIT_NOFILE allows {hard:,} "
                f"(hard limit): raise it (`ulimit -Hn {needed}` as root, LimitNOFILE= in systemd, "
                f"nofile in limits.conf or the container runtime) or lower {setting}"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        soft = needed
    return soft
