"""Expected operating conditions, said in one line that names what to fix.

An operator who runs a command with the stack down, a mistyped URL or a port already in use needs
the setting or the command that fixes it, not a traceback with the useful line buried at the bottom.
`explain` turns the conditions we expect into that line; anything else is a bug and keeps its
traceback. URLs are shown without their password.
"""

from __future__ import annotations

import errno
import re

import psycopg
import sqlalchemy.exc
from confluent_kafka import KafkaError, KafkaException

STACK_HINT = "start the local stack with `labflow stack up`, or point the setting at a running server"


class OperatorError(RuntimeError):
    """A condition the operator fixes (a missing setting, a server down): its message says how."""


class KafkaUnavailable(OperatorError):
    def __init__(self, bootstrap: str, detail: str = "no broker answered") -> None:
        super().__init__(
            f"Kafka is unreachable at {bootstrap} (LABFLOW_KAFKA_BOOTSTRAP): {detail}; {STACK_HINT}"
        )


def redact(url: str) -> str:
    """`scheme://user:***@host/…`: a URL fit for a log or an error message."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_KAFKA_DOWN = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
               KafkaError._RESOLVE}
_BIND = re.compile(r"\('?(?P<host>[^',]*)'?, (?P<port>\d+)\)")


def explain(exc: BaseException, *, database_url: str | None = None, kafka_bootstrap: str | None = None,
            ports: dict[str, int] | None = None) -> str | None:
    """One line for an expected condition (naming the setting or command to fix it), None otherwise.

    `ports` maps a setting name (LABFLOW_MLLP_PORT…) to its value, to name the one that is taken.
    """
    if isinstance(exc, OperatorError):
        return str(exc)
    if isinstance(exc, sqlalchemy.exc.ArgumentError) or (
        isinstance(exc, psycopg.ProgrammingError) and "invalid" in str(exc).lower()
        and ("dsn" in str(exc).lower() or "connection" in str(exc).lower())
    ):
        return f"LABFLOW_DATABASE_URL is not a valid PostgreSQL URL ({_first_line(exc)}): " \
               "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    if isinstance(exc, psycopg.OperationalError | sqlalchemy.exc.OperationalError):
        where = f" at {redact(database_url)}" if database_url else ""
        return f"PostgreSQL is unreachable{where} (LABFLOW_DATABASE_URL): {_first_line(exc)}; {STACK_HINT}"
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError) \
            and exc.args[0].code() in _KAFKA_DOWN:
        return str(KafkaUnavailable(kafka_bootstrap or "?", exc.args[0].str()))
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        match = _BIND.search(str(exc))
        port = int(match["port"]) if match else None
        names = [name for name, value in (ports or {}).items() if value == port]
        setting = f"set {' or '.join(names)} to a free port" if names else "set the service's port setting"
        return f"port {port if port is not None else '?'} is already in use by another process: stop it or " \
               f"{setting}"
    return None
