"""Directory routes: who the agencies are and their public keys (any credential)."""

from __future__ import annotations

import json

from fastapi import APIRouter

from schemas.api import AgencyOut, Jwks
from services.common.directory import agency_keys, list_agencies
from services.common.http import Session
from services.gateway.deps import Anyone
from services.gateway.notices import ERRORS

router = APIRouter(prefix="/v1/directory", tags=["directory"])


@router.get(
    "/agencies",
    response_model=list[AgencyOut],
    responses=ERRORS,
    summary="Registered agencies (any credential).",
)
async def get_agencies(_: Anyone, session: Session) -> list[AgencyOut]:
    return [AgencyOut(id=a.id, name=a.name, kind=a.kind) for a in await list_agencies(session)]


@router.get(
    "/agencies/{agency_id}/jwks",
    response_model=Jwks,
    responses=ERRORS,
    summary="An agency's public keys as a JWKS, with status and validity window (any credential).",
)
async def get_jwks(agency_id: str, _: Anyone, session: Session) -> Jwks:
    keys = []
    for key in await agency_keys(session, agency_id):
        jwk = json.loads(key.jwk)
        jwk.update(status=key.status, nbf=int(key.not_before.timestamp()))
        if key.not_after is not None:
            jwk["exp"] = int(key.not_after.timestamp())
        keys.append(jwk)
    return Jwks(keys=keys)
