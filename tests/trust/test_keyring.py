"""The directory in memory (services/trust/keyring.py), on both databases: read whole once, re-read
whenever anything in it changes, by any path, so a revocation is seen by the very next read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.envelope.errors import EnvelopeError
from services.envelope.keys import AgencyKeys
from services.platform.database import make_sessionmaker
from services.trust.keyring import DirectoryCache
from services.trust.service import issue_credential, register_agency, register_key, revoke_key


async def _enrol(engine: AsyncEngine) -> tuple[AgencyKeys, str]:
    keys = AgencyKeys.generate("kh-cnp")
    async with make_sessionmaker(engine)() as session:
        await register_agency(session, "kh-cnp", "Cambodian National Police", "partner", "test")
        await session.flush()
        for jwk in keys.public_jwks():
            await register_key(session, "kh-cnp", jwk, "test")
        token, _ = await issue_credential(session, "agency", "kh-cnp", "test", "test")
        await session.commit()
    return keys, token


async def test_the_directory_is_read_once_until_it_changes(engine: AsyncEngine) -> None:
    keys, token = await _enrol(engine)
    cache = DirectoryCache()
    sessions = make_sessionmaker(engine)
    for _ in range(3):
        async with sessions() as session:
            view = await cache.view(session)
    assert cache.loads == 1
    signing = view.verification_key(keys.signing_kid)
    assert (signing.agency, signing.kid) == ("kh-cnp", keys.signing_kid)
    assert view.enc_key_owners([keys.encryption_kid, "no-such-kid"]) == {keys.encryption_kid: "kh-cnp"}
    principal = view.authenticate(token)
    assert principal is not None and (principal.role, principal.agency) == ("agency", "kh-cnp")
    assert view.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None


async def test_a_revocation_is_seen_by_the_next_read(engine: AsyncEngine) -> None:
    keys, _ = await _enrol(engine)
    cache = DirectoryCache()
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        (await cache.view(session)).verification_key(keys.signing_kid)
        await revoke_key(session, keys.signing_kid, "compromised", "test", None)
        await session.commit()
    async with sessions() as session:
        view = await cache.view(session)
    assert cache.loads == 2
    with pytest.raises(EnvelopeError) as refused:
        view.verification_key(keys.signing_kid, datetime.now(UTC))
    assert refused.value.code == "key_revoked"


async def test_a_change_made_outside_the_application_is_seen_too(engine: AsyncEngine) -> None:
    """The generation is bumped by database triggers, so even a change made with psql invalidates."""
    _, token = await _enrol(engine)
    cache = DirectoryCache()
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        assert (await cache.view(session)).authenticate(token) is not None
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE credentials SET revoked_at = '2000-01-01 00:00:00+00:00'"))
    async with sessions() as session:
        assert (await cache.view(session)).authenticate(token) is None
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM credentials"))
    async with sessions() as session:
        await cache.view(session)
    assert cache.loads == 3
