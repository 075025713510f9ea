"""The database: the async engine, the declarative base every domain's models.py builds its tables on,
aware UTC times, and the migration to the newest schema: the schema is made by Alembic (migrations/)
only, never create_all."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import BigInteger, DateTime, Integer, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
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


_COMPILED_AT_MOST = 256


IDLE_S = 300.0  # a connection idle longer is closed rather than used (asyncpg's pool's default)


class _Connections:
    """Autocommit's connections to PostgreSQL: at most `size`, opened as needed, the most recently used
    handed out first (its statement cache is warm) and one idle past IDLE_S closed rather than trusted.

    asyncpg's own pool cost about 65 µs of CPU a statement to acquire and release (measured against a
    connection used straight: 185 against 120 µs for a one-row read), for what these connections never
    need: no session state to reset, no transaction to roll back. A connection goes back once its
    statement is answered, or refused (an error raised once the answer is read, or before the statement
    was sent); one that broke is closed, and so is one whose caller was cancelled half way through (its
    answer may still be on the way)."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], size: int) -> None:
        self._connect = connect
        self._size = size
        self._idle: list[tuple[asyncpg.Connection, float]] = []  # with when each was put back
        self._open = 0  # idle, in use and being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[asyncpg.Connection]:
        connection = await self._take()
        try:
            yield connection
        except Exception:
            self._give_back(connection, sound=True)
            raise
        except BaseException:
            self._give_back(connection, sound=False)
            raise
        self._give_back(connection, sound=True)

    async def _take(self) -> asyncpg.Connection:
        while True:
            if self._closed:
                raise DatabaseUnavailable("the database's connections are closed")
            now = time.monotonic()
            while self._idle:
                connection, since = self._idle.pop()
                if now - since < IDLE_S and not connection.is_closed():
                    return connection
                self._open -= 1
                connection.terminate()
            if self._open < self._size:
                self._open += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, then cancelled: the turn goes to the next caller
                else:
                    self._waiters.remove(waiter)
                raise

    def _give_back(self, connection: asyncpg.Connection, sound: bool) -> None:
        if sound and not self._closed and not connection.is_closed():
            self._idle.append((connection, time.monotonic()))
        else:
            self._open -= 1
            connection.terminate()
        self._wake()

    def _wake(self) -> None:
        """Lets the longest waiting caller look again (a connection is idle, or room to open one)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Closes the idle connections; those in use close as they come back, and waiters are told."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            self._open -= 1
            with contextlib.suppress(Exception):
                await connection.close()
        while self._waiters:
            self._wake()


class Autocommit:
    """Single statements without a transaction (no BEGIN or COMMIT round trip around them), for a hot
    path whose statements need no atomicity between them and must hold nothing open while it waits on
    something else.

    On PostgreSQL they go straight to asyncpg, on a few connections of their own (`_Connections`), as the
    SQL SQLAlchemy compiles from the same Core statements (once each): SQLAlchemy's checkout and
    execution cost about five times the statement itself (measured: some 300 µs of CPU against 50 µs a
    statement). Nothing these connections run leaves session state behind, so they go back without a
    reset. Elsewhere (SQLite, for local use) the statements run through SQLAlchemy.

    `session()` is for the rare statement that is ORM-shaped: it connects on first use only. Statements
    are meant to be module constants: each is compiled once and keyed by identity (run_together and
    first_shared group their callers by it too)."""

    def __init__(self, engine: AsyncEngine, pool_size: int = 8) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._atomic = engine
        self._direct = engine.dialect.name == "postgresql"
        self._pool_size = pool_size
        self._connections: _Connections | None = None
        self._compiled: dict[Executable, tuple[str, tuple[str, ...], dict[str, Any]]] = {}
        self._groups: dict[tuple[str, Executable], _Group] = {}

    def session(self) -> AsyncSession:
        return AsyncSession(self.engine, expire_on_commit=False)

    async def first(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """The first row of `statement`'s result, or None."""
        if not self._direct:
            async with self.engine.connect() as connection:
                found: Sequence[Any] | None = (await connection.execute(statement, dict(params))).first()
                return found
        sql, args = self._sql(statement, params)
        async with self._pool().use() as connection:
            row: Sequence[Any] | None = await _direct(
                connection, connection.fetchrow(sql, *args), sql, params
            )
            return row

    async def all(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Every row of `statement`'s result."""
        if not self._direct:
            async with self.engine.connect() as connection:
                return (await connection.execute(statement, dict(params))).all()
        sql, args = self._sql(statement, params)
        async with self._pool().use() as connection:
            rows: Sequence[Sequence[Any]] = await _direct(
                connection, connection.fetch(sql, *args), sql, params
            )
            return rows

    async def run(self, statement: Executable, params: Mapping[str, Any]) -> None:
        """Runs `statement` (an INSERT, say), committed on its own; IntegrityError as SQLAlchemy's."""
        if not self._direct:
            async with self.engine.connect() as connection:
                await connection.execute(statement, dict(params))
            return
        sql, args = self._sql(statement, params)
        async with self._pool().use() as connection:
            await _direct(connection, connection.execute(sql, *args), sql, params)

    async def run_together(self, statement: Executable, params: Mapping[str, Any]) -> None:
        """As run(), grouped with the other callers of `statement` (group commit): while one group is
        being written, the rows that arrive wait and go next as one executemany and one commit, so a
        burst costs a round trip per group instead of per row, and a lone row waits for nothing. A group
        refused as a whole (a unique violation) is written row by row, so only the offending caller gets
        the IntegrityError."""

        async def write(rows: list[Waiting]) -> None:
            try:
                await self._run_many(statement, [params for params, _ in rows])
            except IntegrityError:
                for params, done in rows:
                    await _settle(done, self.run(statement, params))
            else:
                _answer(rows, None)

        await _together(self._groups.setdefault(("write", statement), _Group()), params, write)

    async def first_shared(self, statement: Executable) -> Sequence[Any] | None:
        """first() of a statement without parameters, shared by the callers that arrive while one read
        is out: they all get the next read, which starts after each of them arrived, so none is handed a
        result older than its call (what the directory's generation must never be)."""

        async def read(callers: list[Waiting]) -> None:
            _answer(callers, await self.first(statement, {}))

        row: Sequence[Any] | None = await _together(
            self._groups.setdefault(("read", statement), _Group()), {}, read
        )
        return row

    async def first_together(
        self, statement: Executable, params: Mapping[str, Any], each: Executable
    ) -> Sequence[Any] | None:
        """first() of `statement`, which takes one parameter (a key). On PostgreSQL the callers that arrive
        while one read is out share the next one, as `each`: the same read for a list of keys, given under
        that parameter's name, whose rows are `statement`'s with the key they answer put first (a key
        without a row: None). A burst costs a round trip per group instead of per caller; no caller is
        handed a read that began before it arrived."""
        [(name, key)] = params.items()
        if not self._direct:
            return await self.first(statement, params)

        async def read(callers: list[Waiting]) -> None:
            keys = list(dict.fromkeys(asked[name] for asked, _ in callers))
            found = {row[0]: tuple(row)[1:] for row in await self.all(each, {name: keys})}
            for asked, done in callers:
                if not done.done():
                    done.set_result(found.get(asked[name]))

        row: Sequence[Any] | None = await _together(
            self._groups.setdefault(("each", each), _Group()), {name: key}, read
        )
        return row

    async def _run_many(self, statement: Executable, rows: list[Mapping[str, Any]]) -> None:
        if len(rows) == 1:
            return await self.run(statement, rows[0])
        if not self._direct:
            async with self._atomic.begin() as connection:  # all rows or none, as on asyncpg
                await connection.execute(statement, [dict(params) for params in rows])
            return None
        sql, _ = self._sql(statement, rows[0])
        args = [self._sql(statement, params)[1] for params in rows]
        async with self._pool().use() as connection:
            # asyncpg runs the rows in one transaction: all of them or none.
            await _direct(connection, connection.executemany(sql, args), sql, {"rows": len(rows)})
        return None

    async def close(self) -> None:
        if self._connections is not None:
            await self._connections.close()
            self._connections = None

    def _sql(self, statement: Executable, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        compiled = self._compiled.get(statement)
        if compiled is None:
            if len(self._compiled) >= _COMPILED_AT_MOST:  # a caller that builds statements per call
                self._compiled.clear()  # must not grow this forever; module constants recompile once
            done = cast(ClauseElement, statement).compile(dialect=self.engine.dialect)
            order: list[str] = getattr(done, "positiontup", None) or []  # asyncpg's $n are positional
            # The values the statement carries itself (a literal in a WHERE) are anonymous parameters.
            self._compiled[statement] = compiled = (str(done), tuple(order), dict(done.params))
        sql, names, carried = compiled
        return sql, [params[name] if name in params else carried[name] for name in names]

    def _pool(self) -> _Connections:
        if self._connections is None:
            args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
            self._connections = _Connections(partial(_connect, *args, **kwargs), self._pool_size)
        return self._connections


Waiting = tuple[Mapping[str, Any], asyncio.Future[Any]]  # a caller's parameters and its answer


@dataclass
class _Group:
    """The callers waiting for the next group of one statement, and the task working through them."""

    waiting: list[Waiting] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None


Work = Callable[[list[Waiting]], Awaitable[None]]  # answers every caller it is given


async def _together(group: _Group, params: Mapping[str, Any], work: Work) -> Any:
    """Waits for `work` to answer this call along with the others waiting when it takes them."""
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    group.waiting.append((params, done))
    if group.worker is None:
        group.worker = asyncio.create_task(_work_through(group, work))
    return await done


async def _work_through(group: _Group, work: Work) -> None:
    try:
        while group.waiting:
            callers, group.waiting = group.waiting, []
            try:
                await work(callers)
            except Exception as exc:
                for _, done in callers:
                    if not done.done():
                        done.set_exception(exc)
    finally:
        group.worker = None


def _answer(callers: list[Waiting], value: Any) -> None:
    for _, done in callers:
        if not done.done():  # a caller may have gone meanwhile (its request ended); the work is done
            done.set_result(value)


async def _settle(done: asyncio.Future[Any], running: Awaitable[None]) -> None:
    try:
        await running
    except Exception as exc:
        if not done.done():
            done.set_exception(exc)
    else:
        if not done.done():
            done.set_result(None)


# What a connection that broke under asyncpg raises (PostgreSQL restarted or dropped it): the connection
# is thrown away rather than handed out again, and the caller sees an outage (503 or a retried batch).
BROKEN = (
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    OSError,
)


async def _direct(
    connection: asyncpg.Connection, call: Awaitable[Any], sql: str, params: Mapping[str, Any]
) -> Any:
    try:
        return await call
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise IntegrityError(sql, dict(params), exc) from exc
    except BROKEN as exc:
        connection.terminate()
        raise DatabaseUnavailable(f"the connection broke: {type(exc).__name__}") from exc


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
