"""Directory routes: who the agencies are and their public keys, signed as one document; an agency's
own key rotation and revocation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request

from schemas.api import AgencyOut, Jwks, KeyId, KeyIn, KeyRevocation
from schemas.directory import SignedDirectory
from schemas.notices import AgencyId
from services.common.db import utcnow
from services.common.directory import agency_keys, list_agencies, register_key, revoke_key
from services.common.http import Session
from services.common.keys import public_jwk
from services.common.signed_directory import directory_document, directory_key_entry, sign_directory
from services.gateway.deps import Agency, Anyone, Publisher, SignedAgency, commit_audited
from services.gateway.notices import ERRORS

router = APIRouter(prefix="/v1/directory", tags=["directory"])
keys = APIRouter(prefix="/v1/keys", tags=["directory"])
SOURCE = "deskbridge/gateway/directory"


def directory_key(request: Request) -> Any:
    key = request.app.state.directory_key
    if key is None:
        raise HTTPException(503, "this gateway has no directory signing key")
    return key


DirectoryKey = Annotated[Any, Depends(directory_key)]


@router.get(
    "",
    response_model=SignedDirectory,
    responses=ERRORS,
    summary="Every agency and its keys as one JWS signed by the directory key (any credential).",
)
async def get_directory(_: Anyone, session: Session, key: DirectoryKey) -> SignedDirectory:
    return sign_directory(await directory_document(session, utcnow()), key)


@router.get(
    "/key",
    response_model=dict[str, str],
    responses=ERRORS,
    summary="The directory key's public half, to pin after checking its kid out of band (any credential).",
)
async def get_directory_key(_: Anyone, key: DirectoryKey) -> dict[str, str]:
    return {k: str(v) for k, v in public_jwk(key, use="sig", alg="Ed25519").items()}


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
async def get_jwks(agency_id: AgencyId, _: Anyone, session: Session) -> Jwks:
    now = utcnow()
    entries = [directory_key_entry(k, now) for k in await agency_keys(session, agency_id)]
    return Jwks(keys=[e.model_dump(exclude_none=True) for e in entries])


@keys.post(
    "",
    status_code=201,
    response_model=dict[str, str],
    responses=ERRORS,
    summary="Add a key to the caller's agency, retiring its current ones if asked (agency signature only).",
    description="Only a request signed with one of the agency's current keys (RFC 9421) is accepted, so a "
    "stolen bearer credential cannot add keys. After a compromise of every key, the administrator "
    "registers the new ones.",
)
async def post_own_key(
    body: KeyIn, principal: SignedAgency, session: Session, publisher: Publisher
) -> dict[str, str]:
    assert principal.agency is not None
    event = await register_key(
        session, principal.agency, body.jwk, principal.name, body.not_after, body.retire_previous_after()
    )
    await commit_audited(session, publisher, [event], SOURCE)
    return {"kid": str(event.details["kid"])}


@keys.post(
    "/{kid}/revoke",
    response_model=dict[str, str],
    responses=ERRORS,
    summary="Revoke one of the caller's own keys at once, e.g. after a compromise (agency credential).",
)
async def post_revoke_own_key(
    kid: KeyId, body: KeyRevocation, principal: Agency, session: Session, publisher: Publisher
) -> dict[str, str]:
    event = await revoke_key(session, kid, body.reason, principal.name, owner=principal.agency)
    await commit_audited(session, publisher, [event], SOURCE)
    return {"kid": kid, "status": "revoked"}
