"""The contract of `lab.results.rejected.v1`: what could not be accepted, with its raw bytes and reasons."""

from __future__ import annotations

import base64
import hashlib
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.core.domain.model import Transport


class RejectionReason(BaseModel):
    """One reason, shaped like an HL7 ERR segment (location, table 0357 code, severity, text)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    segment: str | None = None
    sequence: int | None = None
    field: int | None = None
    component: int | None = None
    code: str = Field(description="HL7 table 0357 error code")
    severity: Literal["E", "W", "F", "I"] = "E"
    text: str = Field(description="Precise human text; never carries identity")
    kind: str | None = Field(default=None, description="The issue catalogue's id (docs/errors.md)")
    hint: str | None = Field(default=None, description="How the lab fixes it (the issue catalogue's)")


class Rejection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    rejection_id: str
    stage: Literal["gateway", "worker", "tracing"]
    ack_code: Literal["AE", "AR"] | None = Field(default=None, description="What the lab was answered")
    lab: str | None = None
    transport: Transport | None = None
    message_control_id: str | None = None
    received_at: AwareDatetime
    reasons: list[RejectionReason]
    payload_base64: str = Field(
        default="", description="The payload exactly as received; empty when it was over the size limit"
    )
    payload_sha256: str | None = Field(default=None, description="SHA-256 (hex) of the whole payload")
    payload_size: int | None = Field(default=None, description="Size of the whole payload in bytes")
    source_topic: str | None = Field(default=None, description="For consumer dead letters: where it was read")
    source_partition: int | None = None
    source_offset: int | None = None

    @property
    def payload_kept(self) -> bool:
        return bool(self.payload_base64) or not self.payload_size

    @property
    def payload(self) -> bytes:
        return base64.b64decode(self.payload_base64)

    @staticmethod
    def id_for(payload: bytes, received_at_iso: str) -> str:
        return hashlib.sha256(received_at_iso.encode() + b"\x00" + payload).hexdigest()[:32]
