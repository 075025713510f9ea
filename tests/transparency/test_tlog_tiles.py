"""The log served at the C2SP tlog-tiles paths, checked by an independent client: Go's checksum-database
tile reader (golang.org/x/mod/sumdb/tlog, tests/transparency/tlogtiles/) verifies the checkpoint, every
tile and every entry bundle and computes proofs from the tiles, which must equal the audit API's own."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from schemas.events import Event, EventType
from services.transparency import merkle, storage
from services.transparency.models import TlogTile
from services.transparency.service import append
from tests.conftest import Stack
from tests.transparency.test_tree import QUIET, _checkpointed, _expect, _tampered

GO_CLIENT = Path(__file__).parent / "tlogtiles"


def _events(count: int) -> list[Event]:
    return [
        Event(
            event_id=f"tiles-{n}",
            type=EventType.notice_delivered,
            occurred_at=datetime(2026, 12, 1, tzinfo=UTC),
            actor="ingest",
            agency="kh-cnp",
            details={"n": n},
        )
        for n in range(count)
    ]


def _go_client(out: Path) -> Path:
    """Builds the Go client (the Go module proxy fetches golang.org/x/mod the first time)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed")
    subprocess.run(  # noqa: S603
        [go, "build", "-mod=mod", "-o", str(out), "."], cwd=GO_CLIENT, check=True, timeout=300
    )
    return out


@pytest.mark.settings(**QUIET)
async def test_a_tlog_tiles_client_verifies_the_log_and_its_proofs_equal_ours(
    stack: Stack, tmp_path: Path
) -> None:
    async with stack.sessions() as session:
        await append(session, _events(300))  # past one full tile, so level-1 tiles are read too
        await session.commit()
    async with stack.sessions() as session:
        size = await storage.tree_size(session)
    await _checkpointed(stack, size)
    binary = await asyncio.to_thread(_go_client, tmp_path / "tlogtiles")
    vkey = (stack.home / "auditor" / "audit-log.vkey").read_text().strip()
    olds = [1, 17, 256, size - 1]  # the log may grow meanwhile: the client checks its latest checkpoint
    command = [str(binary), f"{stack.audit_url}/tlog", stack.token("auditor"), vkey, *map(str, olds)]
    run = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    verified: dict[str, Any] = json.loads(run.stdout)
    size = verified["size"]
    assert size >= 300 and len(verified["inclusion"]) == size

    auditor = stack.client("auditor", audit=True)
    for index in (0, 1, 255, 256, 299, size - 1):
        ours = await auditor.get("/v1/audit/proof/inclusion", params={"index": index, "size": size})
        assert ours.json()["proof"] == verified["inclusion"][str(index)], index
    for old in olds:
        ours = await auditor.get("/v1/audit/proof/consistency", params={"from": old, "to": size})
        assert ours.json()["proof"] == verified["consistency"][str(old)], old

    # A level-1 tile's hash flipped past the triggers: the Go client refuses the tile, and `deskbridge
    # audit verify` names the node that its children, hashed from the level-0 tile, no longer give.
    async with stack.sessions() as session:
        query = select(TlogTile.width, TlogTile.hashes).where(TlogTile.level == 1, TlogTile.idx == 0)
        width, hashes = (await session.execute(query)).one()
    update = "UPDATE tlog_tiles SET hashes = :h WHERE level = 1 AND idx = 0 AND width = :w"
    await _tampered(stack, "tlog_tiles", update, h=bytes([hashes[0] ^ 1]) + hashes[1:], w=width)
    run = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "downloaded inconsistent tile" in run.stderr, run.stderr
    await _expect(stack, "node level 8 index 0: stored hash does not match its children")
    await _tampered(stack, "tlog_tiles", update, h=hashes, w=width)


@pytest.mark.settings(**QUIET)
async def test_tiles_are_served_as_the_spec_says_to_whom_the_api_allows(stack: Stack) -> None:
    async with stack.sessions() as session:
        await append(session, _events(3))
        await session.commit()
    async with stack.sessions() as session:
        size = await storage.tree_size(session)
    await _checkpointed(stack, size)
    auditor, agency, anyone = (stack.client(n, audit=True) for n in ("auditor", "kh-cnp", None))

    checkpoint = await agency.get("/tlog/checkpoint")
    assert checkpoint.status_code == 200
    size = int(checkpoint.text.split("\n")[1])  # the latest, which the log may have grown to meanwhile
    assert size < 200  # the demo's few entries and ours: tile 0 is partial, far from full
    width = f"000.p/{size}"
    assert checkpoint.headers["content-type"] == "text/plain; charset=utf-8"
    assert checkpoint.headers["cache-control"] == "private, max-age=5"

    tile = await agency.get(f"/tlog/tile/0/{width}")
    assert tile.status_code == 200 and len(tile.content) == 32 * size
    assert tile.headers["content-type"] == "application/octet-stream"
    assert tile.headers["cache-control"] == "private, max-age=31536000, immutable"
    # A narrower partial tile is the prefix, as it was when the log was that size.
    narrower = await agency.get("/tlog/tile/0/000.p/2")
    assert narrower.content == tile.content[:64]

    # Entry bundles: the leaves' data, uint16-length-prefixed, hashing to the level-0 tile; gzip on request.
    bundle = await auditor.get(f"/tlog/tile/entries/{width}", headers={"Accept-Encoding": "gzip"})
    assert bundle.status_code == 200 and bundle.headers["content-encoding"] == "gzip"
    data, hashes = bundle.content, []  # httpx has decoded the gzip
    while data:
        length = int.from_bytes(data[:2], "big")
        hashes.append(merkle.leaf_hash(data[2 : 2 + length]))
        data = data[2 + length :]
    assert b"".join(hashes) == tile.content
    plain = await auditor.get(f"/tlog/tile/entries/{width}", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert gzip.decompress(gzip.compress(plain.content)) == plain.content

    # Entries are the auditors' (as /v1/audit/events); no credential reads anything.
    assert (await agency.get(f"/tlog/tile/entries/{width}")).status_code == 403
    for path in ("/tlog/checkpoint", f"/tlog/tile/0/{width}", f"/tlog/tile/entries/{width}"):
        assert (await anyone.get(path)).status_code == 401, path

    # Beyond the log, or spelt otherwise than the spec spells it: no such tile.
    for path in (
        "/tlog/tile/0/000",
        "/tlog/tile/0/000.p/255",
        "/tlog/tile/0/001.p/1",
        "/tlog/tile/1/000.p/1",
        "/tlog/tile/00/000.p/1",
        "/tlog/tile/0/0.p/1",
        "/tlog/tile/0/000.p/01",
        "/tlog/tile/64/000.p/1",
        "/tlog/tile/entries/000",
        "/tlog/tile/entries/000.p/255",
    ):
        missing = await auditor.get(path)
        assert missing.status_code == 404 and missing.json()["code"] == "tile_not_found", path
