"""The Alembic migration against the models, on SQLite and PostgreSQL; the committed JSON Schemas."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.export import FOLDER, rendered
from services.delivery import models as delivery_models  # noqa: F401  (every table in Base.metadata)
from services.notices import models as notices_models  # noqa: F401
from services.platform.database import ROOT, Base, upgrade
from services.transparency import models as transparency_models  # noqa: F401
from services.trust import models as trust_models  # noqa: F401

TABLES = {
    "agencies",
    "agency_keys",
    "credentials",
    "submissions",
    "notices",
    "deliveries",
    "audit_log",
    "seen_nonces",
    "webhooks",
    "webhook_parked",
    "tlog_tiles",
    "tlog_checkpoints",
    "directory_generation",
    "tlog_cosignatures",
    "audit_lease",
}
HEAD = "0017"


def _diffs(connection: Connection, metadata: MetaData = Base.metadata) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _drifted_models() -> MetaData:
    """The models with one extra column and one changed length: the comparison must notice both."""
    metadata = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    metadata.tables["audit_log"].append_column(Column("signer", String(64), nullable=True))
    metadata.tables["agencies"].c.name.type = String(100)
    return metadata


def _schema(connection: Connection) -> dict[str, Any]:
    """Tables, columns, indexes, unique constraints and foreign keys, as the database reports them."""
    inspector = inspect(connection)
    out: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        out[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            "indexes": sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)),
            "unique": sorted(
                (u["name"] or "", tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)
            ),
            "fks": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"])
                for f in inspector.get_foreign_keys(table)
            ),
        }
    return out


async def _triggers(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            query = "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal"
        else:
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'"
        return set((await connection.execute(text(query))).scalars())


def _alembic(database_url: str) -> Config:
    """Alembic's configuration for `database_url`, leaving the test's logging alone."""
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


async def _version(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list((await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars())


async def test_models_match_the_migrated_schema(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        diffs = await connection.run_sync(_diffs)
        drifted = await connection.run_sync(_diffs, _drifted_models())
        tables = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    assert diffs == []
    # Not vacuous: a drift in the models is reported.
    assert [d[0] for d in drifted if isinstance(d, tuple)] == ["add_column"]
    assert [d[0][0] for d in drifted if isinstance(d, list)] == ["modify_type"]
    assert tables == TABLES | {"alembic_version"}
    assert await _version(engine) == [HEAD]


async def test_upgrade_again_is_a_no_op(database_url: str, engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO agencies (id, name, kind, created_at) "
                "VALUES ('kr-desk', 'Korean Desk', 'desk', CURRENT_TIMESTAMP)"
            )
        )
    async with engine.connect() as connection:
        before = await connection.run_sync(_schema)
    triggers = await _triggers(engine)
    assert triggers == (
        {"audit_log_no_update_delete", "audit_log_no_truncate"}
        if engine.dialect.name == "postgresql"
        else {"audit_log_no_update", "audit_log_no_delete"}
    )

    await asyncio.to_thread(upgrade, database_url)

    async with engine.connect() as connection:
        assert await connection.run_sync(_schema) == before
        assert list((await connection.execute(text("SELECT id FROM agencies"))).scalars()) == ["kr-desk"]
    assert await _triggers(engine) == triggers
    assert await _version(engine) == [HEAD]


async def test_downgrade_stops_at_the_first_migration_and_keeps_the_log(
    database_url: str, engine: AsyncEngine
) -> None:
    config = _alembic(database_url)
    await asyncio.to_thread(command.downgrade, config, "0001")
    assert await _version(engine) == ["0001"]
    with pytest.raises(RuntimeError, match="cannot be downgraded: it would destroy the audit log"):
        await asyncio.to_thread(command.downgrade, config, "base")
    assert await _version(engine) == ["0001"]
    await asyncio.to_thread(upgrade, database_url)
    assert await _version(engine) == [HEAD]
    async with engine.connect() as connection:
        tables = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    assert tables >= TABLES


# A value PostgreSQL would compress (zeros) in each column that holds ciphertext or hashes; rows as a
# tile of the log and a notice (the envelope's row needs its other columns).
_COMPRESSIBLE = (
    "INSERT INTO tlog_tiles (level, idx, width, hashes, nodes)"
    " VALUES (0, :n, 256, decode(repeat('00', 8192), 'hex'), decode(repeat('00', 8128), 'hex'))",
    "INSERT INTO notices (notice_id, sender, case_ref, notice_type, priority, tlp, sent_at, envelope,"
    " envelope_sha256, kafka_topic, kafka_partition, kafka_offset, ingested_at)"
    " VALUES (:id, 'kr-desk', 'KR-1', 'intel_report', 'routine', 'amber', now(),"
    " decode(repeat('00', 20000), 'hex'), repeat('0', 64), 'notices.v1', 0, :n, now())",
)
_COMPRESSED = (
    "SELECT pg_column_compression(hashes), pg_column_compression(nodes) FROM tlog_tiles WHERE idx = :n",
    "SELECT pg_column_compression(envelope) FROM notices WHERE kafka_offset = :n",
)


async def _compressed(engine: AsyncEngine, n: int) -> set[str | None]:
    """How PostgreSQL stored a compressible value written now in each of those columns."""
    methods: set[str | None] = set()
    async with engine.begin() as connection:
        for statement in _COMPRESSIBLE:
            await connection.execute(text(statement), {"n": n, "id": f"00000000-0000-0000-0000-{n:012d}"})
        for query in _COMPRESSED:
            methods.update(*(await connection.execute(text(query), {"n": n})).all())
    return methods


async def test_envelopes_and_tree_hashes_are_stored_without_a_compression_attempt(
    database_url: str, engine: AsyncEngine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL storage setting")
    assert await _compressed(engine, 1) == {None}
    # Not vacuous: before migration 0017 the same values were compressed (pglz tried every one).
    config = _alembic(database_url)
    await asyncio.to_thread(command.downgrade, config, "0016")
    assert await _compressed(engine, 2) == {"pglz"}
    await asyncio.to_thread(upgrade, database_url)
    assert await _compressed(engine, 3) == {None}


def test_committed_json_schemas_match_the_models() -> None:
    expected = rendered()
    committed = {path.name: path for path in Path(FOLDER).glob("*.schema.json")}
    assert sorted(committed) == sorted(expected), "run `python -m schemas.export` and commit schemas/json"
    for name, content in expected.items():
        assert committed[name].read_text(encoding="utf-8") == content, f"{name} is stale"
