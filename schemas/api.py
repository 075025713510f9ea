"""Request and response bodies of the gateway and audit APIs."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.notices import AgencyId, AwareDatetime

# PostgreSQL holds no U+0000 in text and no integer past bigint: such input is refused here with 422,
# never passed on for the database to refuse with a 5xx.
NO_NUL = r"^[^\x00]*$"
BIGINT_MAX = 2**63 - 1
KEY_ID_PATTERN = r"^[A-Za-z0-9_-]{43}$"  # every key's kid is its RFC 7638 SHA-256 thumbprint, base64url
KeyId = Annotated[str, StringConstraints(pattern=KEY_ID_PATTERN)]


class DeliveryState(StrEnum):
    accepted = "accepted"
    delivered = "delivered"
    fetched = "fetched"
    acknowledged = "acknowledged"
    replied = "replied"  # the recipient answered it with a reply (in_reply_to)
    recalled = "recalled"  # the sender withdrew it; unfetched copies left the inbox
    expired = "expired"  # past its expires_at; no longer served


class NoticeAccepted(BaseModel):
    notice_id: UUID
    state: DeliveryState = DeliveryState.accepted
    envelope_sha256: str
    status_url: str


class RecipientStatus(BaseModel):
    agency: str
    state: DeliveryState
    delivered_at: datetime | None = None
    fetched_at: datetime | None = None
    acknowledged_at: datetime | None = None
    recalled_at: datetime | None = None
    expired_at: datetime | None = None
    replied_at: datetime | None = None
    ack_due_at: datetime | None = None
    escalated_at: datetime | None = None
    receipt: str | None = Field(
        default=None, description="The recipient's signed receipt, once acknowledged."
    )


class NoticeStatus(BaseModel):
    notice_id: UUID
    sender: str
    case_ref: str
    submitted_at: datetime | None
    envelope_sha256: str
    recipients: list[RecipientStatus]


class SentNotice(NoticeStatus):
    """A notice in its sender's list: its status as `GET /v1/notices/{id}` gives it, with the routing
    header's type, priority and TLP once ingest has stored the envelope (null before)."""

    notice_type: str | None = None
    priority: str | None = None
    tlp: str | None = None


class SentPage(BaseModel):
    items: list[SentNotice] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `after` for the next, older page; null when this page is the last."
    )


class InboxItem(BaseModel):
    notice_id: UUID
    sender: str
    case_ref: str
    notice_type: str
    priority: str
    tlp: str
    state: DeliveryState
    delivered_at: datetime
    expires_at: datetime | None = None
    in_reply_to: UUID | None = None
    cursor: str
    envelope: str = Field(description="The sealed envelope exactly as sent: an outer JWS, flattened JSON.")


class InboxPage(BaseModel):
    items: list[InboxItem]
    next_cursor: str | None


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    receipt: str = Field(
        max_length=4096,
        description="Compact JWS (Ed25519, typ deskbridge-receipt+jws, kid = your signing key) over "
        '{"notice_id", "envelope_sha256" (of the envelope as served), "agency" (yours), "iat" (Unix s)}.',
    )


class Acknowledgement(BaseModel):
    notice_id: UUID
    agency: str
    state: DeliveryState
    acknowledged_at: datetime
    receipt: str = Field(description="The recipient's signed receipt, as stored: proof of receipt.")


class AgencyOut(BaseModel):
    id: str
    name: str
    kind: str


class Jwks(BaseModel):
    keys: list[dict[str, Any]]


class AgencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: AgencyId
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    kind: str = Field(default="partner", pattern="^(desk|partner)$")


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jwk: dict[str, Any]
    not_after: AwareDatetime | None = None
    retire_previous_after_s: int | None = Field(
        default=None,
        ge=0,
        le=30 * 86400,
        description="Rotation: the agency's current keys of the same use expire this many seconds from now.",
    )

    def retire_previous_after(self) -> timedelta | None:
        s = self.retire_previous_after_s
        return timedelta(seconds=s) if s is not None else None


class KeyRevocation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="Recorded in the audit log, e.g. compromise.",
    )


class CredentialIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(pattern="^(agency|auditor|admin)$")
    agency: AgencyId | None = None
    label: str = Field(default="", max_length=200, pattern=NO_NUL)


class CredentialOut(BaseModel):
    credential_id: str
    role: str
    agency: str | None
    token: str = Field(description="Shown once; deskbridge keeps only its hash.")


class Problem(BaseModel):
    """RFC 9457 problem details; `code` is the stable name of the failure (docs/errors.md)."""

    type: str = Field(description="This API's page on the code: <base URL>/problems/<code>.")
    title: str
    status: int
    detail: str = Field(description="What exactly failed, for a person.")
    code: str = Field(description="Stable across deployments and versions; software switches on it.")


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, max_length=200, pattern=NO_NUL, description="Recorded in the audit log."
    )


class RecallIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=200, pattern=NO_NUL)


class RecallAccepted(BaseModel):
    notice_id: UUID
    status: str = Field(default="recall accepted", description="Applied by ingest within moments.")


class CaseNotice(BaseModel):
    """One notice of a case thread; `depth` is how far down a reply chain it sits."""

    notice_id: UUID
    sender: str
    notice_type: str
    priority: str
    tlp: str
    sent_at: datetime
    expires_at: datetime | None = None
    in_reply_to: UUID | None = None
    forwarded_from: UUID | None = None
    recalled_at: datetime | None = None
    envelope_sha256: str
    depth: int
    recipients: list[RecipientStatus] = Field(
        description="Every recipient's state for the sender and the desk; only one's own row otherwise."
    )


class CaseThread(BaseModel):
    case_ref: str
    notices: list[CaseNotice] = Field(
        description="Depth-first: each notice followed by its replies, by time."
    )


class Alert(BaseModel):
    """Something the desk must act on: a notice past its acknowledgement deadline, a parked webhook."""

    kind: str = Field(description="sla_escalation | webhook_parked")
    agency: str
    notice_id: UUID | None = None
    case_ref: str | None = None
    priority: str | None = None
    since: datetime
    detail: str
