"""What an operator reads when a server is down, a setting is wrong or a port is taken: one line that
names the fix (services.core.errors), and librdkafka's reconnect storm held to a line a minute."""

from __future__ import annotations

import errno
import logging

import psycopg
import sqlalchemy.exc
from confluent_kafka import KafkaError, KafkaException

from services.core.errors import OperatorError, explain, redact
from services.core.logs import RateLimit


def test_a_database_down_names_the_setting_and_the_command_without_the_password() -> None:
    message = explain(psycopg.OperationalError("connection refused\nIs the server running?"),
                      database_url="postgresql://labflow:s3cret@db:5432/labflow")
    assert message is not None
    assert "LABFLOW_DATABASE_URL" in message and "labflow stack up" in message
    assert "s3cret" not in message and "\n" not in message


def test_a_malformed_database_url_says_what_is_expected() -> None:
    message = explain(sqlalchemy.exc.ArgumentError("Could not parse SQLAlchemy URL from string 'x'"))
    assert message is not None and message.startswith("LABFLOW_DATABASE_URL is not a valid PostgreSQL URL")


def test_kafka_down_names_the_bootstrap_setting() -> None:
    error = KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))
    message = explain(error, kafka_bootstrap="127.0.0.1:19092")
    assert message is not None and "127.0.0.1:19092 (LABFLOW_KAFKA_BOOTSTRAP)" in message


def test_a_port_in_use_names_the_setting_that_moves_it() -> None:
    error = OSError(errno.EADDRINUSE, "error while attempting to bind on address ('127.0.0.1', 2575): "
                                      "address already in use")
    message = explain(error, ports={"LABFLOW_MLLP_PORT": 2575, "LABFLOW_HTTP_PORT": 8080})
    assert message == ("port 2575 is already in use by another process: stop it or set LABFLOW_MLLP_PORT "
                       "to a free port")


def test_operator_errors_pass_through_and_bugs_keep_their_traceback() -> None:
    assert explain(OperatorError("LABFLOW_X is not set")) == "LABFLOW_X is not set"
    assert explain(KeyError("bug")) is None
    assert explain(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))) is None


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://u:p@h:1/d") == "postgresql://u:***@h:1/d"
    assert redact("postgresql://h/d") == "postgresql://h/d"


def _record(facility: str, client: str, text: str) -> logging.LogRecord:
    return logging.LogRecord("librdkafka", logging.ERROR, __file__, 0, "%s [%s] %s", (facility, client, text),
                             None)


def test_librdkafka_lines_are_rate_limited_per_client_and_facility() -> None:
    now = [0.0]
    limit = RateLimit(period_s=60, clock=lambda: now[0])
    passed = []
    for second in range(0, 130):  # a reconnect failure every 100 ms for 130 s
        for tenth in range(10):
            now[0] = second + tenth / 10
            record = _record("FAIL", "rdkafka#producer-1", f"Connect failed (after {tenth}ms)")
            if limit.filter(record):
                passed.append(record)
    # t=0, t=60, t=120: with what was held back
    assert [vars(r)["held_back"] for r in passed] == [0, 599, 599]
    assert limit.filter(_record("FAIL", "rdkafka#consumer-2", "Connect failed"))  # another client
    assert limit.filter(_record("BROKERFAIL", "rdkafka#producer-1", "down"))  # another facility
