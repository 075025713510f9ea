"""The directory as one signed document, so a partner pins the desk's directory key and checks the rest
without trusting the server that hands the document out."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path

from joserfc import jws
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.directory import (
    DIRECTORY_TYP,
    DirectoryAgency,
    DirectoryDocument,
    DirectoryKey,
    SignedDirectory,
)
from services.envelope.errors import KeyFileError
from services.envelope.keys import import_public, public_jwk, write_owner_only
from services.trust.errors import DirectoryTrustError
from services.trust.models import Agency, AgencyKey
from services.trust.service import key_state

DIRECTORY_KEY_FILE = "directory.jwk.json"
PIN_FILE = "directory.pin.jwk.json"
_REGISTRY = JWSRegistry(algorithms=["Ed25519"])


def _seconds(at: datetime | None) -> int | None:
    return int(at.timestamp()) if at is not None else None


def _seconds_up(at: datetime | None) -> int | None:
    # Whole seconds, rounded up, so what was signed in the key's last fraction of a second still verifies.
    return math.ceil(at.timestamp()) if at is not None else None


def directory_key_entry(key: AgencyKey, now: datetime) -> DirectoryKey:
    return DirectoryKey.model_validate(
        {
            **json.loads(key.jwk),
            "status": key_state(key, now),
            "nbf": int(key.not_before.timestamp()),
            "exp": _seconds_up(key.not_after),
            "revoked_at": _seconds(key.revoked_at),
        }
    )


async def directory_document(session: AsyncSession, now: datetime) -> DirectoryDocument:
    agencies = list((await session.execute(select(Agency).order_by(Agency.id))).scalars())
    keys = list((await session.execute(select(AgencyKey).order_by(AgencyKey.created_at))).scalars())
    return DirectoryDocument(
        iat=int(now.timestamp()),
        agencies=[
            DirectoryAgency(
                id=a.id,
                name=a.name,
                kind=a.kind,
                keys=[directory_key_entry(k, now) for k in keys if k.agency_id == a.id],
            )
            for a in agencies
        ],
    )


def sign_directory(document: DirectoryDocument, key: OKPKey) -> SignedDirectory:
    kid = key.thumbprint()
    token = jws.serialize_compact(
        {"alg": "Ed25519", "kid": kid, "typ": DIRECTORY_TYP},
        document.model_dump_json(exclude_none=True).encode(),
        key,
        registry=_REGISTRY,
    )
    return SignedDirectory(jws=token, kid=kid)


def verify_directory(
    signed: SignedDirectory, pinned: OKPKey, now: datetime, max_age: timedelta
) -> DirectoryDocument:
    """Checks the signature against the pinned key and that the document is recent, then parses it."""
    if signed.kid != pinned.thumbprint():
        raise DirectoryTrustError(f"the directory is signed by {signed.kid}, not by the pinned key")
    try:
        verified = jws.deserialize_compact(signed.jws, pinned, registry=_REGISTRY)
    except Exception as exc:  # any JOSE or decoding failure means: do not trust it
        raise DirectoryTrustError("the directory signature does not verify with the pinned key") from exc
    if verified.protected.get("typ") != DIRECTORY_TYP:
        raise DirectoryTrustError("the signed document is not a deskbridge directory")
    try:
        document = DirectoryDocument.model_validate_json(verified.payload)
    except ValidationError as exc:
        raise DirectoryTrustError("the signed directory is malformed") from exc
    age = now.timestamp() - document.iat
    if age > max_age.total_seconds():
        raise DirectoryTrustError(f"the directory was signed {age:.0f} s ago; a replayed old copy is refused")
    if age < -300:
        raise DirectoryTrustError("the directory is dated in the future")
    return document


def generate_directory_key(folder: Path) -> OKPKey:
    """The directory signing key: kept by the gateway, its public half pinned by every partner."""
    key = OKPKey.generate_key("Ed25519")
    folder.mkdir(parents=True, exist_ok=True)
    document = {**key.as_dict(private=True), "kid": key.thumbprint(), "use": "sig", "alg": "Ed25519"}
    write_owner_only(folder / DIRECTORY_KEY_FILE, json.dumps(document, indent=2))
    return key


def load_directory_key(path: Path) -> OKPKey:
    try:
        return OKPKey.import_key(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise KeyFileError(f"no directory key at {path}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a directory key") from exc


def save_pin(folder: Path, key: OKPKey) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PIN_FILE
    path.write_text(json.dumps(public_jwk(key, use="sig", alg="Ed25519"), indent=2))
    return path


def load_pin(folder: Path) -> OKPKey:
    path = folder / PIN_FILE
    try:
        return import_public(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise KeyFileError(f"no pinned directory key at {path}; pin the desk's directory key first") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a public JWK") from exc
