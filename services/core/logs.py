"""Structured JSON logs (structlog). Never log identity: pass ids (lab, control id, result id) only.

librdkafka's own lines (a broker down makes it log every reconnect attempt, hundreds a minute) come
through the `librdkafka` logger: JSON like every other line, at most one per client and facility
a minute, with the count of those held back.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import structlog

_service = [""]  # librdkafka logs from its own threads, where the bound context is not set


def configure_logging(service: str, level: str = "INFO") -> None:
    logging.basicConfig(stream=sys.stderr, format="%(message)s", level=level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    _service[0] = service


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]


class RateLimit(logging.Filter):
    """Lets one record per key through every `period_s`; the next one says how many were held back."""

    def __init__(self, period_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.period_s = period_s
        self.clock = clock
        self._last: dict[tuple[object, ...], float] = {}
        self._held: dict[tuple[object, ...], int] = {}

    @staticmethod
    def key(record: logging.LogRecord) -> tuple[object, ...]:
        # confluent-kafka logs ("%s [%s] %s", facility, client, text): one key per client and facility
        args = record.args if isinstance(record.args, tuple) else ()
        return (record.levelno, *args[:2]) if len(args) >= 2 else (record.levelno, record.msg)

    def filter(self, record: logging.LogRecord) -> bool:
        key, now = self.key(record), self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        record.held_back = self._held.pop(key, 0)
        return True


class _ToStructlog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) and len(record.args) == 3 else None
        fields: dict[str, object] = {"service": _service[0], "held_back": getattr(record, "held_back", 0)}
        if args is not None:
            fields.update(facility=args[0], client=args[1])
            event = str(args[2])
        else:
            event = record.getMessage()
        structlog.get_logger("librdkafka").log(record.levelno, event, **fields)


def librdkafka_logger() -> logging.Logger:
    """The logger to hand to confluent-kafka clients (`"logger": librdkafka_logger()`)."""
    logger = logging.getLogger("librdkafka")
    if not logger.handlers:
        logger.addHandler(_ToStructlog())
        logger.addFilter(RateLimit())
        logger.propagate = False
    return logger
