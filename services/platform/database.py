"""The database: the async engine, the declarative base every domain's models.py builds its tables on,
aware UTC times, and the migration to the newest schema: the schema is made by Alembic (migrations/)
only, never create_all."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import BigInteger, DateTime, Integer, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from services.platform.errors import DatabaseUnavailable


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite keeps no zone, so one is put back on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A 64-bit integer: BIGINT on PostgreSQL; on SQLite INTEGER, which is 64 bits already and the only type
# that makes an autoincrementing rowid key (and the type earlier migrations gave these columns there).
INT64 = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    # WAL lets the three services share one file; busy_timeout makes writers queue instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


async def _connect(*args: Any, **kwargs: Any) -> Any:
    """asyncpg's connect with the URL's arguments, as SQLAlchemy calls it. An OSError here is the database
    out of reach, and only here: SQLAlchemy lets it through unwrapped, where it would look like any other."""
    try:
        return await asyncpg.connect(*args, **kwargs)
    except OSError as exc:  # also TimeoutError and socket.gaierror
        raise DatabaseUnavailable(f"connecting failed with {type(exc).__name__}") from exc


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it costs a round trip per checkout. A connection broken by a database restart fails
    # once (503, or a retried batch) and SQLAlchemy then discards the whole pool.
    # A connection opened past pool_size is closed again when returned: under a burst of requests that
    # churn (a TLS handshake and a cold statement cache each time) cost more than the idle connections.
    return create_async_engine(
        url, pool_size=24, max_overflow=16, connect_args={"async_creator_fn": _connect}
    )


Reader = AsyncSession | AsyncConnection  # anything a Core statement can be executed on


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The engine's pool without transactions: each statement commits on its own, with no BEGIN or
    COMMIT round trip around it. For hot paths made of single statements that need no atomicity between
    them (and so hold no transaction open while they wait on anything else)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


ROOT = Path(__file__).resolve().parents[2]  # the checkout: alembic.ini and migrations/ live there


def upgrade(database_url: str) -> None:
    """Brings the database to the newest schema. Synchronous (Alembic runs its own event loop); call it
    from a thread inside async code."""
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")
