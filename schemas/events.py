"""Events on Kafka: every state change a notice or the directory goes through, as the audit log sees it."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
# The integers an IEEE double holds exactly (I-JSON, RFC 7493 section 2.2). The audit log hashes records as
# RFC 8785 canonical JSON, whose library refuses larger ones, so they are refused here, at the boundary.
SAFE_INTEGER = 2**53 - 1
SafeInt = Annotated[int, Field(ge=-SAFE_INTEGER, le=SAFE_INTEGER)]
DetailValue = str | SafeInt | bool | None


class EventType(StrEnum):
    notice_submitted = "notice.submitted"
    notice_delivered = "notice.delivered"
    notice_fetched = "notice.fetched"
    notice_acknowledged = "notice.acknowledged"
    notice_rejected = "notice.rejected"
    notice_recall_requested = "notice.recall_requested"
    notice_recalled = "notice.recalled"
    notice_expired = "notice.expired"
    notice_replied = "notice.replied"
    notice_escalated = "notice.escalated"
    notice_erased = "notice.erased"
    agency_registered = "agency.registered"
    key_registered = "key.registered"
    key_revoked = "key.revoked"
    credential_issued = "credential.issued"
    credential_revoked = "credential.revoked"
    webhook_parked = "webhook.parked"
    webhook_replayed = "webhook.replayed"
    auditor_query = "auditor.query"


class Event(BaseModel):
    """Metadata and hashes only: an event never carries notice plaintext."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="Deterministic for the same fact, so a re-sent event is recorded once."
    )
    type: EventType
    occurred_at: datetime
    actor: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    agency: str | None = None
    notice_id: UUID | None = None
    case_ref: str | None = None
    envelope_sha256: Sha256Hex | None = None
    details: dict[str, DetailValue] = Field(default_factory=dict)


def fact_id(kind: str, *parts: str) -> str:
    """The id of one fact: the same kind of event about the same things always gets the same id, so an
    event sent again (at-least-once, or after a crash) is recorded once."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, ":".join(("deskbridge", kind, *parts))))
