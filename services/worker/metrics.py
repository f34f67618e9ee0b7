from prometheus_client import Counter, Gauge, Histogram

BATCH_SIZE = Histogram(
    "labflow_worker_batch_size", "Records per batch",
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000),
)
BATCH_LATENCY = Histogram(
    "labflow_worker_batch_seconds", "Decode + write + commit time of one batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ROWS_WRITTEN = Counter("labflow_worker_rows_written_total", "Rows written to PostgreSQL", ["table"])
END_TO_END = Histogram(
    "labflow_worker_end_to_end_seconds", "Gateway reception to committed in PostgreSQL",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
REJECTED = Counter("labflow_worker_dead_letters_total", "Records sent to the rejected topic", ["reason"])
LAG = Gauge("labflow_worker_consumer_lag", "Messages behind the end of the partition", ["topic", "partition"])
FENCED = Counter("labflow_worker_fenced_batches_total", "Batches discarded because another worker moved on")
