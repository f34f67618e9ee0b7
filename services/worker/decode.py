"""Decode step: Kafka record → canonical LabResult, or a dead letter with its reason."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from services.core.domain.model import LabResult


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    value: bytes
    reason: str
    detail: str


def decode(value: bytes | None, partition: int, offset: int) -> LabResult | DeadLetter:
    if not value:
        return DeadLetter(partition, offset, value or b"", "empty", "record has no value")
    try:
        return LabResult.model_validate_json(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        kind = "not-json" if errors and errors[0]["type"] == "json_invalid" else "contract-violation"
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        return DeadLetter(partition, offset, value, kind, detail)
