"""The audit tree as C2SP tlog-tiles (https://c2sp.org/tlog-tiles), pure (no I/O): tiles of 256 hashes,
tile level L holding the tree's level 8L (L = 0: the leaf hashes), the tree levels in between rebuilt by
hashing a tile's own hashes; the tile paths; and the right edge an appending process keeps in memory.

A tile is identified by (level, index) and grows from the left until it holds 256 hashes: the rightmost
tile of each level is partial (width 1 to 255). storage.py keeps each width it wrote, append-only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

from services.transparency import merkle

HEIGHT = 8
WIDTH = 1 << HEIGHT
HASH = merkle.HASH_SIZE
TILE_BYTES = WIDTH * HASH
MAX_LEVEL = 63

Tile = tuple[int, int]  # (tile level, tile index)


def node_tile(level: int, index: int) -> tuple[Tile, int, int]:
    """Where tree node (level, index) lives: its tile, the offset of its first hash there and how many
    hashes (a power of two up to 128, or 1 for a hash the tile stores) it is the subtree of."""
    tile_level, height = divmod(level, HEIGHT)
    first = index << height
    return (tile_level, first >> HEIGHT), first % WIDTH, 1 << height


def subtree(hashes: bytes, offset: int, count: int) -> bytes:
    """MTH of the `count` (a power of two) consecutive hashes of a tile from `offset`."""
    row = [hashes[i * HASH : (i + 1) * HASH] for i in range(offset, offset + count)]
    if len(row) != count or any(len(h) != HASH for h in row):
        raise LookupError(f"the tile holds no {count} hashes from {offset}")
    while len(row) > 1:
        row = [merkle.node_hash(row[i], row[i + 1]) for i in range(0, len(row), 2)]
    return row[0]


def node_from_tiles(level: int, index: int, tiles: Mapping[Tile, bytes]) -> bytes:
    """Tree node (level, index) from the tiles holding it; LookupError when they do not reach it."""
    tile, offset, count = node_tile(level, index)
    if tile not in tiles:
        raise LookupError(f"no tile {tile} for node level {level} index {index}")
    return subtree(tiles[tile], offset, count)


class TileNodes:
    """A tile's hashes and every subtree hash within them, hashed once on first use rather than per proof:
    row h holds the nodes of tree level 8L + h over the tile's span (row 0 the stored hashes), as many as
    the tile's width completes. Tiles never change once full, and a partial tile only grows, so the
    nodes a tile of some width completes are those of every wider version of it: a wider version hashes
    only its new nodes when it is told of a narrower one (`grows`)."""

    __slots__ = ("hashes", "_rows", "_narrower")

    def __init__(self, hashes: bytes) -> None:
        self.hashes = hashes
        self._rows: list[bytes] | None = None
        self._narrower: TileNodes | None = None

    def grows(self, narrower: TileNodes) -> None:
        """Takes the nodes a narrower version of this tile hashed (or will have, when first used); at most
        one version is held, one whose nodes were hashed, so a run of versions never used keeps nothing."""
        base = narrower if narrower._rows is not None else narrower._narrower
        if self._rows is None and base is not None and self.hashes.startswith(base.hashes):
            self._narrower = base

    def node(self, height: int, index: int) -> bytes:
        """Node `index` (from the tile's left) of row `height`; LookupError if the tile does not reach it."""
        if self._rows is None:
            self._rows = _rows(self.hashes, self._narrower._rows if self._narrower is not None else None)
            self._narrower = None
        row = self._rows[height] if height < len(self._rows) else b""
        if (index + 1) * HASH > len(row) or index < 0:
            raise LookupError(f"the tile holds no node {index} at height {height}")
        return row[index * HASH : (index + 1) * HASH]


def _rows(hashes: bytes, kept: list[bytes] | None = None) -> list[bytes]:
    """Each row from the one below: a pair of adjacent hashes is 64 consecutive bytes (RFC 9162 node).
    `kept`: the rows of a narrower version of the tile, whose nodes are not hashed again."""
    sha256 = hashlib.sha256
    rows = [hashes]
    while len(rows[-1]) >= 2 * HASH:
        below = rows[-1]
        done = kept[len(rows)] if kept is not None and len(rows) < len(kept) else b""
        rows.append(
            done
            + b"".join(
                sha256(b"\x01" + below[i : i + 2 * HASH]).digest()
                for i in range(2 * len(done), len(below) - 2 * HASH + 1, 2 * HASH)
            )
        )
    return rows


class TiledEdge:
    """The right edge of the tiled tree, all an append touches: the rightmost partial tile of each level
    and the tree's compact range (merkle.CompactRange), rebuilt from those tiles alone. An append returns
    each tile it changed once, with its new contents, so a batch writes each touched tile once."""

    def __init__(self, size: int, partial: Mapping[int, bytes]) -> None:
        self._partial = {level: bytearray(hashes) for level, hashes in partial.items() if hashes}
        expected = partial_tiles(size)
        if {level: len(h) for level, h in self._partial.items()} != {
            level: width * HASH for level, (_, width) in expected.items()
        }:
            raise ValueError(f"the partial tiles given do not fit a tree of {size} leaves")
        tiles = {(level, expected[level][0]): bytes(h) for level, h in self._partial.items()}
        self.range = merkle.CompactRange.from_nodes(size, lambda lv, ix: node_from_tiles(lv, ix, tiles))

    @property
    def size(self) -> int:
        return self.range.size

    def partial(self) -> dict[int, tuple[int, bytes]]:
        """The partial tile of each level now: level -> (index, hashes), copied."""
        edge = partial_tiles(self.size)
        return {level: (index, bytes(self._partial[level])) for level, (index, _) in edge.items()}

    def append(self, leaf_hashes: Iterable[bytes]) -> dict[Tile, bytes]:
        """Adds leaf hashes; returns the tiles they changed, as (level, index) -> their hashes now."""
        filled: dict[Tile, bytes | None] = {}  # None: still partial, copied once at the end
        for leaf in leaf_hashes:
            for level, index, value in self.range.append(leaf):
                if level % HEIGHT:
                    continue
                tile_level = level // HEIGHT
                row = self._partial.setdefault(tile_level, bytearray())
                row += value
                filled[(tile_level, index >> HEIGHT)] = bytes(row) if len(row) == TILE_BYTES else None
                if len(row) == TILE_BYTES:
                    row.clear()
        return {
            tile: hashes if hashes is not None else bytes(self._partial[tile[0]])
            for tile, hashes in filled.items()
        }


def partial_tiles(size: int) -> dict[int, tuple[int, int]]:
    """The rightmost partial tile of each level of a tree of `size`: level -> (index, width)."""
    out: dict[int, tuple[int, int]] = {}
    level = 0
    while size >> (HEIGHT * level):
        count = size >> (HEIGHT * level)
        if count % WIDTH:
            out[level] = (count // WIDTH, count % WIDTH)
        level += 1
    return out


# ---- paths (tlog-tiles: <prefix>/tile/<L>/<N>[.p/<W>], <prefix>/tile/entries/<N>[.p/<W>]) --------------

_INDEX = re.compile(r"^(?:x\d{3}/)*\d{3}$")
_LEVEL = re.compile(r"^(?:0|[1-9]\d?)$")
_WIDTH = re.compile(r"^[1-9]\d{0,2}$")


def index_path(index: int) -> str:
    """1234067 -> x001/x234/067: zero-padded 3-digit elements, all but the last prefixed with x."""
    parts = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        parts.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(parts))


def tile_path(level: int | None, index: int, width: int = WIDTH) -> str:
    """The path under the prefix; level None names the entry bundle."""
    name = "entries" if level is None else str(level)
    return f"tile/{name}/{index_path(index)}" + ("" if width == WIDTH else f".p/{width}")


def parse_index(path: str) -> tuple[int, int] | None:
    """`<N>[.p/<W>]` -> (index, width); None unless it is spelled exactly as the spec spells it."""
    index_part, dot, width_part = path.partition(".p/")
    if not _INDEX.match(index_part) or (dot and not _WIDTH.match(width_part)):
        return None
    width = int(width_part) if dot else WIDTH
    if width > WIDTH or (dot and width == WIDTH):
        return None
    digits = index_part.replace("x", "").split("/")
    if len(digits) > 1 and digits[0] == "000":  # one spelling per index: no leading zero element
        return None
    index = 0
    for part in digits:
        index = index * 1000 + int(part)
    return index, width


def parse_level(text: str) -> int | None:
    return int(text) if _LEVEL.match(text) and int(text) <= MAX_LEVEL else None
