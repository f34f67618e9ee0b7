"""Process tuning shared by the hot-path services."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import threading

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


class HeapTrimmer:
    """Hands the C heap's free pages back to the system every `interval_s` (glibc `malloc_trim`).

    Short-lived large blocks interleaved with long-lived small ones leave freed pages glibc keeps. On
    asyncio's selector loop every socket read allocated 256 KiB and shrank it to the bytes received:
    at 5,000 connections the gateway's RSS grew by ~0.4 kB per message (labs5000: 210 MB after 2
    minutes, 386 MB after 10) while its Python objects stayed constant (tracemalloc); with this trim
    it stayed under 200 MB. The gateway now runs on uvloop, which reads into one buffer, and the trim
    bounds whatever churn of that kind remains (HTTP bodies, metrics exposition). A trim takes a few
    milliseconds in its own thread, without the GIL. Does nothing where the C library has no
    `malloc_trim` (not glibc).
    """

    def __init__(self, interval_s: float = 10.0) -> None:
        library = ctypes.util.find_library("c")
        self._trim = getattr(ctypes.CDLL(library), "malloc_trim", None) if library else None
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heap-trim", daemon=True)

    def start(self) -> HeapTrimmer:
        if self._trim is not None:
            self._thread.start()
        return self

    def _run(self) -> None:
        assert self._trim is not None
        while not self._stopped.wait(self._interval_s):
            self._trim(0)

    def stop(self) -> None:
        self._stopped.set()

