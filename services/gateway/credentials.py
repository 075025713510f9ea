"""Credential routes: any holder of a bearer credential rotates it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from schemas.api import CredentialOut
from services.common.credentials import MAX_GRACE_S, rotate_credential
from services.common.directory import Principal
from services.common.http import Session, require
from services.gateway.deps import Publisher, commit_audited
from services.gateway.notices import ERRORS

router = APIRouter(prefix="/v1/credentials", tags=["credentials"])
SOURCE = "deskbridge/gateway/credentials"
# A signature has no credential to rotate, so this route takes bearer credentials only.
BearerHolder = Annotated[Principal, Depends(require("agency", "auditor", "admin", by_signature=False))]


class RotationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: int = Field(
        default=0, ge=0, le=MAX_GRACE_S, description="Seconds the old credential keeps working; 0: at once."
    )


class RotationOut(CredentialOut):
    replaces: str = Field(description="The rotated credential's id.")
    replaced_until: datetime = Field(description="When the rotated credential stops working.")


@router.post(
    "/rotate",
    status_code=201,
    response_model=RotationOut,
    responses=ERRORS,
    summary="Replace the calling credential by a new token, shown once; the old one is revoked after "
    "grace_s (any bearer credential).",
)
async def post_rotation(
    principal: BearerHolder, session: Session, publisher: Publisher, body: RotationIn | None = None
) -> RotationOut:
    grace_s = body.grace_s if body is not None else 0
    rotation = await rotate_credential(session, principal.credential_id, grace_s, principal.name)
    await commit_audited(session, publisher, rotation.events, SOURCE)
    return RotationOut(
        credential_id=rotation.credential_id,
        role=principal.role,
        agency=principal.agency,
        token=rotation.token,
        replaces=rotation.replaces,
        replaced_until=rotation.replaced_until,
    )
