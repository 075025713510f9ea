"""Who is calling, and the directory's routes: authentication (a bearer credential or an RFC 9421 request
signature) as FastAPI dependencies; the directory as one signed document and its agencies' keys; an
agency's own key rotation and revocation; credential rotation; the administrator's registrations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from schemas.api import (
    AgencyIn,
    AgencyOut,
    CredentialIn,
    CredentialOut,
    Jwks,
    KeyId,
    KeyIn,
    KeyRevocation,
)
from schemas.directory import SignedDirectory
from schemas.notices import AgencyId
from services.envelope.keys import SigningKey
from services.envelope.service import Freshness
from services.platform.database import Autocommit, make_engine, make_sessionmaker, utcnow
from services.platform.errors import Unavailable
from services.platform.kafka import commit_audited
from services.platform.settings import Settings
from services.platform.views import ERRORS, Publisher, Session
from services.trust import service
from services.trust.errors import AuthError
from services.trust.httpsig import authenticate_request
from services.trust.keyring import DirectoryCache, DirectoryView
from services.trust.service import MAX_GRACE_S, Principal
from services.trust.signed_directory import directory_document, directory_key_entry, sign_directory

SOURCE = "deskbridge/gateway/directory"

# ---- who is calling ------------------------------------------------------------------------------------


def open_app_state(app: FastAPI, settings: Settings) -> AsyncEngine:
    """What every app's routes read from its state: the settings, database sessions, single statements
    without a transaction and the directory cache authentication reads; the caller closes
    `app.state.autocommit` and disposes of the engine when the app stops."""
    engine = make_engine(settings.database_url)
    app.state.settings = settings
    app.state.sessions = make_sessionmaker(engine)
    app.state.autocommit = Autocommit(engine)
    app.state.directory = DirectoryCache()
    return engine


async def directory_view(request: Request) -> DirectoryView:
    """The directory as of this request (one small read; see keyring.py). FastAPI resolves it once per
    request, so authentication and the route share it. The read holds no connection after it: a
    long-poll does not keep one."""
    cache: DirectoryCache = request.app.state.directory
    return await cache.view(request.app.state.autocommit)


Directory = Annotated[DirectoryView, Depends(directory_view)]
_bearer = HTTPBearer(auto_error=False, description="A deskbridge credential: `Authorization: Bearer dbk_…`")


Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require(
    *roles: str, by_signature: bool = True, by_bearer: bool = True
) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and admits only the given roles (see `authenticate`)."""

    async def dependency(request: Request, directory: Directory, credentials: Bearer) -> Principal:
        return await authenticate(request, directory, credentials, roles, by_signature, by_bearer)

    return dependency


async def authenticate(
    request: Request,
    directory: DirectoryView,
    credentials: HTTPAuthorizationCredentials | None,
    roles: Sequence[str],
    by_signature: bool = True,
    by_bearer: bool = True,
) -> Principal:
    """The caller, if it is one of `roles`; AuthError otherwise.

    A bearer credential works for every role unless `by_bearer` is off; where the agency role is admitted
    and `by_signature`, an agency may sign the request with its own directory key instead (RFC 9421,
    httpsig.py).
    """
    signable = by_signature and "agency" in roles
    if credentials is None and "signature-input" in request.headers:
        if not signable:
            raise AuthError("this route takes a bearer credential, not a signature")
        principal = await _signed_principal(request)
    elif credentials is None:
        needed = (
            "a request signature"
            if not by_bearer
            else "a bearer credential or a request signature"
            if signable
            else "a bearer credential"
        )
        raise AuthError(f"{needed} is required")
    elif not by_bearer:
        raise AuthError("this route takes a request signed with the agency's key")
    else:
        found = directory.authenticate(credentials.credentials)
        if found is None:
            raise AuthError("the credential is not valid")
        principal = found
    if principal.role not in roles:
        raise AuthError(f"this needs the {' or '.join(roles)} role", "forbidden")
    return principal


def _target_uri(request: Request) -> str:
    """@target-uri as this server received it: scheme and Host as seen here, the path undecoded.

    Behind a reverse proxy this is the URL the proxy forwarded, so the proxy must keep the client's Host
    and the server must trust its X-Forwarded-Proto (uvicorn --proxy-headers --forwarded-allow-ips);
    otherwise signatures made for the public URL do not verify.
    """
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope.get("query_string", b"")
    target = f"{request.url.scheme}://{request.url.netloc}{raw_path.decode('latin-1')}"
    return f"{target}?{query.decode('latin-1')}" if query else target


async def _signed_principal(request: Request) -> Principal:
    settings: Settings = request.app.state.settings
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    body = await request.body()  # Starlette keeps it, so FastAPI still parses the body afterwards
    # A session of its own, committed at once: the nonce stays used even when the route then fails.
    async with sessions() as session:
        verified = await authenticate_request(
            session,
            request.method,
            _target_uri(request),
            request.headers.items(),
            body,
            settings.freshness_s,
            settings.clock_skew_s,
        )
        await session.commit()
    # A signature proves the key's agency and nothing more: it never grants auditor or admin.
    return Principal(f"key:{verified.kid}", "agency", verified.agency)


async def freshness(request: Request) -> Freshness:
    return freshness_of(request)


def freshness_of(request: Request) -> Freshness:
    value: Settings = request.app.state.settings
    return Freshness.of(value.freshness_s, value.clock_skew_s)


Agency = Annotated[Principal, Depends(require("agency"))]
SignedAgency = Annotated[Principal, Depends(require("agency", by_bearer=False))]
Admin = Annotated[Principal, Depends(require("admin"))]
Anyone = Annotated[Principal, Depends(require("agency", "auditor", "admin"))]
# A signature has no credential to rotate, so rotation takes bearer credentials only.
BearerHolder = Annotated[Principal, Depends(require("agency", "auditor", "admin", by_signature=False))]
Fresh = Annotated[Freshness, Depends(freshness)]


async def directory_key(request: Request) -> SigningKey:
    """The directory signing key this gateway holds (it signs the directory and webhook requests)."""
    key: SigningKey | None = request.app.state.directory_key
    if key is None:
        raise Unavailable("this gateway has no directory signing key", "directory_key_unavailable")
    return key


DirectoryKey = Annotated[SigningKey, Depends(directory_key)]

# ---- the directory -------------------------------------------------------------------------------------

router = APIRouter(prefix="/v1/directory", tags=["directory"], responses=ERRORS)


@router.get(
    "",
    summary="Every agency and its keys as one JWS signed by the directory key (any credential).",
)
async def get_directory(_: Anyone, session: Session, key: DirectoryKey) -> SignedDirectory:
    return sign_directory(await directory_document(session, utcnow()), key)


@router.get(
    "/key",
    summary="The directory key's public half, to pin after checking its kid out of band (any credential).",
)
async def get_directory_key(_: Anyone, key: DirectoryKey) -> dict[str, str]:
    return {k: str(v) for k, v in key.public().jwk(use="sig", alg="Ed25519").items()}


@router.get(
    "/agencies",
    summary="Registered agencies (any credential).",
)
async def get_agencies(_: Anyone, session: Session) -> list[AgencyOut]:
    return [AgencyOut(id=a.id, name=a.name, kind=a.kind) for a in await service.list_agencies(session)]


@router.get(
    "/agencies/{agency_id}/jwks",
    summary="An agency's public keys as a JWKS, with status and validity window (any credential).",
)
async def get_jwks(agency_id: AgencyId, _: Anyone, session: Session) -> Jwks:
    now = utcnow()
    entries = [directory_key_entry(k, now) for k in await service.agency_keys(session, agency_id)]
    return Jwks(keys=[e.model_dump(exclude_none=True) for e in entries])


# ---- an agency's own keys ------------------------------------------------------------------------------

keys = APIRouter(prefix="/v1/keys", tags=["directory"], responses=ERRORS)


@keys.post(
    "",
    status_code=201,
    summary="Add a key to the caller's agency, retiring its current ones if asked (agency signature only).",
    description="Only a request signed with one of the agency's current keys (RFC 9421) is accepted, so a "
    "stolen bearer credential cannot add keys. After a compromise of every key, the administrator "
    "registers the new ones.",
)
async def post_own_key(
    body: KeyIn, principal: SignedAgency, session: Session, publisher: Publisher
) -> dict[str, str]:
    assert principal.agency is not None
    event = await service.register_key(
        session, principal.agency, body.jwk, principal.name, body.not_after, body.retire_previous_after()
    )
    await commit_audited(session, publisher, [event], SOURCE)
    return {"kid": str(event.details["kid"])}


@keys.post(
    "/{kid}/revoke",
    summary="Revoke one of the caller's own keys at once, e.g. after a compromise (agency credential).",
)
async def post_revoke_own_key(
    kid: KeyId, body: KeyRevocation, principal: Agency, session: Session, publisher: Publisher
) -> dict[str, str]:
    event = await service.revoke_key(session, kid, body.reason, principal.name, owner=principal.agency)
    await commit_audited(session, publisher, [event], SOURCE)
    return {"kid": kid, "status": "revoked"}


# ---- credentials ---------------------------------------------------------------------------------------

credentials = APIRouter(prefix="/v1/credentials", tags=["credentials"], responses=ERRORS)


class RotationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: int = Field(
        default=0, ge=0, le=MAX_GRACE_S, description="Seconds the old credential keeps working; 0: at once."
    )


class RotationOut(CredentialOut):
    replaces: str = Field(description="The rotated credential's id.")
    replaced_until: datetime = Field(description="When the rotated credential stops working.")


class CallerOut(BaseModel):
    role: str = Field(description="agency, auditor or admin")
    agency: str | None = Field(description="The caller's agency; none for auditors and the administrator.")
    credential_id: str = Field(description="The bearer credential's id, or key:<kid> for a signed request.")


@credentials.get(
    "/current",
    summary="Who the calling credential or signature is: role and agency, nothing secret (any credential).",
)
async def get_current(principal: Anyone) -> CallerOut:
    return CallerOut(role=principal.role, agency=principal.agency, credential_id=principal.credential_id)


@credentials.post(
    "/rotate",
    status_code=201,
    summary="Replace the calling credential by a new token, shown once; the old one is revoked after "
    "grace_s (any bearer credential).",
)
async def post_rotation(
    principal: BearerHolder, session: Session, publisher: Publisher, body: RotationIn | None = None
) -> RotationOut:
    grace_s = body.grace_s if body is not None else 0
    rotation = await service.rotate_credential(session, principal.credential_id, grace_s, principal.name)
    await commit_audited(session, publisher, rotation.events, "deskbridge/gateway/credentials")
    return RotationOut(
        credential_id=rotation.credential_id,
        role=principal.role,
        agency=principal.agency,
        token=rotation.token,
        replaces=rotation.replaces,
        replaced_until=rotation.replaced_until,
    )


# ---- the administrator's registrations -----------------------------------------------------------------

admin = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERRORS)
ADMIN_SOURCE = "deskbridge/gateway/admin"


@admin.post(
    "/agencies",
    status_code=201,
    summary="Register an agency (admin credential).",
)
async def post_agency(body: AgencyIn, principal: Admin, session: Session, publisher: Publisher) -> AgencyOut:
    event = await service.register_agency(session, body.id, body.name, body.kind, principal.name)
    await commit_audited(session, publisher, [event], ADMIN_SOURCE)
    return AgencyOut(id=body.id, name=body.name, kind=body.kind)


@admin.post(
    "/agencies/{agency_id}/keys",
    status_code=201,
    summary="Register an agency's public key, given as a JWK (admin credential).",
)
async def post_key(
    agency_id: AgencyId, body: KeyIn, principal: Admin, session: Session, publisher: Publisher
) -> dict[str, str]:
    event = await service.register_key(
        session, agency_id, body.jwk, principal.name, body.not_after, body.retire_previous_after()
    )
    await commit_audited(session, publisher, [event], ADMIN_SOURCE)
    return {"kid": str(event.details["kid"])}


@admin.post(
    "/keys/{kid}/revoke",
    summary="Revoke any agency's key at once (admin credential).",
)
async def post_revoke_key(
    kid: KeyId, body: KeyRevocation, principal: Admin, session: Session, publisher: Publisher
) -> dict[str, str]:
    event = await service.revoke_key(session, kid, body.reason, principal.name, owner=None)
    await commit_audited(session, publisher, [event], ADMIN_SOURCE)
    return {"kid": kid, "status": "revoked"}


@admin.post(
    "/credentials",
    status_code=201,
    summary="Issue an API credential; the token is shown once (admin credential).",
)
async def post_credential(
    body: CredentialIn, principal: Admin, session: Session, publisher: Publisher
) -> CredentialOut:
    token, event = await service.issue_credential(session, body.role, body.agency, body.label, principal.name)
    await commit_audited(session, publisher, [event], ADMIN_SOURCE)
    return CredentialOut(
        credential_id=str(event.details["credential_id"]), role=body.role, agency=body.agency, token=token
    )


ROUTERS = (router, keys, credentials, admin)
