"""Migration 0012 turns a log stored as tree nodes (tlog_nodes, revision 0011) into tiles: the same roots
and proofs, byte for byte, the start-up check and `deskbridge audit verify` pass, appends continue on top,
and a downgrade gives the nodes back."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope.keys import SigningKey
from services.platform.database import ROOT, make_engine, make_sessionmaker
from services.transparency import merkle, storage
from services.transparency.checkpoints import check_tree
from services.transparency.entries import record_leaf_hash
from services.transparency.models import AuditEntry, TlogTile
from services.transparency.note import NoteSigner
from tests.conftest import Stack, eventually
from tests.support.postgres import PostgresCluster
from tests.transparency.test_log import _chain
from tests.transparency.test_tree import ORIGIN, QUIET, _checkpointed, _expect_intact

SIZE = 600  # two tile levels: 2 full level-0 tiles, a partial one, a partial level-1 tile
SIZES = (1, 7, 255, 256, 257, 512, 599, SIZE)


@dataclass
class OldLog:
    """What the node-stored log served before the migration."""

    url: str
    nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)
    roots: dict[int, bytes] = field(default_factory=dict)
    inclusion: dict[tuple[int, int], list[bytes]] = field(default_factory=dict)
    consistency: dict[tuple[int, int], list[bytes]] = field(default_factory=dict)


def _alembic(url: str, action: str, revision: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    getattr(command, action)(config, revision)


async def _read_nodes(session: AsyncSession) -> dict[tuple[int, int], bytes]:
    rows = await session.execute(text("SELECT level, idx, hash FROM tlog_nodes"))
    return {(level, idx): bytes(value) for level, idx, value in rows.all()}


async def _old_log(url: str) -> OldLog:
    """A log of SIZE entries at revision 0011, its tree stored as every complete subtree (as 0005
    code wrote it), and the roots and proofs that code served, read from those rows."""
    await asyncio.to_thread(_alembic, url, "upgrade", "0011")
    engine = make_engine(url)
    tree = merkle.MemoryTree()
    old = OldLog(url)
    try:
        async with make_sessionmaker(engine)() as session:
            for record in _chain(SIZE):
                session.add(
                    AuditEntry(**record.model_dump(exclude={"details"}), details=json.dumps(record.details))
                )
                tree.append(record_leaf_hash(record))
            nodes = [
                {"l": level, "i": idx, "h": tree.get_node(level, idx)}
                for level in range(SIZE.bit_length())
                for idx in range(SIZE >> level)
            ]
            await session.execute(
                text("INSERT INTO tlog_nodes (level, idx, hash) VALUES (:l, :i, :h)"), nodes
            )
            await session.commit()
            old.nodes = await _read_nodes(session)
    finally:
        await engine.dispose()

    def get(level: int, idx: int) -> bytes:
        return old.nodes[(level, idx)]

    for size in SIZES:
        old.roots[size] = merkle.root_from_nodes(size, get)
        for index in {0, size // 2, size - 1}:
            old.inclusion[(index, size)] = merkle.inclusion_proof(index, size, get)
        for before in (1, size // 3, size - 1):
            old.consistency[(before, size)] = merkle.consistency_proof(before, size, get)
    return old


async def _database(kind: str, tmp_path: Path, pg_cluster: PostgresCluster) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_cluster.create_database(name)
    return pg_cluster.url(name)


async def _same_tree(session: AsyncSession, old: OldLog) -> None:
    for size, root in old.roots.items():
        assert await storage.root_at(session, size) == root
    for (index, size), proof in old.inclusion.items():
        assert await storage.inclusion(session, index, size) == proof
    for (before, size), proof in old.consistency.items():
        assert await storage.consistency(session, before, size) == proof


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_the_migration_turns_nodes_into_tiles_with_the_same_proofs(
    kind: str, tmp_path: Path, pg_cluster: PostgresCluster
) -> None:
    old = await _old_log(await _database(kind, tmp_path, pg_cluster))
    await asyncio.to_thread(_alembic, old.url, "upgrade", "head")
    engine = make_engine(old.url)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions() as session:
            widths = {
                (level, idx): width
                for level, idx, width in (
                    await session.execute(select(TlogTile.level, TlogTile.idx, TlogTile.width))
                )
            }
            assert widths == {(0, 0): 256, (0, 1): 256, (0, 2): 88, (1, 0): 2}
            await _same_tree(session, old)
            signer = NoteSigner(ORIGIN, SigningKey.generate("test"))
            check = await check_tree(session, signer.verifier())
            assert check.healthy and check.size == SIZE and check.root() == old.roots[SIZE]
        # The downgrade gives back every node, as 0005 stored them.
        await asyncio.to_thread(_alembic, old.url, "downgrade", "0011")
        async with sessions() as session:
            assert await _read_nodes(session) == old.nodes
            assert (await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one() == SIZE
    finally:
        await engine.dispose()


# ---- the running system on a migrated log -------------------------------------------------------------


@pytest.fixture
async def old_log(tmp_path: Path, pg_cluster: PostgresCluster) -> OldLog:
    return await _old_log(await _database("postgresql", tmp_path, pg_cluster))


@pytest.fixture
async def stack_db(old_log: OldLog) -> str:
    """The stack's database: the node-stored log, migrated to the newest schema."""
    await asyncio.to_thread(_alembic, old_log.url, "upgrade", "head")
    return old_log.url


@pytest.mark.settings(**QUIET)
async def test_audit_verify_passes_on_a_migrated_log_that_grew(stack: Stack, old_log: OldLog) -> None:
    async with stack.sessions() as session:
        await _same_tree(session, old_log)

    # The stack's own entries (its agencies enrolled, their keys registered) append on top of the tiles.
    async def grown() -> int:
        async with stack.sessions() as session:
            size = await storage.tree_size(session)
        return size if size > SIZE + 5 else 0

    size = await eventually(grown, within=60)
    await asyncio.sleep(1)
    async with stack.sessions() as session:
        size = await storage.tree_size(session)
    await _checkpointed(stack, size)
    await _expect_intact(stack, size)
    async with stack.sessions() as session:
        await _same_tree(session, old_log)
    auditor = stack.client("auditor", audit=True)
    for (index, tree_size), proof in old_log.inclusion.items():
        served = await auditor.get("/v1/audit/proof/inclusion", params={"index": index, "size": tree_size})
        assert served.json()["proof"] == [p.hex() for p in proof]
