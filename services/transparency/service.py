"""The audit log: the one append path, which writes entries and the tree nodes they complete in one
transaction, and the reads auditors make of it (entries, leaves, nodes, proofs, export)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    String,
    any_,
    bindparam,
    func,
    insert,
    null,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.audit import AuditLeaf, AuditPage, AuditRecord, LeafPage, NodePage, TreeNode
from schemas.events import Event
from services.transparency import storage, tiles
from services.transparency.entries import GENESIS_HASH, ROW, chained, leaf_data
from services.transparency.models import AuditEntry
from services.transparency.storage import Growth, TreeError, TreeMemory


def to_record(row: AuditEntry) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        event_id=row.event_id,
        event_type=row.event_type,
        occurred_at=row.occurred_at,
        recorded_at=row.recorded_at,
        actor=row.actor,
        agency=row.agency,
        notice_id=row.notice_id,
        case_ref=row.case_ref,
        envelope_sha256=row.envelope_sha256,
        details=json.loads(row.details),
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
    )


async def head(session: AsyncSession) -> tuple[int, str]:
    row = (await session.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1))).scalar()
    return (row.seq, row.entry_hash) if row is not None else (0, GENESIS_HASH)


def _head_and_seen_query(among: ColumnElement[bool]) -> CompoundSelect[Any]:
    last = select(AuditEntry.seq, AuditEntry.entry_hash).order_by(AuditEntry.seq.desc()).limit(1).subquery()
    return union_all(
        select(last.c.seq, last.c.entry_hash, null().label("event_id")),
        select(null(), null(), AuditEntry.event_id).where(among),
    )


# Built once; on PostgreSQL the ids go as one array (= ANY), which costs less than rendering an IN list.
_HEAD_AND_SEEN = {
    "postgresql": _head_and_seen_query(AuditEntry.event_id == any_(bindparam("ids", type_=ARRAY(String)))),
    "sqlite": _head_and_seen_query(AuditEntry.event_id.in_(bindparam("ids", expanding=True))),
}


async def _head_and_seen(session: AsyncSession, ids: set[str]) -> tuple[tuple[int, str], set[str]]:
    """The log's head and which of these event ids it holds already, in one round trip."""
    query = _HEAD_AND_SEEN[session.get_bind().dialect.name]
    found, seen = (0, GENESIS_HASH), set()
    for seq, hash_, event_id in (await session.execute(query, {"ids": list(ids)})).all():
        if event_id is None:
            found = (seq, hash_)
        else:
            seen.add(event_id)
    return found, seen


_INSERT = insert(AuditEntry)
_COLUMNS = [column.name for column in AuditEntry.__table__.columns]
assert tuple(_COLUMNS) == ROW  # chained writes rows in the table's column order


async def _insert(session: AsyncSession, rows: list[str]) -> None:
    """The batch's entries (rows as chained writes them) in one statement: COPY on PostgreSQL (asyncpg's,
    on the session's connection and in its transaction; a third of an executemany's time), else one
    executemany, in Core (the ORM's bulk insert costs more than the rows)."""
    if not rows:
        return
    records: list[list[Any]] = json.loads(_rows_json(rows))
    connection = await session.connection()
    if connection.dialect.driver == "asyncpg":
        driver = await _driver(session)
        await driver.copy_records_to_table(
            AuditEntry.__tablename__, records=[tuple(r) for r in records], columns=_COLUMNS
        )
    else:
        await connection.execute(_INSERT, [dict(zip(_COLUMNS, r, strict=True)) for r in records])


def _rows_json(rows: list[str]) -> str:
    return f"[{','.join(rows)}]"


async def _driver(session: AsyncSession) -> Any:
    """The asyncpg connection under the session's, in its transaction."""
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    return driver


@dataclass
class _Chain:
    """Events as the entries that follow `head`, in order: their rows (JSON arrays, as chained writes
    them), leaf hashes and the head they end at."""

    head: tuple[int, str]
    rows: list[str]
    leaves: list[bytes]
    end: tuple[int, str]

    @classmethod
    def of(cls, events: Sequence[Event], head: tuple[int, str], recorded_at: str) -> _Chain:
        seq, prev = head
        rows: list[str] = []
        leaves: list[bytes] = []
        for event in events:
            seq += 1
            # The fields of the AuditRecord it is (schemas/audit.py), as its model_dump writes them: the
            # event was validated already, so the record is not built (and validated) again.
            prev, leaf, row = chained(
                seq,
                event.event_id,
                event.type.value,
                event.occurred_at.astimezone(UTC).isoformat(),
                recorded_at,
                event.actor,
                event.agency,
                str(event.notice_id) if event.notice_id else None,
                event.case_ref,
                event.envelope_sha256,
                event.details,
                prev,
            )
            rows.append(row)
            leaves.append(leaf)
        return cls(head, rows, leaves, (seq, prev))


def _now() -> str:
    return datetime.now(UTC).isoformat()  # a batch's recorded_at, the same for all its entries


def _new(events: Sequence[Event], seen: set[str]) -> list[Event]:
    """The events whose ids are not in `seen`, each once, in order."""
    seen = set(seen)
    new = []
    for event in events:
        if event.event_id not in seen:
            seen.add(event.event_id)
            new.append(event)
    return new


# On PostgreSQL, when the appender's memory holds the edge at the head it expects: entries and the tiles
# they change in one statement (one round trip), written only if the log still ends at that head, else
# nothing is written (it answers false). A batch goes as chunks of entries, one statement each, the last
# with the tiles (_append_at_head). An event id the log holds already fails the statement on the unique
# index on event_id, which the insert probes anyway (a check of the ids beforehand probed it twice); a
# refusal or a moved head rolls the append back to the savepoint it set before. Either way it then reads
# the head and which ids are held, as without a memory. The head is read after the table lock (a later
# statement, so a later snapshot). The entries go as one JSON array of rows: asyncpg checks every
# element of an array parameter against abstract base classes, which cost more than the JSON (which
# chained writes along with the hashes) and its parse. The narrower rows the new tiles supersede are
# deleted after them (the DELETE reads what the INSERT returns), so the trigger that allows only such a
# deletion sees the wider rows.
_APPEND_AT_HEAD = """
WITH entries AS (
  SELECT (r->>0)::bigint AS seq, r->>1 AS event_id, r->>2, r->>3, r->>4, r->>5, r->>6, r->>7, r->>8, r->>9,
    r->>10, r->>11, r->>12
  FROM jsonb_array_elements($1::text::jsonb) AS r
), go AS (
  SELECT coalesce(
    (SELECT seq::text || ':' || entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1), '0:' || repeat('0', 64)
  ) = $2 AS ok
), written AS (
  INSERT INTO audit_log (seq, event_id, event_type, occurred_at, recorded_at, actor, agency, notice_id,
    case_ref, envelope_sha256, details, prev_hash, entry_hash)
  SELECT * FROM entries WHERE (SELECT ok FROM go)
), tiles AS (
  INSERT INTO tlog_tiles (level, idx, width, hashes, nodes)
  SELECT * FROM unnest($3::smallint[], $4::bigint[], $5::smallint[], $6::bytea[], $7::bytea[])
  WHERE (SELECT ok FROM go)
  RETURNING level, idx, width
), superseded AS (
  DELETE FROM tlog_tiles t USING tiles n WHERE t.level = n.level AND t.idx = n.idx AND t.width < n.width
)
SELECT ok FROM go
"""
# The statement spells out the genesis hash and the table's columns, in ROW's order.
assert GENESIS_HASH == "0" * 64
_ONCE = "audit_log_event_id_key"  # the unique index on event_id, as PostgreSQL names it (0001)
# Sent as one simple query (one round trip). PostgreSQL would plan the statement afresh at each append
# (its estimate of the generic plan is the higher), which costs more than the entries' parse.
_BEFORE_APPEND = "SET LOCAL plan_cache_mode = force_generic_plan; SAVEPOINT audit_append"
_CHUNK = 50  # entries a statement: a batch of 200 keeps the database busy while 150 are hashed


async def _append_at_head(
    session: AsyncSession, events: Sequence[Event], head: tuple[int, str], memory: TreeMemory
) -> Growth | None:
    """The events appended after `head` by _APPEND_AT_HEAD, a chunk at a time (the last with the tiles
    they all change), or None (nothing written) if the log moved from its head or holds one of them.
    Each chunk is hashed while the database inserts the one before: one statement in flight at a time."""
    driver = await _driver(session)
    await driver.execute(_BEFORE_APPEND)
    edge: tiles.TiledEdge | None = None
    changed: dict[tiles.Tile, tiles.TileNodes] = {}
    end, recorded_at = head, _now()
    sent: asyncio.Future[bool] | None = None
    written = False
    try:
        for start in range(0, len(events), _CHUNK):
            chain = _Chain.of(events[start : start + _CHUNK], end, recorded_at)
            if edge is None:
                edge, changed = await storage.grow(session, head, chain.leaves, memory)
            else:
                changed.update(edge.append(chain.leaves))
            end = chain.end
            if sent is not None and not await sent:
                sent = None
                break
            tiles_ = storage.tile_rows(changed) if start + _CHUNK >= len(events) else []
            arguments: list[Any] = [_rows_json(chain.rows), f"{chain.head[0]}:{chain.head[1]}"]
            arguments += [
                [tile[name] for tile in tiles_] for name in ("level", "idx", "width", "hashes", "nodes")
            ]
            sent = asyncio.ensure_future(driver.fetchval(_APPEND_AT_HEAD, *arguments))
            await asyncio.sleep(0)  # the statement goes out before the next chunk is hashed
        if sent is not None and await sent and edge is not None:
            written = True
            return storage.grown(edge, changed, len(events), end, memory)
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name != _ONCE:
            raise
    finally:
        if sent is not None and not sent.done():
            await asyncio.gather(sent, return_exceptions=True)  # the connection free for the rollback
        if not written:  # no chunk stays without the rest and the tiles, even if the caller commits
            await driver.execute("ROLLBACK TO SAVEPOINT audit_append")
    return None  # the memory gave its edge up: the append reads it again


async def append(session: AsyncSession, events: Sequence[Event], memory: TreeMemory | None = None) -> Growth:
    """Appends the events not yet in the log, in order, with the tiles they change, from the right edge
    `memory` keeps (without one, read from the tiles); returns how many were new (`added`) and what the
    commit makes known. Caller commits (entries and tiles land together or not at all), then tells the
    memory: `memory.committed(growth)`."""
    if not events:
        return Growth(0)
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        # One writer at a time keeps seq contiguous, the chain linear and the tree's right edge ours;
        # readers are not blocked. SQLite has a single writer anyway.
        await connection.exec_driver_sql("LOCK TABLE audit_log IN EXCLUSIVE MODE")
        expected = memory.edge_head() if memory is not None else None
        if memory is not None and expected is not None and connection.dialect.driver == "asyncpg":
            growth = await _append_at_head(session, _new(events, set()), expected, memory)
            if growth is not None:
                return growth
    before, seen = await _head_and_seen(session, {e.event_id for e in events})
    chain = _Chain.of(_new(events, seen), before, _now())
    await _insert(session, chain.rows)
    return await storage.add_leaves(session, before, chain.leaves, chain.end, memory)


async def count(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one())


# ---- what auditors read -------------------------------------------------------------------------------

MAX_PAGE = 1000


@dataclass(frozen=True)
class EventFilter:
    """Narrows the entries served; None admits every value. `since` is inclusive, `until` exclusive."""

    agency: str | None = None
    notice_id: str | None = None
    case_ref: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _utc_text(at: datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


async def events_page(session: AsyncSession, after: int, limit: int, only: EventFilter) -> AuditPage:
    """Entries after `after`, filtered. The head is read first, then only entries up to it: appends are
    serialised and seq is contiguous, so all of them are visible and the page never runs past its head."""
    head_seq, head_hash = await head(session)
    query = (
        select(AuditEntry)
        .where(AuditEntry.seq > after, AuditEntry.seq <= head_seq)
        .order_by(AuditEntry.seq)
        .limit(limit)
    )
    for column, value in (
        (AuditEntry.agency, only.agency),
        (AuditEntry.notice_id, only.notice_id),
        (AuditEntry.case_ref, only.case_ref),
        (AuditEntry.event_type, only.event_type),
    ):
        if value is not None:
            query = query.where(column == value)
    # occurred_at is stored as UTC ISO text, which sorts as time does.
    if only.since is not None:
        query = query.where(AuditEntry.occurred_at >= _utc_text(only.since))
    if only.until is not None:
        query = query.where(AuditEntry.occurred_at < _utc_text(only.until))
    rows = list((await session.execute(query)).scalars())
    return AuditPage(
        entries=[to_record(r) for r in rows],
        next_after=rows[-1].seq if len(rows) == limit else None,
        head_seq=head_seq,
        head_hash=head_hash,
    )


def leaf_range(start: int, end: int, size: int, limit: int = MAX_PAGE) -> int:
    """The end of [start, end) cut to the tree's `size`; TreeError unless 0 <= start <= end <= start+limit."""
    if not 0 <= start <= end or end - start > limit:
        raise TreeError(f"a range is 0 <= start <= end with at most {limit} leaves")
    return min(end, size)


async def leaves(session: AsyncSession, start: int, end: int) -> list[AuditLeaf]:
    """Leaves [start, end) with their stored leaf hashes (empty where none is stored)."""
    return await leaves_where(session, AuditEntry.seq > start, AuditEntry.seq <= end)


async def leaves_where(session: AsyncSession, *where: ColumnElement[bool]) -> list[AuditLeaf]:
    """The entries that match, in log order, as leaves with their stored leaf hashes (empty where none
    is stored): one query for the entries, one for the level-0 tiles that hold their leaf hashes."""
    rows = list((await session.execute(select(AuditEntry).where(*where).order_by(AuditEntry.seq))).scalars())
    stored = await storage.leaf_hashes(session, {r.seq - 1 for r in rows})
    return [
        AuditLeaf(index=r.seq - 1, leaf_hash=stored.get(r.seq - 1, b"").hex(), record=to_record(r))
        for r in rows
    ]


async def entry_bundle(session: AsyncSession, index: int, width: int) -> bytes:
    """tlog-tiles entry bundle `index` of `width` entries (256: full): each leaf's data, which hashes to
    its leaf hash in level-0 tile `index`, prefixed with its length as a big-endian uint16."""
    first = index * tiles.WIDTH
    query = select(AuditEntry).where(AuditEntry.seq > first, AuditEntry.seq <= first + width)
    rows = list((await session.execute(query.order_by(AuditEntry.seq))).scalars())
    if len(rows) < width:
        raise TreeError(f"no entry bundle {tiles.tile_path(None, index, width)}", "tile_not_found")
    bundle = bytearray()
    for row in rows:
        data = leaf_data(to_record(row))
        if len(data) > 0xFFFF:
            raise TreeError(f"entry {row.seq} is longer than an entry bundle holds")
        bundle += len(data).to_bytes(2, "big") + data
    return bytes(bundle)


async def leaves_page(session: AsyncSession, start: int, end: int) -> LeafPage:
    size = await storage.tree_size(session)
    return LeafPage(size=size, leaves=await leaves(session, start, leaf_range(start, end, size)))


async def nodes_page(session: AsyncSession, level: int, start: int, end: int) -> NodePage:
    """Complete-subtree hashes of one level, by index range: stored at levels 8L (tile level L), hashed
    from the tile below in between (C2SP tlog-tiles stores no other)."""
    size = await storage.tree_size(session)
    end = leaf_range(start, end, size >> level)
    tile_level, height = divmod(level, tiles.HEIGHT)
    stored = await storage.stored_hashes(session, tile_level, start << height, end << height)
    nodes: list[TreeNode] = []
    for index in range(start, end):
        first, count = index << height, 1 << height
        row = b"".join(stored.get(first + i, b"") for i in range(count))
        if len(row) == count * tiles.HASH:
            nodes.append(TreeNode(index=index, hash=tiles.subtree(row, 0, count).hex()))
    return NodePage(level=level, size=size, nodes=nodes)
