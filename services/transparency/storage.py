"""The audit log's RFC 9162 Merkle tree in the database as C2SP tlog-tiles (table tlog_tiles, append-only):
each append writes the tiles it changed, once per batch, from the right edge the appending process keeps
in memory; roots and proofs read a handful of tiles (one query) and hash within them. Proofs are served
from what this process knows once committed (the right edge at the latest size it saw, full tiles in an
LRU cache), so a proof reads at most the one tile under its leaf from the database, and of it only the
leaf's path when it knows the tile's root. That knowledge is a TreeMemory, one per database, which
whoever owns the engine creates and hands to the appends and proofs (the audit process shares one
between its consumer and its app); without one, a call reads the database.

The maths is merkle.py and tiles.py (pure); this module is their storage and nothing else. What a leaf
is belongs to the log (entries.py), the signed checkpoints to checkpoints.py.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from sqlalchemy import ColumnElement, Executable, Row, bindparam, delete, func, insert, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from services.platform.database import Autocommit
from services.platform.errors import Error
from services.transparency import merkle, tiles
from services.transparency.models import AuditEntry, TlogTile
from services.transparency.tiles import HEIGHT, Tile

T = TypeVar("T")
log = structlog.get_logger("audit")


class TreeError(Error):
    """A proof or checkpoint cannot be served as asked (`tree_range`, `checkpoint_not_found`), or the log
    refuses to sign one (`checkpoint_refused`); the detail says why."""

    code = "tree_range"


# ---- the stored tiles ----------------------------------------------------------------------------------


async def read_tiles(session: AsyncSession, *where: ColumnElement[bool]) -> dict[Tile, bytes]:
    """The widest stored version of each tile that matches, in one query: a partial tile is a prefix of
    every wider version of it, so the widest serves any width up to its own. (A committed log holds one
    row per tile: an append deletes the narrower row in the transaction that writes the wider one.)"""
    query = select(TlogTile.level, TlogTile.idx, TlogTile.hashes).where(*where)
    return _widest((await session.execute(query)).all())


def _widest(rows: Sequence[Row[Any, Any, Any]] | Sequence[Sequence[Any]]) -> dict[Tile, bytes]:
    return {tile: hashes for tile, (hashes, _) in _widest_stored([(*row, None) for row in rows]).items()}


# Built once: building a statement per proof costs more than the query it sends.
_TILE = TlogTile.__table__.c
_ONE_TILE = select(_TILE.level, _TILE.idx, _TILE.hashes).where(
    _TILE.level == bindparam("level"), _TILE.idx == bindparam("idx")
)
_INSERT_TILE = insert(TlogTile)
_DELETE_NARROWER = delete(TlogTile).where(
    TlogTile.level == bindparam("level"),
    TlogTile.idx == bindparam("idx"),
    TlogTile.width < bindparam("width"),
)
_TILES = select(_TILE.level, _TILE.idx, _TILE.hashes).where(
    tuple_(_TILE.level, _TILE.idx).in_(bindparam("tiles", expanding=True))
)

_TILES_AND_NODES = _TILES.add_columns(_TILE.nodes)
# One tile (a proof's usual read, once the tiles above it are in memory): an index lookup, which costs
# the database less than the join of the arrays below (measured: about 0.11 against 0.15 ms a read).
_ONE_TILE_AND_NODES = _ONE_TILE.add_columns(_TILE.nodes)

# The same, as one statement whatever the tiles (their levels and indexes as two arrays): what Autocommit
# compiles once and runs straight on asyncpg.
_TILES_LISTED = text(
    "SELECT t.level, t.idx, t.hashes, t.nodes FROM unnest(CAST(:levels AS smallint[]), "
    "CAST(:idxs AS bigint[])) AS w(level, idx) JOIN tlog_tiles t ON t.level = w.level AND t.idx = w.idx"
)


# One full tile's nodes on a leaf's path up it: the pair at the bottom (the leaf's hash and its sibling's)
# and the sibling in each row above, cut out in the database. The values are stored out of line (TOAST),
# where a slice reads only the chunks it covers: about half of what the whole tile and its inner nodes
# take (measured at 10^7 entries, a read's p90: 0.63 against 1.3 ms, on a busy machine).
_PATH = select(
    func.substr(_TILE.hashes, bindparam("pair"), 2 * tiles.HASH),
    *(func.substr(_TILE.nodes, bindparam(f"row{h}"), tiles.HASH) for h in range(1, HEIGHT)),
).where(_TILE.level == bindparam("level"), _TILE.idx == bindparam("idx"), _TILE.width == tiles.WIDTH)
# Where each row of a full tile's inner nodes starts in `nodes` (TileNodes.inner: rows 1-7, in order).
_ROW_AT = [0, *(sum((tiles.WIDTH >> k) * tiles.HASH for k in range(1, h)) for h in range(1, HEIGHT))]


async def read_tiles_at(session: AsyncSession | AsyncConnection, wanted: set[Tile]) -> dict[Tile, bytes]:
    """The widest stored version of each of these tiles, in one query."""
    if not wanted:
        return {}
    if len(wanted) == 1:
        [(level, idx)] = wanted
        result = await session.execute(_ONE_TILE, {"level": level, "idx": idx})
    else:
        result = await session.execute(_TILES, {"tiles": sorted(wanted)})
    return _widest(result.all())


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


async def _edge(session: AsyncSession, head: tuple[int, str], memory: TreeMemory | None) -> tiles.TiledEdge:
    """The right edge at `head` (size, entry hash): the memory's, taken from it, when nothing else
    appended (or rolled back) since, else rebuilt from the partial tiles, one query."""
    kept = memory.take_edge(head) if memory is not None else None
    if kept is not None:
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
    session: AsyncSession,
    head: tuple[int, str],
    leaf_hashes: Sequence[bytes],
    new_head: tuple[int, str],
    memory: TreeMemory | None = None,
) -> Growth:
    """Stores the leaves appended to the log at `head` (size, entry hash), which now ends at `new_head`:
    each tile they change written once, in the caller's transaction, and its narrower row deleted. The
    memory's edge is used and then kept under `new_head`, so it is used again only if that transaction
    committed and nothing else appended since. Returns what the commit makes known, which the caller
    tells the memory once its commit succeeded (TreeMemory.committed)."""
    if not leaf_hashes:
        return Growth(0)
    edge, changed = await grow(session, head, leaf_hashes, memory)
    await (await session.connection()).execute(_INSERT_TILE, tile_rows(changed))
    return await supersede(session, edge, changed, len(leaf_hashes), new_head, memory)


async def grow(
    session: AsyncSession, head: tuple[int, str], leaf_hashes: Sequence[bytes], memory: TreeMemory | None
) -> tuple[tiles.TiledEdge, dict[Tile, tiles.TileNodes]]:
    """The right edge at `head` (the memory's, given up, or read) with the leaves added, and the tiles
    they changed: what add_leaves writes, for a caller that writes them with its own statement and then
    calls `supersede`."""
    edge = await _edge(session, head, memory)
    return edge, edge.append(leaf_hashes)


def tile_rows(changed: Mapping[Tile, tiles.TileNodes]) -> list[dict[str, Any]]:
    """The rows of the changed tiles; a full one with its inner nodes, which proofs then read rather
    than hash (a partial one has none stored: proofs know it from memory, or hash it)."""
    return [
        {
            "level": level,
            "idx": idx,
            "width": len(nodes.hashes) // tiles.HASH,
            "hashes": nodes.hashes,
            "nodes": nodes.inner() if len(nodes.hashes) == tiles.TILE_BYTES else None,
        }
        for (level, idx), nodes in changed.items()
    ]


async def supersede(
    session: AsyncSession,
    edge: tiles.TiledEdge,
    changed: Mapping[Tile, tiles.TileNodes],
    added: int,
    new_head: tuple[int, str],
    memory: TreeMemory | None,
) -> Growth:
    """Once the `changed` tiles (by `added` leaves) are written: deletes the narrower rows they
    supersede, then as `grown`."""
    # The narrower rows are prefixes of the new ones: the only deletion the database allows.
    await (await session.connection()).execute(
        _DELETE_NARROWER,
        [
            {"level": level, "idx": idx, "width": len(nodes.hashes) // tiles.HASH}
            for (level, idx), nodes in changed.items()
        ],
    )
    return grown(edge, changed, added, new_head, memory)


def grown(
    edge: tiles.TiledEdge,
    changed: Mapping[Tile, tiles.TileNodes],
    added: int,
    new_head: tuple[int, str],
    memory: TreeMemory | None,
) -> Growth:
    """Once the `changed` tiles (by `added` leaves) are written and the narrower rows they supersede
    deleted: keeps the edge in the memory under `new_head` and returns the Growth (see add_leaves)."""
    if memory is not None:
        memory.keep_edge(new_head, edge)
    full = {tile: nodes for tile, nodes in changed.items() if len(nodes.hashes) == tiles.TILE_BYTES}
    return Growth(added, _Known.of(edge.size, edge.partial()), full)


async def with_nodes(session: AsyncSession, compute: Callable[[merkle.GetNode], T]) -> T:
    """Runs a pure tree function over the stored tiles: a dry run learns which nodes it reads (the
    pattern does not depend on hash values), then one query fetches the tiles that hold them: at most two
    per tile level (the one under the leaf or old size, and the right edge's), 3 levels up to 2**24.
    Always from the database: what the start-up check compares with the entries."""
    wanted = _tiles_read_by(compute)
    found: dict[Tile, Nodes] = {
        tile: tiles.TileNodes(hashes) for tile, hashes in (await read_tiles_at(session, wanted)).items()
    }
    return _run(compute, found)


def _tiles_read_by(compute: Callable[[merkle.GetNode], Any]) -> set[Tile]:
    wanted: set[Tile] = set()

    def note(level: int, idx: int) -> bytes:
        wanted.add(tiles.node_tile(level, idx)[0])
        return bytes(merkle.HASH_SIZE)

    compute(note)
    return wanted


_ZERO = bytes(merkle.HASH_SIZE)


class Nodes(Protocol):
    """What a proof reads a tile's nodes from: the whole tile (TileNodes), or a path up it (_Path)."""

    def node(self, height: int, index: int) -> bytes: ...


def _run(
    compute: Callable[[merkle.GetNode], T],
    found: dict[Tile, Nodes],
    lookup: Callable[[Tile], tiles.TileNodes | None] | None = None,
) -> T:
    """`compute` over the nodes of the tiles `found`; a tile not there is asked of `lookup` (and kept),
    and where it has none either, its nodes read as zeroes (a run that only learns what is missing)."""

    def get(level: int, idx: int) -> bytes:
        tile, offset, _ = tiles.node_tile(level, idx)
        nodes = found.get(tile)
        if nodes is None and lookup is not None:
            nodes = lookup(tile)
            if nodes is None:
                return _ZERO
            found[tile] = nodes
        height = level % HEIGHT
        try:
            if nodes is None:
                raise LookupError(tile)
            return nodes.node(height, offset >> height)
        except LookupError:
            raise TreeError(f"the stored tree has no node at level {level} index {idx}") from None

    return compute(get)


# ---- what this process knows of the committed tree -----------------------------------------------------

CACHED_TILES = 2048  # full tiles kept per memory, ~17 KB each with their inner nodes: ~34 MB at most


class _FullTiles:
    """An LRU cache of full tiles: a full tile never changes, so what was read or written once serves
    every later proof."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._tiles: OrderedDict[Tile, tiles.TileNodes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tiles)

    def get(self, tile: Tile) -> tiles.TileNodes | None:
        found = self._tiles.get(tile)
        if found is not None:
            self._tiles.move_to_end(tile)
        return found

    def put(self, tile: Tile, nodes: tiles.TileNodes) -> None:
        self._tiles[tile] = nodes
        self._tiles.move_to_end(tile)
        while len(self._tiles) > self.capacity:
            self._tiles.popitem(last=False)

    def clear(self) -> None:
        self._tiles.clear()


@dataclass(frozen=True)
class _Known:
    """The committed tree at `size`: its partial tile of each level, (index, nodes). Entries once
    committed never change, so these serve a proof at any size up to this one without asking the
    database how large the tree is, nor reading its right edge."""

    size: int
    partial: dict[int, tuple[int, tiles.TileNodes]]

    @classmethod
    def of(cls, size: int, partial: Mapping[int, tuple[int, bytes]]) -> _Known:
        return cls(size, {level: (idx, tiles.TileNodes(h)) for level, (idx, h) in partial.items()})

    def tile(self, tile: Tile) -> tiles.TileNodes | None:
        level, idx = tile
        found = self.partial.get(level)
        return found[1] if found is not None and found[0] == idx else None


@dataclass(frozen=True)
class Growth:
    """What an append added: `added` leaves and, once its transaction commits, the tree at its new size
    and the full tiles it wrote (nothing when it added no leaf)."""

    added: int
    known: _Known | None = None
    full: Mapping[Tile, tiles.TileNodes] = field(default_factory=dict)


class TreeMemory:
    """What a process knows of ONE database's tree: the largest committed tree it saw (its own appends'
    once told they committed, or what proofs read), the full tiles in an LRU cache of `capacity`, and
    its appender's right edge with the head (size, entry hash) it is the edge of. Created by whoever owns
    the engine and handed to the appends and proofs on that database; a new one knows nothing (a restart,
    a restored database)."""

    def __init__(self, capacity: int = CACHED_TILES, reader: Autocommit | None = None) -> None:
        self.full = _FullTiles(capacity)
        # What proofs read the tiles they lack with, outside any transaction, when the engine's owner
        # has one (the audit app its Autocommit): straight on asyncpg, without SQLAlchemy's connection
        # checkout and execution, which cost several times the query.
        self.reader = reader
        self.known: _Known | None = None
        self._edge: tuple[tuple[int, str], tiles.TiledEdge] | None = None

    def take_edge(self, head: tuple[int, str]) -> tiles.TiledEdge | None:
        """The edge kept at `head`, if it is the head kept, given up: an append that fails halfway
        through must not leave it changed under the head it started from."""
        kept, self._edge = self._edge, None
        return kept[1] if kept is not None and kept[0] == head else None

    def keep_edge(self, head: tuple[int, str], edge: tiles.TiledEdge) -> None:
        self._edge = (head, edge)

    def edge_head(self) -> tuple[int, str] | None:
        """The head the kept edge is at (kept, not given up): what an appender expects the log's head
        to be when nothing else appended since."""
        return self._edge[0] if self._edge is not None else None

    def committed(self, growth: Growth) -> None:
        """Learns what an append made known; only once its transaction committed (never for a batch
        rolled back or a session closed without committing)."""
        if growth.known is not None:
            self.learn(growth.known)
        for tile, nodes in growth.full.items():
            self.full.put(tile, nodes)

    def learn(self, known: _Known) -> None:
        """Knows the committed tree at `known.size`, if larger than the one it knew."""
        older = self.known
        if older is None or known.size > older.size:
            for level, (idx, nodes) in known.partial.items():
                was = older.partial.get(level) if older is not None else None
                if was is not None and was[0] == idx:
                    nodes.grows(was[1])
            self.known = known


async def _proof(
    session: AsyncSession,
    size: int,
    compute: Callable[[merkle.GetNode], T],
    memory: TreeMemory | None,
    nodes: Sequence[tuple[int, int]] | None = None,
) -> T:
    """Runs a proof of the tree at `size` over what the memory knows, reading only the rest (one query):
    up to the largest size it saw committed (its own appends, or earlier reads), neither the tree's size
    nor its right edge is read; beyond it (another appender, or a standby that appends nothing) the
    database's size is checked and the right edge at `size` is read with the proof's tiles, then known
    for the next proofs. Without a memory, a new one: what a process that knows nothing reads."""
    memory = memory if memory is not None else TreeMemory()
    known = memory.known
    if known is None or size > known.size:
        _check_size(size, await tree_size(session), "size")
        known = None
    found: dict[Tile, Nodes] = {}
    missing: set[Tile] = set()

    def held(tile: Tile) -> tiles.TileNodes | None:
        return (known.tile(tile) if known is not None else None) or memory.full.get(tile)

    def from_memory(tile: Tile) -> tiles.TileNodes | None:
        nodes = held(tile)
        if nodes is None:
            missing.add(tile)
        return nodes

    first: T | None = None
    if nodes is None:
        # Run at once over what is in memory, noting the tiles that are not (their nodes read as
        # zeroes): when none is missing, that run is the proof; else a second runs once they are read.
        first = _run(compute, found, from_memory)
    else:  # the nodes it reads are named: their tiles are looked up without a run
        for tile in {tiles.node_tile(level, idx)[0] for level, idx in nodes}:
            if (nodes_held := from_memory(tile)) is not None:
                found[tile] = nodes_held
    if not missing and known is not None:
        return first if first is not None else _run(compute, found)
    if nodes is not None and known is not None and len(missing) == 1:
        # The usual proof in a large log: every tile in memory but the full one under the leaf. Its nodes
        # on the leaf's path are read alone, and used once they climb to its root, held above it.
        [tile] = missing
        over = held(_above(tile))
        path = await _read_path(session, tile, nodes, over, memory.reader) if over else None
        if path is not None:
            found[tile] = path
            return _run(compute, found)

    edge = tiles.partial_tiles(size) if known is None else {}
    wanted = missing | {(level, idx) for level, (idx, _) in edge.items()}
    # With each tile, the one above it, unless known: it holds the tile's root, which the tile's stored
    # inner nodes are checked against.
    wanted |= {above for above in map(_above, missing) if held(above) is None}
    read = await _read_alone(session, wanted, memory.reader)
    whole: dict[Tile, tiles.TileNodes] = {}
    for tile, (hashes, inner) in read.items():
        above = _above(tile)
        root = _root(tile, read[above][0] if above in read else getattr(held(above), "hashes", b""))
        if inner is not None and root is not None:
            nodes_read = tiles.TileNodes(hashes, inner, root)
        else:  # none stored, or no root to check them against: hashed, as before they were stored
            nodes_read = tiles.TileNodes(hashes)
        found[tile] = whole[tile] = nodes_read
        if len(hashes) == tiles.TILE_BYTES:
            memory.full.put(tile, nodes_read)
    if known is None and all((level, idx) in read for level, (idx, _) in edge.items()):
        cut = {
            level: (idx, read[(level, idx)][0][: width * tiles.HASH]) for level, (idx, width) in edge.items()
        }
        memory.learn(_Known.of(size, cut))
    proof = first if first is not None and not missing else _run(compute, found)
    if distrusted := sorted(tile for tile, nodes_read in whole.items() if nodes_read.distrusted):
        log.warning("tile_nodes_distrusted", tiles=distrusted, detail="hashed from the tiles' hashes")
    return proof


def _above(tile: Tile) -> Tile:
    """The tile that holds this tile's root (tree level 8L + 8)."""
    return tile[0] + 1, tile[1] >> HEIGHT


def _root(tile: Tile, hashes_above: bytes) -> bytes | None:
    """The tile's root, from the hashes of the tile above it, if they reach it."""
    at = (tile[1] % tiles.WIDTH) * tiles.HASH
    root = hashes_above[at : at + tiles.HASH]
    return root if len(root) == tiles.HASH else None


class _Path:
    """A full tile's nodes on one path up it, and nothing else: (height, index in its row) -> hash."""

    __slots__ = ("_nodes",)

    def __init__(self, nodes: dict[tuple[int, int], bytes]) -> None:
        self._nodes = nodes

    def node(self, height: int, index: int) -> bytes:
        found = self._nodes.get((height, index))
        if found is None:
            raise LookupError(f"the path read holds no node {index} at height {height}")
        return found


async def _read_path(
    session: AsyncSession,
    tile: Tile,
    nodes: Sequence[tuple[int, int]],
    above: tiles.TileNodes,
    reader: Autocommit | None,
) -> _Path | None:
    """The tile's nodes among `nodes` (tree level, index), read alone, if they are the siblings up one
    path through the whole tile (an inclusion proof's below its fork) and the path they make from its
    bottom climbs to the tile's root in `above`; else None, and the caller reads the tile whole (which
    also says, and logs, when its stored nodes do not climb)."""
    root = _root(tile, above.hashes)
    level, index = tile
    mine = {(lv - HEIGHT * level, idx) for lv, idx in nodes if tiles.node_tile(lv, idx)[0] == tile}
    bottom = [idx for height, idx in mine if height == 0]
    if root is None or len(bottom) != 1:
        return None
    start = (bottom[0] ^ 1) - (index << HEIGHT)  # the path's node in the bottom row, from the tile's left
    if mine != {(h, ((start >> h) ^ 1) + (index << (HEIGHT - h))) for h in range(HEIGHT)}:
        return None
    params = {"level": level, "idx": index, "pair": (start & ~1) * tiles.HASH + 1}
    params.update({f"row{h}": _ROW_AT[h] + ((start >> h) ^ 1) * tiles.HASH + 1 for h in range(1, HEIGHT)})
    rows = await _alone(session, _PATH, params, reader)
    if not rows or any(value is None for value in rows[0]):  # no full row, or no inner nodes stored with it
        return None
    pair, siblings = bytes(rows[0][0]), [bytes(value) for value in rows[0][1:]]
    own = pair[(start & 1) * tiles.HASH :][: tiles.HASH]
    path = {(0, start): own, (0, start ^ 1): pair[((start & 1) ^ 1) * tiles.HASH :][: tiles.HASH]}
    path.update({(h, (start >> h) ^ 1): sibling for h, sibling in enumerate(siblings, start=1)})
    value = own
    for h in range(HEIGHT):
        sibling = path[(h, (start >> h) ^ 1)]
        value = merkle.node_hash(sibling, value) if (start >> h) & 1 else merkle.node_hash(value, sibling)
    return _Path(path) if value == root and len(pair) == 2 * tiles.HASH else None


async def _read_alone(
    session: AsyncSession, wanted: set[Tile], reader: Autocommit | None
) -> dict[Tile, tuple[bytes, bytes | None]]:
    """The widest stored version of each of these tiles with its inner nodes, if stored (see _alone)."""
    if not wanted:
        return {}
    statement: Executable
    params: dict[str, Any]
    if len(wanted) == 1:
        [(level, idx)] = wanted
        statement, params = _ONE_TILE_AND_NODES, {"level": level, "idx": idx}
    elif session.get_bind().dialect.name == "postgresql":
        listed = sorted(wanted)
        statement = _TILES_LISTED
        params = {"levels": [level for level, _ in listed], "idxs": [idx for _, idx in listed]}
    else:
        statement, params = _TILES_AND_NODES, {"tiles": sorted(wanted)}
    return _widest_stored(await _alone(session, statement, params, reader))


async def _alone(
    session: AsyncSession, statement: Executable, params: dict[str, Any], reader: Autocommit | None
) -> Sequence[Sequence[Any]]:
    """The rows of a read of tiles: in the session's transaction if one is open, else on a connection of
    its own in autocommit (the reader's on PostgreSQL): one round trip rather than BEGIN and the query.
    Tiles only grow, so no transaction's snapshot is needed to read them consistently."""
    engine = session.bind
    if session.in_transaction() or not isinstance(engine, AsyncEngine):
        return (await session.execute(statement, params)).all()
    if reader is not None and reader.engine.dialect.name == "postgresql":
        return await reader.all(statement, params)
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        return (await connection.execute(statement, params)).all()


def _widest_stored(rows: Sequence[Sequence[Any]]) -> dict[Tile, tuple[bytes, bytes | None]]:
    """Of rows (level, idx, hashes, inner nodes), each tile's widest with its inner nodes."""
    found: dict[Tile, tuple[bytes, bytes | None]] = {}
    for level, idx, hashes, inner in rows:
        if len(hashes) > len(found.get((level, idx), (b"",))[0]):
            found[(level, idx)] = (hashes, inner)
    return found


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


async def inclusion(
    session: AsyncSession, index: int, size: int, memory: TreeMemory | None = None
) -> list[bytes]:
    if not 0 <= index < size:
        _check_size(size, await tree_size(session), "size")
        raise TreeError(f"leaf {index} is not in a tree of size {size}")
    path = merkle.inclusion_nodes(index, size)
    nodes = [node for hashed in path for node in hashed]
    return await _proof(session, size, lambda get: merkle.path_hashes(path, get), memory, nodes)


async def consistency(
    session: AsyncSession, old: int, new: int, memory: TreeMemory | None = None
) -> list[bytes]:
    if not 0 <= old <= new:
        _check_size(new, await tree_size(session), "size")
        raise TreeError(f"no consistency proof from size {old} to size {new}")
    return await _proof(session, new, lambda get: merkle.consistency_proof(old, new, get), memory)
