"""The audit log's RFC 9162 Merkle tree in the database as C2SP tlog-tiles (table tlog_tiles, append-only):
each append writes the tiles it changed, once per batch, from the right edge the appending process keeps
in memory; roots and proofs read a handful of tiles (one query) and hash within them.

The maths is merkle.py and tiles.py (pure); this module is their storage and nothing else. What a leaf
is belongs to the log (entries.py), the signed checkpoints to checkpoints.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.platform.errors import Error
from services.transparency import merkle, tiles
from services.transparency.models import AuditEntry, TlogTile
from services.transparency.tiles import HEIGHT, Tile

T = TypeVar("T")


class TreeError(Error):
    """A proof or checkpoint cannot be served as asked (`tree_range`, `checkpoint_not_found`), or the log
    refuses to sign one (`checkpoint_refused`); the detail says why."""

    code = "tree_range"


# ---- the stored tiles ----------------------------------------------------------------------------------


async def read_tiles(session: AsyncSession, *where: ColumnElement[bool]) -> dict[Tile, bytes]:
    """The widest stored version of each tile that matches, in one query: a partial tile is a prefix of
    every wider version of it, so the widest serves any width up to its own."""
    widest = (
        select(TlogTile.level, TlogTile.idx, func.max(TlogTile.width).label("width"))
        .where(*where)
        .group_by(TlogTile.level, TlogTile.idx)
        .subquery()
    )
    query = select(TlogTile.level, TlogTile.idx, TlogTile.hashes).join(
        widest,
        and_(
            TlogTile.level == widest.c.level, TlogTile.idx == widest.c.idx, TlogTile.width == widest.c.width
        ),
    )
    return {(level, idx): hashes for level, idx, hashes in (await session.execute(query)).all()}


async def read_tiles_at(session: AsyncSession, wanted: set[Tile]) -> dict[Tile, bytes]:
    if not wanted:
        return {}
    return await read_tiles(
        session, or_(*(and_(TlogTile.level == level, TlogTile.idx == idx) for level, idx in sorted(wanted)))
    )


async def stored_hashes(session: AsyncSession, tile_level: int, start: int, end: int) -> dict[int, bytes]:
    """The hashes stored for tree level 8 * tile_level, nodes [start, end) (those present)."""
    if start >= end:
        return {}
    found = await read_tiles(
        session,
        TlogTile.level == tile_level,
        TlogTile.idx >= start >> HEIGHT,
        TlogTile.idx <= (end - 1) >> HEIGHT,
    )
    out: dict[int, bytes] = {}
    for (_, idx), hashes in found.items():
        for offset in range(len(hashes) // tiles.HASH):
            index = (idx << HEIGHT) + offset
            if start <= index < end:
                out[index] = hashes[offset * tiles.HASH : (offset + 1) * tiles.HASH]
    return out


# This process's right edge per database, with the head (size, entry hash) it is the edge of.
_edges: dict[str, tuple[tuple[int, str], tiles.TiledEdge]] = {}


def _database(session: AsyncSession) -> str:
    return str(session.get_bind().engine.url)


async def _edge(session: AsyncSession, head: tuple[int, str]) -> tiles.TiledEdge:
    """The right edge at `head` (size, entry hash): this process's own when nothing else appended (or
    rolled back) since, else rebuilt from the partial tiles, one query."""
    url = _database(session)
    kept_head, kept = _edges.get(url, ((-1, ""), None))
    if kept is not None and kept_head == head:
        return kept
    size = head[0]
    partial = tiles.partial_tiles(size)
    found = await read_tiles_at(session, {(level, idx) for level, (idx, _) in partial.items()})
    try:
        hashes = {level: found[(level, idx)][: width * tiles.HASH] for level, (idx, width) in partial.items()}
        return tiles.TiledEdge(size, hashes)
    except (KeyError, ValueError):
        raise TreeError(f"the stored tiles lack the right edge of the tree at size {size}") from None


async def add_leaves(
    session: AsyncSession, head: tuple[int, str], leaf_hashes: Sequence[bytes], new_head: tuple[int, str]
) -> None:
    """Stores the leaves appended to the log at `head` (size, entry hash), which now ends at `new_head`:
    each tile they change written once, in the caller's transaction, and its narrower row deleted. The
    edge is kept under `new_head`, so it is used again only if that transaction committed and nothing
    else appended since."""
    if not leaf_hashes:
        return
    edge = await _edge(session, head)
    changed = edge.append(leaf_hashes)
    session.add_all(
        TlogTile(level=level, idx=idx, width=len(hashes) // tiles.HASH, hashes=hashes)
        for (level, idx), hashes in changed.items()
    )
    await session.flush()
    # The narrower rows are prefixes of the new ones: the only deletion the database allows.
    superseded = [
        and_(TlogTile.level == level, TlogTile.idx == idx, TlogTile.width < len(hashes) // tiles.HASH)
        for (level, idx), hashes in changed.items()
    ]
    await session.execute(delete(TlogTile).where(or_(*superseded)))
    _edges[_database(session)] = (new_head, edge)


async def with_nodes(session: AsyncSession, compute: Callable[[merkle.GetNode], T]) -> T:
    """Runs a pure tree function over the stored tiles: a dry run learns which nodes it reads (the
    pattern does not depend on hash values), then one query fetches the tiles that hold them: at most two
    per tile level (the one under the leaf or old size, and the right edge's), 3 levels up to 2**24."""
    wanted: set[tuple[int, int]] = set()

    def note(level: int, idx: int) -> bytes:
        wanted.add((level, idx))
        return bytes(merkle.HASH_SIZE)

    compute(note)
    found = await read_tiles_at(session, {tiles.node_tile(level, idx)[0] for level, idx in wanted})
    nodes: dict[tuple[int, int], bytes] = {}

    def get(level: int, idx: int) -> bytes:
        if (level, idx) not in nodes:
            try:
                nodes[(level, idx)] = tiles.node_from_tiles(level, idx, found)
            except LookupError:
                raise TreeError(f"the stored tree has no node at level {level} index {idx}") from None
        return nodes[(level, idx)]

    return compute(get)


async def tile(session: AsyncSession, level: int, index: int, width: int) -> bytes:
    """Tile (level, index) as it was when it held `width` hashes (256: full); tile_not_found if never."""
    hashes = (await read_tiles_at(session, {(level, index)})).get((level, index), b"")
    if len(hashes) < width * tiles.HASH:
        raise TreeError(f"no tile {tiles.tile_path(level, index, width)}", "tile_not_found")
    return hashes[: width * tiles.HASH]


async def leaf_hashes(session: AsyncSession, indexes: set[int]) -> dict[int, bytes]:
    """The stored leaf hashes of these leaves (those present)."""
    found = await read_tiles_at(session, {(0, index >> HEIGHT) for index in indexes})
    out: dict[int, bytes] = {}
    for index in indexes:
        hashes = found.get((0, index >> HEIGHT), b"")
        at = (index % tiles.WIDTH) * tiles.HASH
        if at + tiles.HASH <= len(hashes):
            out[index] = hashes[at : at + tiles.HASH]
    return out


async def tree_size(session: AsyncSession) -> int:
    """Entries in the log: seq is contiguous from 1, so the last seq is the size."""
    last = (await session.execute(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1))).scalar()
    return int(last or 0)


def _check_size(size: int, limit: int, what: str) -> None:
    if size > limit:
        raise TreeError(f"{what} {size} is beyond the tree's {limit} leaves")


async def root_at(session: AsyncSession, size: int) -> bytes:
    _check_size(size, await tree_size(session), "size")
    return await with_nodes(session, lambda get: merkle.root_from_nodes(size, get))


async def inclusion(session: AsyncSession, index: int, size: int) -> list[bytes]:
    _check_size(size, await tree_size(session), "size")
    if not 0 <= index < size:
        raise TreeError(f"leaf {index} is not in a tree of size {size}")
    return await with_nodes(session, lambda get: merkle.inclusion_proof(index, size, get))


async def consistency(session: AsyncSession, old: int, new: int) -> list[bytes]:
    _check_size(new, await tree_size(session), "size")
    if not 0 <= old <= new:
        raise TreeError(f"no consistency proof from size {old} to size {new}")
    return await with_nodes(session, lambda get: merkle.consistency_proof(old, new, get))
