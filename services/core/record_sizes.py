"""Size limits end to end, derived in one place from the documented intake limits.

The promise to a lab: a payload up to the documented limit (`LABFLOW_MLLP_MAX_MESSAGE_BYTES` for one
MLLP frame, `LABFLOW_HTTP_MAX_BODY_BYTES` for one HTTP body) is answered on its content — never
refused, and never left unanswered, because Kafka cannot carry it. A payload over its limit is
refused at the gateway (MLLP `AR`, HTTP 413) and only its SHA-256 goes to the rejected topic.

So the Kafka limits are not set by hand: they follow from the largest record the gateway may write
for a payload of the largest accepted size P:

- the raw record: P, plus its key and headers (lab, control id, transport, time);
- a rejection: the payload in base64 (4 * ceil(P / 3)), plus the reasons and the JSON envelope;
- a result: one per observation, much smaller than its payload in practice (the sealed identity is
  base64 of part of the payload); one that is not is refused like an over-limit payload.

The rejection is the largest, so `record_bytes = 4 * ceil(P / 3) + ENVELOPE_BYTES` is the producer's
`message.max.bytes` (librdkafka refuses a larger record in `produce()` with MSG_SIZE_TOO_LARGE, which
the publisher turns into a refusal rather than an exception). The broker checks `max.message.bytes`
on a whole record batch after compression, so the topics get the lz4 worst case of that record plus
the batch framing — and never less than the producer's `batch.size`, so small records batched
together are never refused either.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.core.config import Settings

ENVELOPE_BYTES = 64 * 1024
"""Room for keys, headers, reasons and JSON field names around the largest payload. A rejection whose
reasons outgrow it is written without its payload (the SHA-256 stays), never left unwritten."""

BATCH_FRAMING_BYTES = 1024
"""Record batch header (61 bytes), per-record varints and attributes, with a wide margin."""

PRODUCER_BATCH_BYTES = 1_000_000
"""librdkafka's `batch.size` default, set explicitly so the topic limit can rely on it."""


def base64_size(n: int) -> int:
    return 4 * ((n + 2) // 3)


def lz4_bound(n: int) -> int:
    """LZ4_compressBound: what incompressible input may grow to."""
    return n + n // 255 + 16


@dataclass(frozen=True, slots=True)
class SizeLimits:
    mllp_message_bytes: int
    http_body_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> SizeLimits:
        return cls(settings.mllp_max_message_bytes, settings.http_max_body_bytes)

    @property
    def payload_bytes(self) -> int:
        """The largest payload the gateway writes to Kafka (one MLLP frame or one HTTP body)."""
        return max(self.mllp_message_bytes, self.http_body_bytes)

    @property
    def record_bytes(self) -> int:
        """The largest record (value, key and headers): producer `message.max.bytes`."""
        return base64_size(self.payload_bytes) + ENVELOPE_BYTES

    @property
    def topic_bytes(self) -> int:
        """The largest record batch the broker must take: topic `max.message.bytes`."""
        return lz4_bound(max(self.record_bytes, PRODUCER_BATCH_BYTES)) + BATCH_FRAMING_BYTES
