"""Bearer credential rotation: a new token for the same role and agency, the old one revoked after a grace."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import Event, EventType
from services.common.db import Credential, utcnow
from services.common.directory import DirectoryError, issue_credential

MAX_GRACE_S = 86_400


@dataclass(frozen=True)
class Rotation:
    """The new token (shown once) and the events that record the rotation."""

    token: str
    credential_id: str
    replaces: str
    replaced_until: datetime
    events: tuple[Event, Event]


async def rotate_credential(session: AsyncSession, credential_id: str, grace_s: int, actor: str) -> Rotation:
    """Issues the successor of a credential and schedules the old one's revocation `grace_s` from now.

    A credential is rotated once: a second rotation while the first one's grace runs is refused, so a
    leaked token cannot be used to mint further ones after its owner has moved on.
    """
    if not 0 <= grace_s <= MAX_GRACE_S:
        raise DirectoryError(422, f"grace_s must be between 0 and {MAX_GRACE_S} seconds")
    # FOR UPDATE serialises concurrent rotations of one credential (PostgreSQL; SQLite writes one at a time).
    old = await session.get(Credential, credential_id, with_for_update=True, populate_existing=True)
    now = utcnow()
    if old is None or (old.revoked_at is not None and old.revoked_at <= now):
        raise DirectoryError(401, "the credential is not valid")
    if old.revoked_at is not None:
        raise DirectoryError(
            409, f"credential {old.id} was already rotated; it stops working at {old.revoked_at.isoformat()}"
        )
    token, issued = await issue_credential(session, old.role, old.agency_id, old.label, actor)
    new_id = str(issued.details["credential_id"])
    old.revoked_at = now + timedelta(seconds=grace_s)
    revoked = Event(
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"deskbridge:{EventType.credential_revoked}:{old.id}")),
        type=EventType.credential_revoked,
        occurred_at=now,
        actor=actor,
        agency=old.agency_id,
        details={
            "credential_id": old.id,
            "role": old.role,
            "revoked_at": old.revoked_at.isoformat(),
            "grace_s": grace_s,
            "replaced_by": new_id,
        },
    )
    issued = issued.model_copy(update={"details": {**issued.details, "rotated_from": old.id}})
    return Rotation(token, new_id, old.id, old.revoked_at, (issued, revoked))
