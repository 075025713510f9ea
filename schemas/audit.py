"""An audit log entry as the auditor API serves it and `deskbridge audit verify` checks it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from schemas.events import DetailValue, Sha256Hex


class AuditRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    event_id: str
    event_type: str
    occurred_at: str
    recorded_at: str
    actor: str
    agency: str | None
    notice_id: str | None
    case_ref: str | None
    envelope_sha256: Sha256Hex | None
    details: dict[str, DetailValue]
    prev_hash: Sha256Hex
    entry_hash: Sha256Hex


class AuditPage(BaseModel):
    entries: list[AuditRecord]
    next_after: int | None
    head_seq: int
    head_hash: Sha256Hex
