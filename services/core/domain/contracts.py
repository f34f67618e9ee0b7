"""Topic contracts: the pydantic model of each topic, and the JSON Schemas generated from them."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.core.domain.case_event import CaseEventMessage
from services.core.domain.model import LabResult, Transport
from services.core.domain.rejection import Rejection

SCHEMAS_DIR = Path(__file__).resolve().parents[3] / "schemas"


class RawPayloadHeaders(BaseModel):
    """`lab.results.raw.v1`: the record value is the payload exactly as received; these are its headers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transport: Transport
    received_at: AwareDatetime
    lab: str = Field(description="Sending facility (MSH-4) when it could be read, else empty")
    control_id: str = Field(description="MSH-10 when it could be read, else empty")


CONTRACTS: dict[str, type[BaseModel]] = {
    "lab.results.v1": LabResult,
    "lab.results.raw.v1": RawPayloadHeaders,
    "lab.results.rejected.v1": Rejection,
    "cases.v1": CaseEventMessage,
}


def schema_text(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(directory: Path = SCHEMAS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for topic, model in CONTRACTS.items():
        path = directory / f"{topic}.schema.json"
        path.write_text(schema_text(model))
        written.append(path)
    return written
