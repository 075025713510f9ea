"""The database: the async engine, the declarative base every domain's models.py builds its tables on,
aware UTC times, and the migration to the newest schema: the schema is made by Alembic (migrations/)
only, never create_all."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import BigInteger, DateTime, Integer, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.expression import ClauseElement, Executable
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


class Autocommit:
    """Single statements without a transaction (no BEGIN or COMMIT round trip around them), for a hot
    path whose statements need no atomicity between them and must hold nothing open while it waits on
    something else.

    On PostgreSQL they go straight to asyncpg, on a small pool of their own, as the SQL SQLAlchemy
    compiles from the same Core statements (once each): SQLAlchemy's checkout and execution cost about
    five times the statement itself (measured: some 300 µs of CPU against 50 µs a statement). Nothing
    these connections run leaves session state behind, so they go back to the pool without asyncpg's
    reset round trip. Elsewhere (SQLite, for local use) the statements run through SQLAlchemy.

    `session()` is for the rare statement that is ORM-shaped: it connects on first use only."""

    def __init__(self, engine: AsyncEngine, pool_size: int = 8) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._direct = engine.dialect.name == "postgresql"
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._compiled: dict[Executable, tuple[str, tuple[str, ...], dict[str, Any]]] = {}

    def session(self) -> AsyncSession:
        return AsyncSession(self.engine, expire_on_commit=False)

    async def first(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """The first row of `statement`'s result, or None."""
        if not self._direct:
            async with self.engine.connect() as connection:
                found: Sequence[Any] | None = (await connection.execute(statement, dict(params))).first()
                return found
        sql, args = self._sql(statement, params)
        async with (await self._open()).acquire() as connection:
            row: Sequence[Any] | None = await _direct(connection.fetchrow(sql, *args), sql, params)
            return row

    async def run(self, statement: Executable, params: Mapping[str, Any]) -> None:
        """Runs `statement` (an INSERT, say), committed on its own; IntegrityError as SQLAlchemy's."""
        if not self._direct:
            async with self.engine.connect() as connection:
                await connection.execute(statement, dict(params))
            return
        sql, args = self._sql(statement, params)
        async with (await self._open()).acquire() as connection:
            await _direct(connection.execute(sql, *args), sql, params)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _sql(self, statement: Executable, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        compiled = self._compiled.get(statement)
        if compiled is None:
            done = cast(ClauseElement, statement).compile(dialect=self.engine.dialect)
            order: list[str] = getattr(done, "positiontup", None) or []  # asyncpg's $n are positional
            # The values the statement carries itself (a literal in a WHERE) are anonymous parameters.
            self._compiled[statement] = compiled = (str(done), tuple(order), dict(done.params))
        sql, names, carried = compiled
        return sql, [params[name] if name in params else carried[name] for name in names]

    async def _open(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
                    self._pool = await asyncpg.create_pool(
                        *args,
                        **kwargs,
                        min_size=1,
                        max_size=self._pool_size,
                        connect=_connect,
                        reset=_unchanged,
                    )
        return self._pool


async def _direct(call: Awaitable[Any], sql: str, params: Mapping[str, Any]) -> Any:
    try:
        return await call
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise IntegrityError(sql, dict(params), exc) from exc


async def _unchanged(connection: asyncpg.Connection) -> None:
    """Autocommit's connections change no session state: nothing to reset between uses."""


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
