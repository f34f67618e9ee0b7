"""Decode step: Kafka record → canonical LabResult, or `Undecodable` with its reason (dead-lettered)."""

from __future__ import annotations

from pydantic import ValidationError

from services.core.consume import Undecodable
from services.core.domain.model import LabResult


def decode(value: bytes | None) -> LabResult:
    if not value:
        raise Undecodable("empty", "record has no value")
    try:
        return LabResult.model_validate_json(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        kind = "not-json" if errors and errors[0]["type"] == "json_invalid" else "contract-violation"
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        raise Undecodable(kind, detail) from None
