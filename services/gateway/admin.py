"""Administrator routes: register agencies and their public keys, issue credentials."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, HTTPException

from schemas.api import (
    AgencyIn,
    AgencyOut,
    CredentialIn,
    CredentialOut,
    ErasureIn,
    KeyId,
    KeyIn,
    KeyRevocation,
)
from schemas.notices import AgencyId
from services.common.directory import issue_credential, register_agency, register_key, revoke_key
from services.common.http import Session
from services.common.lifecycle import EraseRefused, erase_notice
from services.gateway.deps import Admin, Publisher, commit_audited
from services.gateway.notices import ERRORS

router = APIRouter(prefix="/v1/admin", tags=["admin"])
SOURCE = "deskbridge/gateway/admin"


@router.post(
    "/agencies",
    status_code=201,
    response_model=AgencyOut,
    responses=ERRORS,
    summary="Register an agency (admin credential).",
)
async def post_agency(body: AgencyIn, principal: Admin, session: Session, publisher: Publisher) -> AgencyOut:
    event = await register_agency(session, body.id, body.name, body.kind, principal.name)
    await commit_audited(session, publisher, [event], SOURCE)
    return AgencyOut(id=body.id, name=body.name, kind=body.kind)


@router.post(
    "/agencies/{agency_id}/keys",
    status_code=201,
    response_model=dict[str, str],
    responses=ERRORS,
    summary="Register an agency's public key, given as a JWK (admin credential).",
)
async def post_key(
    agency_id: AgencyId, body: KeyIn, principal: Admin, session: Session, publisher: Publisher
) -> dict[str, str]:
    event = await register_key(
        session, agency_id, body.jwk, principal.name, body.not_after, body.retire_previous_after()
    )
    await commit_audited(session, publisher, [event], SOURCE)
    return {"kid": str(event.details["kid"])}


@router.post(
    "/keys/{kid}/revoke",
    response_model=dict[str, str],
    responses=ERRORS,
    summary="Revoke any agency's key at once (admin credential).",
)
async def post_revoke_key(
    kid: KeyId, body: KeyRevocation, principal: Admin, session: Session, publisher: Publisher
) -> dict[str, str]:
    event = await revoke_key(session, kid, body.reason, principal.name, owner=None)
    await commit_audited(session, publisher, [event], SOURCE)
    return {"kid": kid, "status": "revoked"}


@router.post(
    "/notices/{notice_id}/erase",
    response_model=dict[str, str],
    responses=ERRORS,
    summary="Erase a notice's stored envelope (crypto-shredding); audit leaves stay (admin credential).",
)
async def post_erase(
    notice_id: UUID, body: ErasureIn, principal: Admin, session: Session, publisher: Publisher
) -> dict[str, str]:
    try:
        event = await erase_notice(session, str(notice_id), principal.name, body.reason)
    except EraseRefused as exc:
        raise HTTPException(409, str(exc)) from exc
    await commit_audited(session, publisher, [event], SOURCE)
    return {"notice_id": str(notice_id), "status": "erased"}


@router.post(
    "/credentials",
    status_code=201,
    response_model=CredentialOut,
    responses=ERRORS,
    summary="Issue an API credential; the token is shown once (admin credential).",
)
async def post_credential(
    body: CredentialIn, principal: Admin, session: Session, publisher: Publisher
) -> CredentialOut:
    token, event = await issue_credential(session, body.role, body.agency, body.label, principal.name)
    await commit_audited(session, publisher, [event], SOURCE)
    return CredentialOut(
        credential_id=str(event.details["credential_id"]), role=body.role, agency=body.agency, token=token
    )
