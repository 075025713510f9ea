"""The directory: agencies, their public keys and API credentials (issued, rotated, revoked), and which key
is valid when: who may send, to whom, and with which key."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import Event, EventType, fact_id
from schemas.notices import is_agency_id
from services.envelope.errors import EnvelopeError
from services.envelope.keys import PublicKey
from services.platform.database import utcnow
from services.trust.errors import AuthError, DirectoryError
from services.trust.models import Agency, AgencyKey, Credential

TOKEN_PREFIX = "dbk"  # noqa: S105 (a token prefix, not a secret)
MAX_GRACE_S = 86_400  # how long a rotated credential may keep working
KEY_TYPES = {"sig": ("Ed25519", {"Ed25519", "EdDSA"}), "enc": ("X25519", {"ECDH-ES+A256KW"})}


@dataclass(frozen=True)
class Principal:
    """Who is calling: an agency (the desk is one), an auditor or the administrator."""

    credential_id: str
    role: str
    agency: str | None

    @property
    def name(self) -> str:
        return self.agency or f"{self.role}:{self.credential_id}"


def _event(event_type: EventType, actor: str, agency: str | None, fact: str, **details: str | None) -> Event:
    return Event(
        event_id=fact_id(event_type, fact),
        type=event_type,
        occurred_at=utcnow(),
        actor=actor,
        agency=agency,
        details=dict(details),
    )


async def register_agency(session: AsyncSession, agency_id: str, name: str, kind: str, actor: str) -> Event:
    if not is_agency_id(agency_id):
        raise DirectoryError(
            "invalid_agency", f"{agency_id!r} is not a valid agency id (lowercase letters, digits, '-')"
        )
    if kind not in ("desk", "partner"):
        raise DirectoryError("invalid_agency", "kind must be 'desk' or 'partner'")
    if await session.get(Agency, agency_id) is not None:
        raise DirectoryError("agency_exists", f"agency {agency_id} is already registered")
    session.add(Agency(id=agency_id, name=name, kind=kind, created_at=utcnow()))
    return _event(EventType.agency_registered, actor, agency_id, agency_id, name=name, kind=kind)


async def register_key(
    session: AsyncSession,
    agency_id: str,
    jwk: dict[str, Any],
    actor: str,
    not_after: datetime | None = None,
    retire_previous_after: timedelta | None = None,
) -> Event:
    """Takes a public JWK; refuses private parts, unknown curves and a kid that is not its thumbprint.

    With `retire_previous_after` this is a rotation: the agency's other current keys of the same use
    stay valid that much longer (for envelopes already in flight), then expire. Expired keys stay in the
    directory, so notices signed or sealed with them still verify and open.
    """
    if await session.get(Agency, agency_id) is None:
        raise DirectoryError("unknown_agency", f"agency {agency_id} is not registered")
    use = jwk.get("use")
    if use not in KEY_TYPES:
        raise DirectoryError("invalid_key", "a key's use must be 'sig' or 'enc'")
    crv, algs = KEY_TYPES[use]
    if jwk.get("kty") != "OKP" or jwk.get("crv") != crv:
        raise DirectoryError("invalid_key", f"a '{use}' key must be an OKP key on {crv}")
    alg = jwk.get("alg") or next(iter(sorted(algs)))
    if alg not in algs:
        raise DirectoryError("invalid_key", f"alg {alg!r} does not fit a '{use}' key")
    try:
        key = PublicKey.from_jwk(agency_id, jwk)
    except ValueError as exc:
        raise DirectoryError("invalid_key", f"not a usable public key: {exc}") from exc
    kid = key.kid
    if jwk.get("kid", kid) != kid:
        raise DirectoryError("invalid_key", "kid must be the key's RFC 7638 thumbprint")
    if await session.get(AgencyKey, kid) is not None:
        raise DirectoryError("key_exists", f"key {kid} is already registered")
    now = utcnow()
    if not_after is not None and not_after <= now:
        raise DirectoryError("invalid_key", "not_after must be in the future")
    retired: list[str] = []
    if retire_previous_after is not None:
        until = now + retire_previous_after
        query = select(AgencyKey).where(AgencyKey.agency_id == agency_id, AgencyKey.use == use)
        for old in (await session.execute(query)).scalars():
            if key_state(old, now) == "active" and (old.not_after is None or old.not_after > until):
                old.not_after = until
                retired.append(old.kid)
    public = key.jwk(use, alg)
    session.add(
        AgencyKey(
            kid=kid,
            agency_id=agency_id,
            use=use,
            alg=alg,
            jwk=json.dumps(public),
            status="active",
            not_before=now,
            not_after=not_after,
            created_at=now,
        )
    )
    return _event(
        EventType.key_registered,
        actor,
        agency_id,
        kid,
        kid=kid,
        use=use,
        alg=alg,
        retires=",".join(retired) or None,
    )


async def revoke_key(session: AsyncSession, kid: str, reason: str, actor: str, owner: str | None) -> Event:
    """Refuses the key for anything new at once (gateway, ingest, request signatures). `owner`, when
    given, must be the key's agency: an agency revokes only its own keys, the administrator any."""
    key = await session.get(AgencyKey, kid)
    if key is None or (owner is not None and key.agency_id != owner):
        raise DirectoryError("key_not_found", f"no key {kid} registered for {owner or 'any agency'}")
    if key.status == "revoked":
        raise DirectoryError("key_already_revoked", f"key {kid} was already revoked")
    key.status, key.revoked_at, key.revocation_reason = "revoked", utcnow(), reason[:200]
    return _event(EventType.key_revoked, actor, key.agency_id, kid, kid=kid, use=key.use, reason=reason[:200])


async def issue_credential(
    session: AsyncSession, role: str, agency_id: str | None, label: str, actor: str
) -> tuple[str, Event]:
    """Returns the bearer token once; only its SHA-256 is stored."""
    if role not in ("agency", "auditor", "admin"):
        raise DirectoryError("invalid_credential_request", "role must be agency, auditor or admin")
    if (role == "agency") != (agency_id is not None):
        raise DirectoryError(
            "invalid_credential_request", "an agency credential names its agency; other roles do not"
        )
    if agency_id is not None and await session.get(Agency, agency_id) is None:
        raise DirectoryError("unknown_agency", f"agency {agency_id} is not registered")
    credential_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    session.add(
        Credential(
            id=credential_id,
            role=role,
            agency_id=agency_id,
            label=label,
            secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
            created_at=utcnow(),
        )
    )
    event = _event(
        EventType.credential_issued, actor, agency_id, credential_id, credential_id=credential_id, role=role
    )
    return f"{TOKEN_PREFIX}_{credential_id}_{secret}", event


async def list_agencies(session: AsyncSession) -> list[Agency]:
    return list((await session.execute(select(Agency).order_by(Agency.id))).scalars())


async def get_agency(session: AsyncSession, agency_id: str) -> Agency:
    agency = await session.get(Agency, agency_id)
    if agency is None:
        raise DirectoryError("unknown_agency", f"agency {agency_id} is not registered")
    return agency


async def agency_keys(session: AsyncSession, agency_id: str) -> list[AgencyKey]:
    await get_agency(session, agency_id)
    query = select(AgencyKey).where(AgencyKey.agency_id == agency_id).order_by(AgencyKey.created_at)
    return list((await session.execute(query)).scalars())


class KeyLike(Protocol):
    """What validity needs of a key: a database row or its in-memory copy (services/trust/keyring.py)."""

    @property
    def kid(self) -> str: ...
    @property
    def use(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def not_before(self) -> datetime: ...
    @property
    def not_after(self) -> datetime | None: ...
    @property
    def revoked_at(self) -> datetime | None: ...


def key_state(key: KeyLike, at: datetime) -> str:
    """`revoked`, `pending` (before nbf), `expired` (after exp) or `active`, as of `at`."""
    if key.status == "revoked":
        return "revoked"
    if at < key.not_before:
        return "pending"
    if key.not_after is not None and at > key.not_after:
        return "expired"
    return "active"


def usable(key: KeyLike, at: datetime) -> tuple[str, str] | None:
    """Why a key may not be used at `at` (reason code, message), or None when it may."""
    match key_state(key, at):
        case "revoked":
            assert key.revoked_at is not None
            return "key_revoked", f"key {key.kid} was revoked at {key.revoked_at.isoformat()}"
        case "pending":
            return "key_not_valid", f"key {key.kid} is not valid before {key.not_before.isoformat()}"
        case "expired":
            assert key.not_after is not None
            return "key_not_valid", f"key {key.kid} expired at {key.not_after.isoformat()}"
    return None


K = TypeVar("K", bound=KeyLike)


def signing_key_at(key: K | None, kid: str, signed_at: datetime | None = None) -> K:
    """`key` (found under `kid`) if it is a signing key fit to verify something new signed at `signed_at`
    (default now), else an EnvelopeError.

    A revoked key is refused whatever the claimed time; the validity window is checked at the signing
    time, which the caller bounds by the freshness window, so envelopes sealed just before a rotation
    still pass while the old key is not usable for anything newer.
    """
    if key is None or key.use != "sig":
        raise EnvelopeError("unknown_key", f"no signing key {kid} in the directory")
    problem = usable(key, signed_at or utcnow())
    if problem is not None:
        raise EnvelopeError(*problem)
    return key


def public_key(key: AgencyKey) -> PublicKey:
    return PublicKey.from_jwk(key.agency_id, json.loads(key.jwk))


async def verification_key(session: AsyncSession, kid: str, signed_at: datetime | None = None) -> PublicKey:
    """The public key of signing key `kid`, checked by signing_key_at."""
    return public_key(signing_key_at(await session.get(AgencyKey, kid), kid, signed_at))


async def encryption_keys(session: AsyncSession, agencies: Sequence[str]) -> list[PublicKey]:
    """The newest usable X25519 key of each addressed agency; unknown agencies are named in the error."""
    found = {a.id for a in (await session.execute(select(Agency).where(Agency.id.in_(agencies)))).scalars()}
    missing = [a for a in agencies if a not in found]
    if missing:
        raise DirectoryError("unknown_recipient", f"unknown recipient agency: {', '.join(missing)}")
    query = (
        select(AgencyKey)
        .where(AgencyKey.agency_id.in_(agencies), AgencyKey.use == "enc")
        .order_by(AgencyKey.created_at.desc())
    )
    newest: dict[str, AgencyKey] = {}
    now = utcnow()
    for key in (await session.execute(query)).scalars():
        if key.agency_id not in newest and usable(key, now) is None:
            newest[key.agency_id] = key
    without = [a for a in agencies if a not in newest]
    if without:
        raise DirectoryError("no_encryption_key", f"no usable encryption key for: {', '.join(without)}")
    return [public_key(newest[a]) for a in agencies]


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
        raise DirectoryError(
            "invalid_credential_request", f"grace_s must be between 0 and {MAX_GRACE_S} seconds"
        )
    # FOR UPDATE serialises concurrent rotations of one credential (PostgreSQL; SQLite writes one at a time).
    old = await session.get(Credential, credential_id, with_for_update=True, populate_existing=True)
    now = utcnow()
    if old is None or (old.revoked_at is not None and old.revoked_at <= now):
        raise AuthError("the credential is not valid")
    if old.revoked_at is not None:
        raise DirectoryError(
            "credential_already_rotated",
            f"credential {old.id} was already rotated; it stops working at {old.revoked_at.isoformat()}",
        )
    token, issued = await issue_credential(session, old.role, old.agency_id, old.label, actor)
    new_id = str(issued.details["credential_id"])
    old.revoked_at = now + timedelta(seconds=grace_s)
    revoked = Event(
        event_id=fact_id(EventType.credential_revoked, old.id),
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


async def active_signing_keys(session: AsyncSession, agency: str) -> list[PublicKey]:
    """The agency's signing keys that are active now (a witness cosigns with one of them)."""
    now = utcnow()
    query = select(AgencyKey).where(AgencyKey.agency_id == agency, AgencyKey.use == "sig")
    return [public_key(k) for k in (await session.execute(query)).scalars() if key_state(k, now) == "active"]
