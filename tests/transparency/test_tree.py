"""The audit log as a Merkle tree: stored tiles and proofs (SQLite and PostgreSQL), the start-up check,
signed checkpoints, and `deskbridge audit verify | export | witness` against a real stack (Kafka,
PostgreSQL, HTTP), with every kind of tampering the issue lists named by the verifier."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from sqlalchemy import event, exc, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from structlog.testing import capture_logs
from typer.testing import CliRunner, Result

from devstack.kafka import free_port
from schemas.audit import AuditLeaf
from schemas.events import Event, EventType
from services.cli.main import app
from services.cli.profiles import Profile
from services.envelope.keys import AgencyKeys, SigningKey
from services.platform.database import Autocommit, make_engine, make_sessionmaker
from services.transparency import merkle, service, storage, tiles
from services.transparency.checkpoints import check_tree, save_log_vkey, sign_checkpoint
from services.transparency.entries import leaf_data, record_leaf_hash, verify_chain
from services.transparency.models import AuditEntry, TlogCheckpoint, TlogTile
from services.transparency.note import (
    Checkpoint,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    parse_vkey,
    sign_note,
)
from services.transparency.service import append, to_record
from services.transparency.storage import TreeError, TreeMemory
from tests.conftest import ServiceTasks, Stack, eventually, migrated_database
from tests.support.postgres import PostgresCluster
from tests.support.sealing import notice_body
from tests.transparency.test_log import _chain

ORIGIN = "deskbridge.test/audit-log"
QUIET = {"checkpoint_interval_s": 0.3, "audit_query_window_s": 3600}


def _event(n: int) -> Event:
    return Event(
        event_id=f"e-{n}",
        type=EventType.notice_delivered,
        occurred_at=datetime(2025, 3, 31, 9, n % 60, tzinfo=timezone(timedelta(hours=9))),
        actor="ingest",
        agency="kh-cnp",
        notice_id=uuid.UUID(int=n),
        case_ref="KD-2025-0331",
        envelope_sha256=f"{n:064x}",
        details={"n": n},
    )


async def _append(engine: AsyncEngine, first: int, last: int, tree: TreeMemory | None = None) -> None:
    """Appends and commits events first..last, as a process whose memory of the tree is `tree`."""
    async with make_sessionmaker(engine)() as session:
        growth = await append(session, [_event(n) for n in range(first, last + 1)], tree)
        await session.commit()
    if tree is not None:
        tree.committed(growth)


# ---- storage, proofs and the start-up check, on SQLite and PostgreSQL ---------------------------------


async def test_appends_store_the_tree_and_proofs_read_from_it(engine: AsyncEngine) -> None:
    # Batches of odd sizes, so subtrees and tiles complete across batch boundaries; twice the appender
    # forgets its right edge (a restart) and rebuilds it from the tiles.
    size, tree = 0, TreeMemory()
    for batch in (1, 5, 1, 13, 17, 219, 1, 300, 43):
        if batch in (17, 300):
            tree = TreeMemory()
        await _append(engine, size + 1, size + batch, tree)
        size += batch
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        rows = list((await session.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars())
        stored = await storage.read_tiles(session, TlogTile.level >= 0)
        widths = dict(
            (await session.execute(select(TlogTile.level, func.count()).group_by(TlogTile.level))).all()
        )
        reference = merkle.MemoryTree()
        for row in rows:
            reference.append(record_leaf_hash(to_record(row)))
        # Exactly the tiles of the spec: levels 0 and 8 of the tree, in rows of up to 256 hashes.
        assert {key: len(hashes) // 32 for key, hashes in stored.items()} == {
            (0, 0): 256,
            (0, 1): 256,
            (0, 2): 88,
            (1, 0): 2,
        }
        for (level, idx), hashes in stored.items():
            for i in range(len(hashes) // 32):
                assert hashes[i * 32 : (i + 1) * 32] == reference.get_node(8 * level, idx * 256 + i)
        # One row per tile: each batch's wider row superseded the narrower one, which it deleted.
        assert widths == {0: 3, 1: 1}
        for size in (1, 2, 5, 16, 37, 255, 256, 257, 511, 512, 600):
            root = await storage.root_at(session, size)
            assert (
                root
                == reference.root(size)
                == merkle.root([record_leaf_hash(to_record(r)) for r in rows[:size]])
            )
            for index in {0, size // 2, size - 1}:
                proof = await storage.inclusion(session, index, size)
                leaf = record_leaf_hash(to_record(rows[index]))
                assert proof == merkle.inclusion_proof(index, size, reference.get_node)
                assert merkle.verify_inclusion(leaf, index, size, proof, root)
            for old in (0, 1, size // 2, size):
                proof = await storage.consistency(session, old, size)
                assert proof == merkle.consistency_proof(old, size, reference.get_node)
                assert merkle.verify_consistency(old, size, reference.root(old), root, proof)
        with pytest.raises(TreeError, match="beyond the tree's 600 leaves"):
            await storage.inclusion(session, 0, 601)
        with pytest.raises(TreeError, match="not in a tree of size 5"):
            await storage.inclusion(session, 5, 5)


async def test_an_appender_uses_its_edge_only_while_the_head_is_the_one_it_left(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = make_sessionmaker(engine)
    mine, other = TreeMemory(), TreeMemory()
    await _append(engine, 1, 300, mine)
    # Another process appends (its own edge), then this one, whose kept edge is now stale.
    await _append(engine, 301, 310, other)
    await _append(engine, 311, 320, mine)
    # A batch rolled back: the edge kept under its head is never used, the head being the old one.
    async with sessions() as session:
        await append(session, [_event(n) for n in range(321, 330)], mine)
        await session.rollback()
    await _append(engine, 321, 340, mine)
    # An append that fails after its edge took the batch in (here: the one statement that writes the
    # entries and tiles and deletes the rows they superseded, or the delete after them on the path of
    # three): the edge, changed, is not kept under the head it started from, which the batch retried
    # finds again.
    with monkeypatch.context() as patched:
        patched.setattr(service, "_APPEND_AT_HEAD", "SELECT x FROM no_such_table")
        patched.setattr(storage, "_DELETE_NARROWER", text("DELETE FROM no_such_table WHERE x = :level"))
        async with sessions() as session:
            with pytest.raises((exc.DBAPIError, asyncpg.PostgresError)):  # the one statement goes on asyncpg
                await append(session, [_event(n) for n in range(341, 350)], mine)
            await session.rollback()
    await _append(engine, 341, 350, mine)
    async with sessions() as session:
        reference = await _reference_tree(session)
        assert reference.size == 350
        for size in (300, 310, 320, 340, 350):
            assert await storage.root_at(session, size) == reference.root(size)
        stored = await storage.read_tiles(session, TlogTile.level >= 0)
        assert stored[(0, 1)] == b"".join(reference.get_node(0, i) for i in range(256, 350))


async def test_an_appender_that_knows_the_head_still_records_a_repeated_event_once(
    engine: AsyncEngine,
) -> None:
    # With the edge in memory, a new batch is written by one statement a chunk on PostgreSQL, which fails
    # on the unique index when the log holds one of its events (a redelivery), first chunk or a later one
    # (the chunks before it written), and is rolled back to its savepoint: the batch is then appended as
    # without a memory, in the same transaction.
    mine = TreeMemory()
    await _append(engine, 1, 300, mine)
    for batch, added in (((*range(295, 311), 305), 10), ((*range(311, 400), 300), 89)):
        async with make_sessionmaker(engine)() as session:
            growth = await append(session, [_event(n) for n in batch], mine)
            await session.commit()
        mine.committed(growth)
        assert growth.added == added
    await _append(engine, 400, 520, mine)  # chunks, all new
    async with make_sessionmaker(engine)() as session:
        reference = await _reference_tree(session)
        assert reference.size == 520 == await storage.tree_size(session)
        records = [to_record(r) for r in (await session.execute(select(AuditEntry))).scalars()]
        assert verify_chain(sorted(records, key=lambda r: r.seq)) == []
        assert len({r.recorded_at for r in records if r.seq > 399}) == 1  # one batch, one time
        for size in (300, 310, 399, 520):
            assert await storage.root_at(session, size) == reference.root(size)


async def test_a_batch_that_fails_halfway_leaves_nothing_even_if_committed(engine: AsyncEngine) -> None:
    # Its first chunk may be written when a later one fails (an entry that cannot be hashed: a lone
    # surrogate is not Unicode text): the append rolls back to its savepoint before it raises.
    mine = TreeMemory()
    await _append(engine, 1, 10, mine)
    broken = [_event(n) for n in range(11, 81)]
    broken[60] = broken[60].model_copy(update={"actor": "\ud800"})
    async with make_sessionmaker(engine)() as session:
        with pytest.raises(ValueError):
            await append(session, broken, mine)
        await session.commit()
    await _append(engine, 11, 20, mine)
    async with make_sessionmaker(engine)() as session:
        assert await storage.tree_size(session) == 20 == (await _reference_tree(session)).size
        records = [to_record(r) for r in (await session.execute(select(AuditEntry))).scalars()]
        assert verify_chain(sorted(records, key=lambda r: r.seq)) == []


class _Statements:
    """Counts the statements an engine runs."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1

    def taken(self) -> int:
        count, self.count = self.count, 0
        return count


async def test_proofs_from_memory_are_those_of_the_stored_tiles(engine: AsyncEngine) -> None:
    # What this process knows once its appends commit (the right edge, the full tiles in the LRU
    # cache) serves proofs byte for byte as the stored tiles do, without reading the database.
    tree = TreeMemory()
    size = 0
    for batch in (3, 300, 1, 250, 70):
        await _append(engine, size + 1, size + batch, tree)
        size += batch
        async with make_sessionmaker(engine)() as session:  # a proof between appends, as in service
            for index in (0, size - 1):
                stored = await storage.with_nodes(session, partial(merkle.inclusion_proof, index, size))
                assert await storage.inclusion(session, index, size, tree) == stored
    assert tree.known is not None and tree.known.size == size == 624
    statements = _Statements(engine)
    async with make_sessionmaker(engine)() as session:
        reference = await _reference_tree(session)
        for at in (1, 2, 255, 256, 257, 300, 511, 512, 600, 624):
            for index in {0, 1 % at, at // 2, at - 1}:
                statements.taken()
                proof = await storage.inclusion(session, index, at, tree)
                assert statements.taken() == 0
                stored = await storage.with_nodes(session, partial(merkle.inclusion_proof, index, at))
                assert proof == stored == merkle.inclusion_proof(index, at, reference.get_node)
            for old in {0, 1, at // 3, at - 1, at}:
                proof = await storage.consistency(session, old, at, tree)
                stored = await storage.with_nodes(session, partial(merkle.consistency_proof, old, at))
                assert proof == stored == merkle.consistency_proof(old, at, reference.get_node)
        # A leaf in a full tile not in memory: its path up that tile is read alone (one statement) and
        # checked against the tile's root held above it; the tile is not kept, only its path was read.
        tree.full.capacity = 1
        tree.full.clear()
        statements.taken()
        for index in (0, 300, 0):
            assert await storage.inclusion(session, index, 624, tree) == merkle.inclusion_proof(
                index, 624, reference.get_node
            )
            assert statements.taken() == 1  # the path in the full level-0 tile under the leaf
            assert len(tree.full) == 0
        # Tiles read whole (a consistency proof's) leave the bounded cache least recently used first,
        # and are read again when needed.
        for old in (100, 300, 100):
            assert await storage.consistency(session, old, 624, tree) == merkle.consistency_proof(
                old, 624, reference.get_node
            )
            assert statements.taken() == 1  # the full level-0 tile the old size ends in
            assert len(tree.full) == 1
    # A session with no transaction open is left so: the tile is read on a connection of its own.
    tree.full.clear()
    async with make_sessionmaker(engine)() as session:
        statements.taken()
        assert await storage.inclusion(session, 5, 600, tree) == merkle.inclusion_proof(
            5, 600, reference.get_node
        )
        assert statements.taken() == 1 and not session.in_transaction()
    # An append makes nothing known before its commit, which the appender then tells the memory: a
    # batch rolled back, or closed without a commit, is never known, and the size beyond is asked of the
    # database, which refuses it.
    async with make_sessionmaker(engine)() as session:
        await append(session, [_event(n) for n in range(625, 700)], tree)
        await session.rollback()
        assert tree.known is not None and tree.known.size == 624
        with pytest.raises(TreeError, match="beyond the tree's 624 leaves"):
            await storage.inclusion(session, 0, 625, tree)
    async with make_sessionmaker(engine)() as session:
        await append(session, [_event(n) for n in range(625, 700)], tree)
    assert tree.known is not None and tree.known.size == 624


async def test_a_tree_grown_by_another_appender_is_read_and_then_known(engine: AsyncEngine) -> None:
    # Another audit replica appends (a memory of its own), or this one is a standby that appends
    # nothing: proofs beyond what it knows read the size and the right edge.
    tree = TreeMemory()
    await _append(engine, 1, 300, tree)
    await _append(engine, 301, 340, TreeMemory())
    tree.full.clear()
    statements = _Statements(engine)
    async with make_sessionmaker(engine)() as session:
        reference = await _reference_tree(session)
        statements.taken()
        assert await storage.inclusion(session, 310, 340, tree) == merkle.inclusion_proof(
            310, 340, reference.get_node
        )
        assert statements.taken() == 2  # the size, then the tiles with the right edge at 340
        assert tree.known is not None and tree.known.size == 340
        assert await storage.inclusion(session, 339, 340, tree) == merkle.inclusion_proof(
            339, 340, reference.get_node
        )
        assert await storage.consistency(session, 300, 340, tree) == merkle.consistency_proof(
            300, 340, reference.get_node
        )
        assert statements.taken() == 0
        with pytest.raises(TreeError, match="beyond the tree's 340 leaves"):
            await storage.inclusion(session, 0, 341, tree)
        standby = TreeMemory()  # a standby that never appended
        assert await storage.inclusion(session, 5, 320, standby) == merkle.inclusion_proof(
            5, 320, reference.get_node
        )
        assert standby.known is not None and standby.known.size == 320
        assert await storage.inclusion(session, 5, 340, standby) == merkle.inclusion_proof(
            5, 340, reference.get_node
        )
        assert standby.known.size == 340
        # Without a memory, a proof reads what it needs, every time.
        statements.taken()
        assert await storage.inclusion(session, 5, 340) == merkle.inclusion_proof(5, 340, reference.get_node)
        assert statements.taken() == 2


async def test_full_tiles_keep_their_inner_nodes_which_proofs_read_and_check(
    tmp_path: Path, pg_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The audit process's proofs read a full tile's inner nodes with it rather than hashing its 256
    # hashes; each node it gives is checked against the tile's root, so a node altered in the database
    # is never served: the tile is hashed as before, and the operator told.
    engine = make_engine(await migrated_database("postgresql", tmp_path, pg_cluster))
    reader = Autocommit(engine)
    try:
        await _append(engine, 1, 400, TreeMemory())  # the one-statement append (an edge kept)
        await _append(engine, 401, 700)  # the other path: the edge read, the tiles by add_leaves
        async with make_sessionmaker(engine)() as session:
            reference = await _reference_tree(session)
            rows = (
                await session.execute(select(TlogTile.idx, TlogTile.width, TlogTile.hashes, TlogTile.nodes))
            ).all()
        assert sorted((idx, width) for idx, width, _, nodes in rows if nodes is not None) == [
            (0, 256),
            (1, 256),
        ]
        for _, width, hashes, nodes in rows:
            assert nodes == (tiles.TileNodes(hashes).inner() if width == 256 else None)
        hashed: list[bytes] = []
        real_rows = tiles._rows
        monkeypatch.setattr(tiles, "_rows", lambda row, kept=None: hashed.append(row) or real_rows(row, kept))
        knowing = TreeMemory(reader=reader)  # knows the size: reads tiles on the reader, not in a transaction

        async def proved(index: int, tree: TreeMemory) -> list[tuple[str, Any]]:
            tree.full.clear()
            with capture_logs() as logs:
                async with make_sessionmaker(engine)() as session:
                    proof = await storage.inclusion(session, index, 700, tree)
            assert proof == merkle.inclusion_proof(index, 700, reference.get_node)
            return [(entry["event"], entry.get("tiles")) for entry in logs]

        for index in (0, 77, 255, 256, 511):
            assert await proved(index, TreeMemory(reader=reader)) == []  # knows nothing: a restart
            assert await proved(index, knowing) == []
            # The first proof learnt the size, reading the tile whole with the right edge; knowing it,
            # the next ones read only the leaf's path.
            assert len(knowing.full) == (1 if index == 0 else 0)
        assert [len(row) for row in hashed if len(row) == tiles.TILE_BYTES] == []  # only partial tiles
        # Node 1 of height 1 of tile 1 (leaves 258, 259) altered: the proofs that use it hash the tile.
        async with make_sessionmaker(engine)() as session:
            nodes = next(n for idx, _, _, n in rows if idx == 1 and n is not None)
            altered = nodes[:32] + bytes(32) + nodes[64:]
            statement = "UPDATE tlog_tiles SET nodes = :n WHERE level = 0 AND idx = 1"
            await _bypass(await session.connection(), "postgresql", "tlog_tiles", statement, {"n": altered})
            await session.commit()
        for tree in (TreeMemory(reader=reader), knowing):
            hashed.clear()
            # The path read alone does not climb to the root either: the tile is read whole and hashed.
            assert await proved(256, tree) == [("tile_nodes_distrusted", [(0, 1)])]
            assert [len(row) for row in hashed if len(row) == tiles.TILE_BYTES] == [tiles.TILE_BYTES]
            assert await proved(300, tree) == []  # a path that does not pass that node
        # Only a full tile has inner nodes, all 254 of them.
        async with engine.begin() as connection:
            with pytest.raises(exc.IntegrityError, match="ck_tlog_tiles_nodes_of_full_tile"):
                await connection.execute(
                    text("INSERT INTO tlog_tiles VALUES (5, 0, 1, :h, :n)"),
                    {"h": bytes(32), "n": bytes(8128)},
                )
    finally:
        await reader.close()
        await engine.dispose()


async def test_the_database_refuses_to_rewrite_the_tree_or_a_checkpoint(engine: AsyncEngine) -> None:
    await _append(engine, 1, 4)
    signer = NoteSigner(ORIGIN, SigningKey.generate("test"))
    async with make_sessionmaker(engine)() as session:
        check = await check_tree(session, signer.verifier())
        assert await sign_checkpoint(session, signer, check) is not None
        await session.commit()
    statements = [
        "UPDATE tlog_tiles SET hashes = hashes",
        "DELETE FROM tlog_tiles WHERE level = 0",
        "UPDATE tlog_checkpoints SET note = 'x'",
        "DELETE FROM tlog_checkpoints",
    ]
    if engine.dialect.name == "postgresql":
        statements += ["TRUNCATE tlog_tiles", "TRUNCATE tlog_checkpoints"]
    for statement in statements:
        with pytest.raises(exc.DBAPIError, match="append-only") as refused:
            async with engine.begin() as connection:
                await connection.execute(text(statement))
        assert "refused" in str(refused.value), statement

    # A row may go only when a wider row of the same tile begins with its hashes (what append does).
    first, other = b"\x01" * 32, b"\x02" * 32
    insert = "INSERT INTO tlog_tiles (level, idx, width, hashes) VALUES (5, 0, :w, :h)"
    delete = "DELETE FROM tlog_tiles WHERE level = 5 AND width = :w"
    async with engine.begin() as connection:
        await connection.execute(text(insert), [{"w": 1, "h": first}, {"w": 2, "h": other * 2}])
    for width in (1, 2):  # not a prefix of a wider row; the widest
        with pytest.raises(exc.DBAPIError, match="append-only: DELETE refused"):
            async with engine.begin() as connection:
                await connection.execute(text(delete), {"w": width})
    async with engine.begin() as connection:
        await connection.execute(text(insert), {"w": 3, "h": first + other * 2})
        await connection.execute(text(delete), {"w": 1})
        rows = (await connection.execute(text("SELECT width FROM tlog_tiles WHERE level = 5"))).scalars()
        assert sorted(rows) == [2, 3]


async def test_the_start_up_check_starts_at_the_latest_checkpoint_and_refuses_to_sign_when_it_disagrees(
    engine: AsyncEngine,
) -> None:
    signer = NoteSigner(ORIGIN, SigningKey.generate("test"))
    sessions = make_sessionmaker(engine)
    await _append(engine, 1, 9)
    async with sessions() as session:
        check = await check_tree(session, signer.verifier())
        assert check.healthy and check.size == 9
        first = await sign_checkpoint(session, signer, check)
        await session.commit()
        assert first is not None and first.size == 9
        assert await sign_checkpoint(session, signer, check) is None  # the tree did not grow
    await _append(engine, 10, 12)
    async with sessions() as session:
        second = await sign_checkpoint(session, signer, check)
        await session.commit()
    assert second is not None and second.size == 12
    checkpoint, _ = open_checkpoint(second.note, ORIGIN, signer.verifier())
    assert checkpoint.root_hash == second.root == check.root()
    await _append(engine, 13, 14)

    async def restarted() -> list[str]:
        async with sessions() as session:
            check = await check_tree(session, signer.verifier())
            assert check.size == 14 or check.problems
            if check.problems:
                with pytest.raises(TreeError, match="refusing to sign"):
                    await sign_checkpoint(session, signer, check)
            return check.problems

    # A restart reads only the entries after the latest checkpoint: one altered before it is left to
    # `deskbridge audit verify` (which reads every leaf), so start-up does not grow with the log.
    async with engine.begin() as connection:
        await _bypass(
            connection, engine.dialect.name, "audit_log", "UPDATE audit_log SET actor = 'x' WHERE seq = 3", {}
        )
    assert await restarted() == []

    # A stored leaf hash flipped past the triggers after the checkpoint: found by the entries' check.
    async def flip(leaf: int) -> bytes:
        async with sessions() as session:
            width, hashes = (
                await session.execute(
                    select(TlogTile.width, TlogTile.hashes)
                    .where(TlogTile.level == 0)
                    .order_by(TlogTile.width.desc())
                )
            ).first() or (0, b"")
        assert width == 14
        flipped = hashes[: leaf * 32] + bytes([hashes[leaf * 32] ^ 1]) + hashes[leaf * 32 + 1 :]
        await _set_tile(engine, flipped)
        return hashes

    original = await flip(12)
    problems = await restarted()
    assert "leaf 12: its stored hash does not match entry 13" in problems, problems
    await _set_tile(engine, original)
    assert await restarted() == []

    # An entry altered after the checkpoint, past the triggers: its leaf no longer matches its tile.
    async with engine.connect() as connection:
        actor, details = (
            await connection.execute(text("SELECT actor, details FROM audit_log WHERE seq = 13"))
        ).one()
    for change, problem in (
        ({"actor": "x", "details": details}, "leaf 12: its stored hash does not match entry 13"),
        ({"actor": actor, "details": "[]"}, "leaf 12: entry 13 is not an entry's data"),
        ({"actor": actor, "details": details}, None),
    ):
        async with engine.begin() as connection:
            update = "UPDATE audit_log SET actor = :actor, details = :details WHERE seq = 13"
            await _bypass(connection, engine.dialect.name, "audit_log", update, change)
        problems = await restarted()
        assert (problem in problems) if problem else problems == [], problems

    # ... and before it: the stored tiles no longer give the signed root.
    await flip(5)
    assert await restarted() == ["checkpoint 12: the stored tiles give another root"]
    await _set_tile(engine, original)

    # A checkpoint over more leaves than the log holds: truncation, refused.
    async with sessions() as session:
        body = Checkpoint(ORIGIN, 20, bytes(32)).body()
        session.add(
            TlogCheckpoint(
                size=20, root=bytes(32), note=sign_note(body, [signer]), created_at=datetime.now(UTC)
            )
        )
        await session.commit()
    problems = await restarted()
    assert problems == ["checkpoint 20: signed 20 leaves but the log has 14 (truncated)"], problems


async def _set_tile(engine: AsyncEngine, hashes: bytes) -> None:
    statement = "UPDATE tlog_tiles SET hashes = :h WHERE level = 0 AND idx = 0 AND width = 14"
    async with engine.begin() as connection:
        await _bypass(connection, engine.dialect.name, "tlog_tiles", statement, {"h": hashes})


def test_a_leaf_is_metadata_and_hashes_without_the_chain_fields() -> None:
    record = _chain(1)[0]
    data = json.loads(leaf_data(record))
    assert set(data) == set(record.model_dump()) - {"prev_hash", "entry_hash"}
    assert record_leaf_hash(record) == merkle.leaf_hash(leaf_data(record))


async def _bypass(connection: Any, dialect: str, table: str, statement: str, params: dict[str, Any]) -> None:
    """Runs a statement the append-only triggers would refuse, as an attacker with owner rights could."""
    if dialect == "postgresql":
        await connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        await connection.execute(text(statement), params)
        await connection.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
    else:
        await connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_update"))
        await connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_delete"))
        await connection.execute(text(statement), params)


# ---- the running system and the CLI -------------------------------------------------------------------


def _cli(*args: str) -> Result:
    return CliRunner().invoke(app, ["audit", *args])


def _verify(stack: Stack) -> Result:
    return _cli("verify", "--home", str(stack.home), "--audit-server", stack.audit_url)


async def _checkpointed(stack: Stack, size: int) -> str:
    auditor = stack.client("auditor", audit=True)

    async def published() -> str | None:
        response = await auditor.post("/v1/audit/checkpoints")
        return response.text if response.status_code == 200 and f"\n{size}\n" in response.text else None

    note = await eventually(published, within=60)
    assert note is not None
    return note


async def _tampered(stack: Stack, table: str, statement: str, **params: Any) -> None:
    async with stack.sessions() as session:
        await _bypass(await session.connection(), "postgresql", table, statement, params)
        await session.commit()


async def _expect(stack: Stack, *findings: str) -> None:
    result = await asyncio.to_thread(_verify, stack)
    assert result.exit_code == 1, result.output
    for finding in findings:
        assert finding in result.output, result.output
    assert "error: audit log is NOT intact" in result.output


async def _expect_intact(stack: Stack, size: int) -> Result:
    result = await asyncio.to_thread(_verify, stack)
    assert result.exit_code == 0, result.output
    assert f"audit log intact: {size} leaves, checkpoint {size} root" in result.output
    return result


async def _row(stack: Stack, seq: int) -> dict[str, Any]:
    async with stack.sessions() as session:
        row = (
            (await session.execute(text("SELECT * FROM audit_log WHERE seq = :s"), {"s": seq}))
            .mappings()
            .one()
        )
    return dict(row)


async def _insert(stack: Stack, rows: list[dict[str, Any]]) -> None:
    async with stack.sessions() as session:
        for row in rows:
            columns = ", ".join(row)
            values = ", ".join(f":{c}" for c in row)
            await session.execute(text(f"INSERT INTO audit_log ({columns}) VALUES ({values})"), row)  # noqa: S608
        await session.commit()


@pytest.mark.settings(**QUIET)
async def test_verify_names_every_kind_of_tampering(stack: Stack) -> None:
    await eventually(lambda: _size(stack, 18), within=60)
    await _checkpointed(stack, 18)
    await _expect_intact(stack, 18)

    # A byte of a stored leaf field.
    original = await _row(stack, 7)
    await _tampered(stack, "audit_log", "UPDATE audit_log SET actor = 'admin:someone-else' WHERE seq = 7")
    await _expect(
        stack, "leaf 6: content does not match its stored leaf hash", "entry 7: content does not match"
    )
    await _tampered(stack, "audit_log", "UPDATE audit_log SET actor = :a WHERE seq = 7", a=original["actor"])
    await _expect_intact(stack, 18)

    # A byte of a stored leaf hash, in the widest version of the level-0 tile.
    async with stack.sessions() as session:
        width, hashes = (
            await session.execute(
                select(TlogTile.width, TlogTile.hashes)
                .where(TlogTile.level == 0, TlogTile.idx == 0)
                .order_by(TlogTile.width.desc())
            )
        ).first() or (0, b"")
    flipped = hashes[:96] + bytes([hashes[96] ^ 1]) + hashes[97:]
    update = "UPDATE tlog_tiles SET hashes = :h WHERE level = 0 AND idx = 0 AND width = :w"
    await _tampered(stack, "tlog_tiles", update, h=flipped, w=width)
    await _expect(stack, "leaf 3: content does not match its stored leaf hash")
    await _tampered(stack, "tlog_tiles", update, h=hashes, w=width)
    await _expect_intact(stack, 18)

    # Two rows' contents swapped (all but their seq).
    third, fourth = await _row(stack, 3), await _row(stack, 4)
    columns = [c for c in third if c != "seq"]
    swap = "UPDATE audit_log SET " + ", ".join(f"{c} = :{c}" for c in columns) + " WHERE seq = :seq"  # noqa: S608
    await _tampered(
        stack, "audit_log", "UPDATE audit_log SET event_id = event_id || '-moved' WHERE seq IN (3, 4)"
    )
    await _tampered(stack, "audit_log", swap, **{**fourth, "seq": 3})
    await _tampered(stack, "audit_log", swap, **{**third, "seq": 4})
    await _expect(stack, "leaf 2: content does not match", "leaf 3: content does not match")
    await _tampered(
        stack, "audit_log", "UPDATE audit_log SET event_id = event_id || '-moved' WHERE seq IN (3, 4)"
    )
    await _tampered(stack, "audit_log", swap, **third)
    await _tampered(stack, "audit_log", swap, **fourth)
    await _expect_intact(stack, 18)

    # A row deleted in the middle.
    fifth = await _row(stack, 5)
    await _tampered(stack, "audit_log", "DELETE FROM audit_log WHERE seq = 5")
    await _expect(stack, "leaf 4: missing (entry 5 is not served)")
    await _insert(stack, [fifth])
    await _expect_intact(stack, 18)

    # A byte of the stored checkpoint note.
    async with stack.sessions() as session:
        note = (await session.execute(text("SELECT note FROM tlog_checkpoints WHERE size = 18"))).scalar_one()
    lines = note.split("\n")
    lines[2] = ("A" if lines[2][0] != "A" else "B") + lines[2][1:]
    update = "UPDATE tlog_checkpoints SET note = :n WHERE size = 18"
    await _tampered(stack, "tlog_checkpoints", update, n="\n".join(lines))
    await _expect_line(stack, "checkpoint", "does not verify")
    await _tampered(stack, "tlog_checkpoints", update, n=note)
    await _expect_intact(stack, 18)

    # The tail truncated, the signed checkpoint left: named as truncation, and the
    # running service refuses to sign any checkpoint over the shortened log.
    tail = [await _row(stack, seq) for seq in (16, 17, 18)]
    await _tampered(stack, "audit_log", "DELETE FROM audit_log WHERE seq > 15")
    await _expect(stack, "log truncated: leaves 15..17 are missing")
    refused = await stack.client("auditor", audit=True).post("/v1/audit/checkpoints")
    assert refused.status_code == 503 and "truncated" in refused.json()["detail"], refused.text
    await _insert(stack, tail)


async def _size(stack: Stack, size: int) -> bool:
    async with stack.sessions() as session:
        return await storage.tree_size(session) >= size


async def _expect_line(stack: Stack, *words: str) -> None:
    result = await asyncio.to_thread(_verify, stack)
    assert result.exit_code == 1, result.output
    assert any(all(w in line for w in words) for line in result.output.splitlines()), result.output


@pytest.mark.settings(**QUIET)
async def test_export_verifies_offline_and_a_partner_witnesses_checkpoints(
    stack: Stack, tmp_path: Path
) -> None:
    await eventually(lambda: _size(stack, 18), within=60)
    await _checkpointed(stack, 18)
    await _expect_intact(stack, 18)
    home = str(stack.home)
    bundle = tmp_path / "bundle.json"
    result = await asyncio.to_thread(
        _cli,
        "export",
        "--start",
        "2",
        "--end",
        "12",
        "--out",
        str(bundle),
        "--home",
        home,
        "--audit-server",
        stack.audit_url,
    )
    assert result.exit_code == 0, result.output
    offline = [
        "verify",
        "--bundle",
        str(bundle),
        "--checkpoint",
        str(stack.home / "auditor" / "audit-checkpoint.txt"),
        "--log-key",
        str(stack.home / "auditor" / "audit-log.vkey"),
        "--home",
        str(tmp_path / "nobody"),
    ]
    # No server and no profile: only the log's public key.
    result = await asyncio.to_thread(_cli, *offline)
    assert result.exit_code == 0, result.output
    assert "bundle intact: leaves 2..11 proved in checkpoint 18" in result.output
    exported = json.loads(bundle.read_text())
    exported["leaves"][3]["record"]["actor"] = "someone-else"
    bundle.write_text(json.dumps(exported))
    result = await asyncio.to_thread(_cli, *offline)
    assert result.exit_code == 1
    assert "leaf 5: its inclusion proof in checkpoint 18 fails" in result.output
    assert "leaf 5: content does not match its stored leaf hash" in result.output

    # A witness cosigns; the checkpoint is then served with its cosignature.
    witness = ["witness", "--as", "kh-cnp", "--home", home, "--audit-server", stack.audit_url]
    result = await asyncio.to_thread(_cli, *witness)
    assert result.exit_code == 0, result.output
    assert "cosigned checkpoint 18 root" in result.output
    served = (await stack.client("kh-cnp", audit=True).get("/v1/audit/checkpoint")).text
    assert "\u2014 kh-cnp " in served
    partner = AgencyKeys.load(stack.home / "kh-cnp").signer().public()
    log = parse_vkey((stack.home / "kh-cnp" / "audit-log.vkey").read_text().strip())
    assert isinstance(log, NoteVerifier)
    _, cosigners = open_checkpoint(served, log.name, log, [CosignatureVerifier("kh-cnp", partner)])
    assert cosigners == ("kh-cnp",)
    # The auditor's verify still passes with the cosignature in the note.
    await _expect_intact(stack, 18)
    # ... and, asked to, checks the witness's cosignature with its key from the signed directory.
    with_witnesses = [
        "verify",
        "--home",
        home,
        "--audit-server",
        stack.audit_url,
        "--server",
        stack.gateway_url,
    ]
    result = await asyncio.to_thread(_cli, *with_witnesses, "--witness", "kh-cnp")
    assert result.exit_code == 0 and "cosigned by kh-cnp at checkpoint" in result.output, result.output
    result = await asyncio.to_thread(_cli, *with_witnesses, "--witness", "kh-cnp", "--witness", "aseanapol")
    assert result.exit_code == 1, result.output
    assert re.search(r"no checkpoint up to \d+ is cosigned by witness aseanapol", result.output), (
        result.output
    )
    # A cosignature by another agency's key is refused.
    forged = await stack.client("aseanapol", audit=True).post(
        "/v1/audit/checkpoints/18/cosignatures", json={"line": served.splitlines()[-1] + "\n"}
    )
    assert forged.status_code == 422, forged.text


@pytest.mark.settings(checkpoint_interval_s=0.3, audit_query_window_s=2)
async def test_auditor_queries_are_audited_once_per_window(stack: Stack) -> None:
    auditor = stack.client("auditor", audit=True)
    for _ in range(5):
        assert (await auditor.get("/v1/audit/events", params={"limit": 1})).status_code == 200

    async def queries() -> list[dict[str, Any]]:
        response = await auditor.get("/v1/audit/events", params={"type": "auditor.query"})
        entries = list(response.json()["entries"])
        return entries if sum(e["details"]["requests"] for e in entries) >= 5 else []

    # A window may close amid the five requests on a loaded machine, so they are counted across the
    # entries, which must be fewer than the requests they count: one entry per window, not per request.
    entries = await eventually(queries, within=30)
    assert all(e["actor"].startswith("auditor:") for e in entries)
    assert len(entries) < sum(e["details"]["requests"] for e in entries)
    assert "/v1/audit/events=" in entries[0]["details"]["routes"]


async def test_leaves_carry_no_notice_content(stack: Stack) -> None:
    body = notice_body(["kh-cnp"])
    response = await stack.client("kr-desk").post("/v1/notices", json=body)
    assert response.status_code == 202, response.text
    auditor = stack.client("auditor", audit=True)

    async def leaves() -> list[dict[str, Any]]:
        page = (await auditor.get("/v1/audit/leaves", params={"start": 0, "end": 100})).json()
        found = [leaf for leaf in page["leaves"] if leaf["record"]["event_type"] == "notice.submitted"]
        return page["leaves"] if found else []

    served = await eventually(leaves, within=60)
    for leaf in served:
        data = leaf_data(AuditLeaf.model_validate(leaf).record).decode()
        for secret in (
            body["summary"],
            body["subjects"][0]["name_latin"],
            body["subjects"][0]["name_hangul"],
        ):
            assert secret not in data and secret not in json.dumps(leaf, ensure_ascii=False)


# ---- a server that shows two views: fork and rollback -----------------------------------------------


class _View:
    """A log of `_chain` entries signed by its own key, serving whichever checkpoint it is told to."""

    def __init__(self, signer: NoteSigner) -> None:
        self.signer = signer
        self.records = _chain(6)
        self.tree = merkle.MemoryTree()
        for record in self.records:
            self.tree.append(record_leaf_hash(record))
        self.note = self.sign(4)

    def sign(self, size: int, root: bytes | None = None) -> str:
        return sign_note(Checkpoint(ORIGIN, size, root or self.tree.root(size)).body(), [self.signer])

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.get("/v1/audit/checkpoint")
        async def checkpoint() -> PlainTextResponse:
            return PlainTextResponse(self.note)

        @api.get("/v1/audit/checkpoints")
        async def checkpoints() -> dict[str, Any]:
            return {"checkpoints": [], "next_after": None}

        @api.get("/v1/audit/leaves")
        async def leaves(start: int, end: int) -> dict[str, Any]:
            return {
                "size": 6,
                "leaves": [
                    {
                        "index": i,
                        "leaf_hash": self.tree.get_node(0, i).hex(),
                        "record": self.records[i].model_dump(),
                    }
                    for i in range(start, min(end, 6))
                ],
            }

        @api.get("/v1/audit/nodes")
        async def nodes(level: int, start: int, end: int) -> dict[str, Any]:
            return {
                "level": level,
                "size": 6,
                "nodes": [
                    {"index": i, "hash": self.tree.get_node(level, i).hex()}
                    for i in range(start, min(end, 6 >> level))
                ],
            }

        return api


async def test_verify_reports_a_fork_and_a_rollback_from_a_split_view(tmp_path: Path) -> None:
    signer = NoteSigner(ORIGIN, SigningKey.generate("test"))
    view = _View(signer)
    Profile(tmp_path, "auditor").save_credential("dbk_test_secret")
    save_log_vkey(tmp_path / "auditor", signer)
    services = ServiceTasks()
    try:
        url = await services.serve(view.app(), free_port())
        args = ["verify", "--home", str(tmp_path), "--audit-server", url]
        result = await asyncio.to_thread(_cli, *args)
        assert result.exit_code == 0, result.output
        assert "audit log intact: 4 leaves, checkpoint 4 root" in result.output

        # Another checkpoint of the same size, validly signed: a split view.
        view.note = view.sign(4, root=view.tree.root(3))
        result = await asyncio.to_thread(_cli, *args)
        assert result.exit_code == 1
        assert "fork: two different checkpoints of size 4" in result.output
        assert "checkpoint 4: its root does not match the leaves served" in result.output

        # An older checkpoint than the one remembered: a rollback.
        view.note = view.sign(3)
        result = await asyncio.to_thread(_cli, *args)
        assert result.exit_code == 1
        assert (
            "rollback: the latest checkpoint has size 3, smaller than the remembered checkpoint of size 4"
            in result.output
        )

        # A checkpoint signed by another key is refused outright.
        view.note = sign_note(
            Checkpoint(ORIGIN, 4, view.tree.root(4)).body(),
            [NoteSigner(ORIGIN, SigningKey.generate("test"))],
        )
        result = await asyncio.to_thread(_cli, *args)
        assert result.exit_code == 1
        assert "error: the latest checkpoint:" in result.output
    finally:
        await services.close()


async def _reference_tree(session: AsyncSession) -> merkle.MemoryTree:
    """The tree of the stored entries, built in memory from their leaves alone."""
    rows = (await session.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars()
    reference = merkle.MemoryTree()
    for row in rows:
        reference.append(record_leaf_hash(to_record(row)))
    return reference
