"""Gateway metrics. Labels carry lab ids and codes, never anything about a patient.

With `--processes N` the children write them to PROMETHEUS_MULTIPROC_DIR and the parent serves their
aggregate (services/gateway/processes.py): counters and histograms add up; each gauge says how it
combines (`multiprocess_mode`, ignored in a single process).
"""

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "labflow_gateway_messages_total", "Messages answered, by lab, transport and ACK code",
    ["lab", "transport", "ack_code"],
)
RESULTS = Counter("labflow_gateway_results_total", "Results accepted and written to Kafka", ["lab"])
ACK_LATENCY = Histogram(
    "labflow_gateway_ack_latency_seconds", "From the end of a message to its acknowledgement",
    ["transport"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DELIVERY_FAILURES = Counter(
    "labflow_gateway_delivery_failures_total", "Messages not acknowledged because Kafka did not confirm"
)
CONNECTIONS = Gauge(
    "labflow_gateway_mllp_connections", "Open MLLP connections", multiprocess_mode="livesum"
)
STRAY_BYTES = Counter("labflow_gateway_mllp_stray_bytes_total", "Bytes received outside an MLLP frame")
KAFKA_REACHABLE = Gauge(
    "labflow_gateway_kafka_reachable",
    "1 while Kafka answers the gateway's producer (every process's), else 0",
    multiprocess_mode="livemin",
)
CONNECTIONS_CLOSED = Counter(
    "labflow_gateway_mllp_connections_closed_total",
    "MLLP connections refused (caps, drain) or closed by a deadline, by reason", ["reason"],
)
