"""The directory held in memory: every key and credential, re-read only when the database's
directory generation moves (migration 0007 bumps it by trigger on any change). Checking a signature or
a bearer credential then costs one tiny read instead of a lookup per key, and a revocation is still
seen by the very next request, in every process, because that read is made each time. The gateway makes
it without a transaction (platform.database.Autocommit: one round trip, no BEGIN)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope.keys import PublicKey
from services.platform.database import Autocommit, utcnow
from services.trust.models import AgencyKey, Credential, DirectoryGeneration
from services.trust.service import TOKEN_PREFIX, Principal, public_key, signing_key_at


@dataclass(frozen=True)
class KeyEntry:
    """A directory key as it was read, with its public key imported once."""

    kid: str
    agency_id: str
    use: str
    status: str
    not_before: datetime
    not_after: datetime | None
    created_at: datetime
    revoked_at: datetime | None
    public: PublicKey

    @classmethod
    def of(cls, row: AgencyKey) -> KeyEntry:
        return cls(
            row.kid,
            row.agency_id,
            row.use,
            row.status,
            row.not_before,
            row.not_after,
            row.created_at,
            row.revoked_at,
            public_key(row),
        )


@dataclass(frozen=True)
class CredentialEntry:
    id: str
    role: str
    agency_id: str | None
    secret_sha256: str
    revoked_at: datetime | None


@dataclass(frozen=True)
class DirectoryView:
    """The directory as of `generation`: immutable, so a request sees one consistent directory."""

    generation: int
    keys: Mapping[str, KeyEntry]
    credentials: Mapping[str, CredentialEntry]

    def verification_key(self, kid: str, signed_at: datetime | None = None) -> PublicKey:
        """As directory.verification_key, from memory."""
        return signing_key_at(self.keys.get(kid), kid, signed_at).public

    def enc_key_owners(self, kids: Sequence[str]) -> dict[str, str]:
        """The agency owning each known X25519 key among `kids` (unknown kids are left out)."""
        return {kid: key.agency_id for kid in kids if (key := self.keys.get(kid)) and key.use == "enc"}

    def authenticate(self, token: str, now: datetime | None = None) -> Principal | None:
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            return None
        credential = self.credentials.get(parts[1])
        # A rotated credential keeps working until its revoked_at, which rotation may set in the future.
        if credential is None or (
            credential.revoked_at is not None and credential.revoked_at <= (now or utcnow())
        ):
            return None
        offered = hashlib.sha256(parts[2].encode()).hexdigest()
        if not hmac.compare_digest(offered, credential.secret_sha256):
            return None
        return Principal(credential.id, credential.role, credential.agency_id)


class DirectoryCache:
    """One per process. `view()` reads the generation (one row) and re-reads the directory only when
    it moved; the directory is small (the agencies' few keys and the credentials), so it is read whole."""

    def __init__(self) -> None:
        self._view: DirectoryView | None = None
        self._loading = asyncio.Lock()
        self.loads = 0  # how many times the directory was read whole (tests and metrics)

    async def view(self, reader: AsyncSession | Autocommit) -> DirectoryView:
        generation = await _generation(reader)
        current = self._view
        if current is not None and current.generation == generation:
            return current
        async with self._loading:  # concurrent requests after a change read the directory once
            current = self._view
            if current is not None and current.generation >= generation:
                return current
            # Read after the generation: what is read is at least that new, so caching it under that
            # number can only make the next request read again, never keep a stale key.
            if isinstance(reader, Autocommit):
                async with reader.session() as session:
                    self._view = current = await _load(session, generation)
            else:
                self._view = current = await _load(reader, generation)
            self.loads += 1
            return current


GENERATION = select(DirectoryGeneration.generation)


async def _generation(reader: AsyncSession | Autocommit) -> int:
    if isinstance(reader, Autocommit):
        row = await reader.first_shared(GENERATION)
        assert row is not None  # migration 0007 writes the one row
        return int(row[0])
    return int((await reader.execute(GENERATION)).scalar_one())


async def _load(session: AsyncSession, generation: int) -> DirectoryView:
    keys = {row.kid: KeyEntry.of(row) for row in (await session.execute(select(AgencyKey))).scalars()}
    credentials = {
        row.id: CredentialEntry(row.id, row.role, row.agency_id, row.secret_sha256, row.revoked_at)
        for row in (await session.execute(select(Credential))).scalars()
    }
    return DirectoryView(generation, keys, credentials)
