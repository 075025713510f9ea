"""The audit log as it grows: entries appended per second and inclusion-proof time at each log size.

It runs on a database of its own on the same PostgreSQL server (made by Alembic, dropped afterwards), so
the stack's log stays the stack's. Entries up to each size are written straight into the tables with
SQL (placeholder hashes, random event and notice ids as the real ones are, one row per entry and the
tlog-tiles tiles they fill, one row per tile and width written; a fill of 10^6 entries or more builds
audit_log's other indexes after its rows, so that 10^7 takes minutes); appends and proofs then run the
audit service's own code on them: `audit_log.append` (the exclusive lock, the chain head, the right edge,
entries and tiles in one commit) and `storage.inclusion` (the tile reads an auditor's proof request makes,
without the HTTP around it), with one memory of the tree (`storage.TreeMemory`) as the audit process has."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from bench.stats import Figure
from schemas.events import Event, EventType
from services.platform.database import Autocommit, make_engine, make_sessionmaker, upgrade
from services.transparency import service as audit_log
from services.transparency import storage

FILL_CHUNK = 200_000  # entries per INSERT ... SELECT generate_series
Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class AuditScale:
    append_per_s: Figure  # entries/s of each batch appended at this size
    proof_ms: Figure  # one inclusion proof of a random leaf in the tree of this size
    batch: int
    fill_s: float = 0.0  # how long the bulk fill up to this size took


def _events(count: int) -> list[Event]:
    now = datetime.now(UTC)
    return [
        Event(
            event_id=f"bench-audit-{uuid.uuid4()}",
            type=EventType.notice_delivered,
            occurred_at=now,
            actor="deskbridge/ingest",
            agency="bench-01",
            notice_id=uuid.uuid4(),
            case_ref="KD-2025-0001",
            envelope_sha256="ab" * 32,
            details={"recipient": "bench-01", "kafka_partition": 0, "kafka_offset": i},
        )
        for i in range(count)
    ]


# A fill this large writes the entries first and then builds audit_log's other indexes in one sort each:
# far quicker than as many random insertions into b-trees larger than the cache (event and notice ids
# are random, as uuid5 and uuid4 make them).
REBUILD_FROM = 1_000_000


# The inner nodes of a tile (tiles.TileNodes.inner): rows of hashed pairs up to its two top nodes.
_TILE_INNER = r"""
CREATE OR REPLACE FUNCTION pg_temp.tile_inner(hashes bytea) RETURNS bytea LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  inner_nodes bytea := '';
  below bytea := hashes;
  made bytea;
BEGIN
  WHILE length(below) > 64 LOOP
    SELECT string_agg(sha256('\x01'::bytea || substring(below FROM i * 64 + 1 FOR 64)), '' ORDER BY i)
      INTO made FROM generate_series(0, length(below) / 64 - 1) AS i;
    inner_nodes := inner_nodes || made;
    below := made;
  END LOOP;
  RETURN inner_nodes;
END $$
"""
# The tiles of one level that new nodes land in, each at its new width, a full one with its inner nodes as
# the appender stores them. A tile partly written before (by the appends timed at a smaller size) keeps
# its hashes as the prefix of its wider row: the only growth the database allows. The leaf hashes are
# placeholders (SHA-256 outputs, as incompressible as real ones, stored out of line); the hashes of a
# level above are the roots of the full tiles below (the hash of their two top nodes), so that the tree
# is one tree and a proof's check of a tile's stored inner nodes against its root holds, as in the log.
_FILL_TILES = r"""
INSERT INTO tlog_tiles (level, idx, width, hashes, nodes)
SELECT level, n, w, hashes, CASE WHEN w = 256 THEN pg_temp.tile_inner(hashes) END
FROM (
  SELECT CAST(:level AS smallint) AS level, n, w, coalesce(p.hashes, '') || (
    SELECT string_agg(
      CASE WHEN CAST(:level AS smallint) = 0
      THEN sha256(int8send(n * 256 + k) || int2send(CAST(0 AS smallint)))
      ELSE (
        SELECT sha256('\x01'::bytea || substring(c.nodes FROM 8065 FOR 64)) FROM tlog_tiles c
        WHERE c.level = CAST(:level AS smallint) - 1 AND c.idx = n * 256 + k AND c.width = 256
      ) END, '' ORDER BY k)
    FROM generate_series(coalesce(length(p.hashes), 0) / 32, w - 1) AS k
  ) AS hashes
  FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n
  CROSS JOIN LATERAL (SELECT CAST(LEAST(256, CAST(:after AS bigint) - n * 256) AS integer) AS w) AS t
  LEFT JOIN LATERAL (
    SELECT hashes FROM tlog_tiles WHERE level = :level AND idx = n ORDER BY width DESC LIMIT 1
  ) AS p ON true
) AS made
"""


async def _fill(engine: AsyncEngine, start: int, end: int) -> None:
    """Entries start+1..end (seq), leaves start..end-1, and the tiles those leaves fill or widen."""
    async with engine.begin() as connection:
        rebuilt = await _drop_indexes(connection) if end - start >= REBUILD_FROM else []
    for low in range(start, end, FILL_CHUNK):
        high = min(end, low + FILL_CHUNK)
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO audit_log (seq, event_id, event_type, occurred_at, recorded_at, actor, "
                    "agency, notice_id, case_ref, envelope_sha256, details, prev_hash, entry_hash) "
                    "SELECT s, md5('bench-fill-' || s)::uuid::text, 'notice.delivered', "
                    "'2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00', 'deskbridge/ingest', "
                    "'bench-01', md5('bench-notice-' || s / 8)::uuid::text, 'KD-2025-0001', NULL, '{}', "
                    "md5((s - 1)::text) || md5(s::text), md5(s::text) || md5((s + 1)::text) "
                    "FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS s"
                ),
                {"first": low + 1, "last": high},
            )
            level = 0
            while high >> (8 * level):
                before, after = low >> (8 * level), high >> (8 * level)  # nodes of tree level 8 * level
                if before < after:  # the tiles those new nodes land in, each at its new width
                    await connection.execute(text(_TILE_INNER))
                    await connection.execute(
                        text(_FILL_TILES),
                        {"level": level, "after": after, "first": before // 256, "last": (after - 1) // 256},
                    )
                    await connection.execute(  # the row the first of them superseded, as append does
                        text(
                            "DELETE FROM tlog_tiles WHERE level = :level AND idx = :first AND width < "
                            "(SELECT max(width) FROM tlog_tiles WHERE level = :level AND idx = :first)"
                        ),
                        {"level": level, "first": before // 256},
                    )
                level += 1
    async with engine.begin() as connection:
        await connection.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        for statement in rebuilt:
            await connection.execute(text(statement))
    # Vacuumed (hint bits set, the visibility map written) and with fresh statistics, as autovacuum
    # would have left an append-only table by then: else the first read of each page writes it.
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM (ANALYZE) audit_log"))
        await connection.execute(text("VACUUM (ANALYZE) tlog_tiles"))


async def _drop_indexes(connection: AsyncConnection) -> list[str]:
    """Drops audit_log's indexes but its primary key; returns the statements that make them again."""
    rows = await connection.execute(
        text(
            "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "WHERE c.conrelid = 'audit_log'::regclass AND c.contype = 'u'"
        )
    )
    again = []
    for name, definition in rows.all():
        await connection.execute(text(f'ALTER TABLE audit_log DROP CONSTRAINT "{name}"'))
        again.append(f'ALTER TABLE audit_log ADD CONSTRAINT "{name}" {definition}')
    rows = await connection.execute(
        text(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = 'audit_log' "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
            "WHERE c.conname = i.indexname AND c.conrelid = 'audit_log'::regclass)"
        )
    )
    for name, definition in rows.all():
        await connection.execute(text(f'DROP INDEX "{name}"'))
        again.append(definition)
    return again


async def _append_rates(
    sessions: Sessions, tree: storage.TreeMemory, batches: int, batch: int
) -> list[float]:
    rates = []
    for _ in range(batches):
        events = _events(batch)
        async with sessions() as session:
            began = time.perf_counter()
            growth = await audit_log.append(session, events, tree)
            assert growth.added == batch
            await session.commit()
            tree.committed(growth)
            rates.append(batch / (time.perf_counter() - began))
    return rates


async def _proof_times(
    sessions: Sessions, tree: storage.TreeMemory, size: int, proofs: int, rng: random.Random
) -> list[float]:
    times = []
    async with sessions() as session:
        for _ in range(proofs):
            index = rng.randrange(size)
            began = time.perf_counter()
            proof = await storage.inclusion(session, index, size, tree)
            times.append((time.perf_counter() - began) * 1000)
            assert len(proof) <= size.bit_length()
            await session.rollback()  # each proof in a transaction of its own, as each request is
    return times


async def audit_scaling(
    database_url: str, sizes: Sequence[int], batches: int, batch: int, proofs: int
) -> dict[int, AuditScale]:
    """For each log size (ascending): the log is filled up to it, `batches` appends of `batch` entries
    are timed, then `proofs` inclusion proofs of random leaves in the tree of the size reached."""
    url = make_url(database_url)
    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
    server = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with server.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    own = url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(own)
    reader = Autocommit(engine)
    try:
        await asyncio.to_thread(upgrade, own)
        sessions = make_sessionmaker(engine)
        tree = storage.TreeMemory(reader=reader)  # as the audit process's, which reads with its Autocommit
        rng = random.Random(7)
        results: dict[int, AuditScale] = {}
        size = 0
        for target in sorted(sizes):
            began = time.perf_counter()
            if target > size:
                await _fill(engine, size, target)
                size = target
            fill_s = time.perf_counter() - began
            rates = await _append_rates(sessions, tree, batches, batch)
            size += batches * batch
            times = await _proof_times(sessions, tree, size, proofs, rng)
            results[target] = AuditScale(Figure.of_rates(rates), Figure.of_durations(times), batch, fill_s)
        return results
    finally:
        await reader.close()
        await engine.dispose()
        async with server.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await server.dispose()
