"""The directory as one signed document, so a partner pins the desk's directory key and checks the rest
without trusting the server that hands the document out."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path

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
from services.envelope.compact import sign_compact, verify_compact
from services.envelope.errors import EnvelopeError
from services.envelope.keys import (
    PublicKey,
    SigningKey,
    generate_key_file,
    load_key_file,
    load_public_key,
    save_public_key,
)
from services.trust.errors import DirectoryTrustError
from services.trust.models import Agency, AgencyKey
from services.trust.service import key_state

DIRECTORY_KEY_FILE = "directory.jwk.json"
PIN_FILE = "directory.pin.jwk.json"
# The name the directory key signs under: what a partner sees on the directory and on webhook requests.
DIRECTORY_SIGNER = "deskbridge-directory"


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


def sign_directory(document: DirectoryDocument, key: SigningKey) -> SignedDirectory:
    payload = document.model_dump_json(exclude_none=True).encode()
    return SignedDirectory(jws=sign_compact(payload, key, DIRECTORY_TYP), kid=key.kid)


def verify_directory(
    signed: SignedDirectory, pinned: PublicKey, now: datetime, max_age: timedelta
) -> DirectoryDocument:
    """Checks the signature against the pinned key and that the document is recent, then parses it."""
    if signed.kid != pinned.kid:
        raise DirectoryTrustError(f"the directory is signed by {signed.kid}, not by the pinned key")
    try:
        payload = verify_compact(signed.jws, pinned, DIRECTORY_TYP)
    except EnvelopeError as exc:
        if exc.code == "bad_signature":
            raise DirectoryTrustError("the directory signature does not verify with the pinned key") from exc
        raise DirectoryTrustError("the signed document is not a deskbridge directory") from exc
    try:
        document = DirectoryDocument.model_validate_json(payload)
    except ValidationError as exc:
        raise DirectoryTrustError("the signed directory is malformed") from exc
    age = now.timestamp() - document.iat
    if age > max_age.total_seconds():
        raise DirectoryTrustError(f"the directory was signed {age:.0f} s ago; a replayed old copy is refused")
    if age < -300:
        raise DirectoryTrustError("the directory is dated in the future")
    return document


def generate_directory_key(folder: Path) -> SigningKey:
    """The directory signing key: kept by the gateway, its public half pinned by every partner."""
    return generate_key_file(folder / DIRECTORY_KEY_FILE, DIRECTORY_SIGNER)


def load_directory_key(path: Path) -> SigningKey:
    return load_key_file(path, DIRECTORY_SIGNER, "a directory key")


def save_pin(folder: Path, key: PublicKey) -> Path:
    return save_public_key(folder / PIN_FILE, key, use="sig", alg="Ed25519")


def load_pin(folder: Path) -> PublicKey:
    return load_public_key(
        folder / PIN_FILE, DIRECTORY_SIGNER, "directory key", "pin the desk's directory key first"
    )
