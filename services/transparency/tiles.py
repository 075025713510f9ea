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
    only its new nodes when it is told of a narrower one (`grows`).

    A full tile's rows 1-7 (`inner`) may be given rather than hashed: as the appender's edge completed
    them (`root` None: trusted), or as read from the database (`root`: the tile's own hash, tree level
    8L + 8, from the tile above), when each inner node is checked before it is given, by hashing it up
    to that root with its stored siblings (at most 7 hashes rather than the 254 of the rows). A node that
    does not climb to the root drops what was read: the rows are hashed from the tile's hashes, as
    without it, and `distrusted` says so."""

    __slots__ = ("hashes", "_rows", "_narrower", "_root", "_checked", "distrusted")

    def __init__(self, hashes: bytes, inner: bytes | None = None, root: bytes | None = None) -> None:
        self.hashes = hashes
        self._rows = _split_inner(hashes, inner) if inner is not None else None
        self._narrower: TileNodes | None = None
        self._root = root if self._rows is not None else None
        self._checked: set[int] = set()  # (height << 8) | index of the stored nodes a climb showed true
        self.distrusted = False

    def grows(self, narrower: TileNodes) -> None:
        """Takes the nodes a narrower version of this tile hashed (or will have, when first used); at most
        one version is held, one whose nodes were hashed, so a run of versions never used keeps nothing."""
        base = narrower if narrower._rows is not None else narrower._narrower
        if self._rows is None and base is not None and self.hashes.startswith(base.hashes):
            self._narrower = base

    def _hashed(self) -> list[bytes]:
        """The rows, hashed on first use (but what a narrower version hashed)."""
        if self._rows is None:
            self._rows = _rows(self.hashes, self._narrower._rows if self._narrower is not None else None)
            self._narrower = None
        return self._rows

    def node(self, height: int, index: int) -> bytes:
        """Node `index` (from the tile's left) of row `height`; LookupError if the tile does not reach it."""
        rows = self._hashed()
        row = rows[height] if height < len(rows) else b""
        if (index + 1) * HASH > len(row) or index < 0:
            raise LookupError(f"the tile holds no node {index} at height {height}")
        value = row[index * HASH : (index + 1) * HASH]
        if height and self._root is not None and not self._climbs(height, index, value):
            self._rows, self._root, self.distrusted = _rows(self.hashes), None, True
            return self.node(height, index)
        return value

    def inner(self) -> bytes:
        """A full tile's rows 1-7, as stored with it: 254 hashes, row by row."""
        if len(self.hashes) != TILE_BYTES:
            raise ValueError("only a full tile's inner nodes are stored")
        return b"".join(self._hashed()[1:HEIGHT])

    def _climbs(self, height: int, index: int, value: bytes) -> bool:
        """Whether the stored node climbs, with its stored siblings, to the root; each stored node on the
        way must be what the climb makes of it. Every node it shows true is remembered, and a later climb
        stops at the first of those it reaches: a tile kept in memory soon gives its nodes unhashed."""
        assert self._rows is not None
        rows, checked, sha256 = self._rows, self._checked, hashlib.sha256
        passed: list[int] = []
        while height < HEIGHT:
            key = (height << HEIGHT) | index
            if key in checked:
                break
            sibling = rows[height][(index ^ 1) * HASH : ((index ^ 1) + 1) * HASH]
            passed += (key, key ^ 1)
            value = sha256(b"\x01" + (sibling + value if index & 1 else value + sibling)).digest()
            height, index = height + 1, index >> 1
            if height < HEIGHT and rows[height][index * HASH : (index + 1) * HASH] != value:
                return False
        else:
            if value != self._root:
                return False
        checked.update(passed)
        return True


INNER_BYTES = (WIDTH - 2) * HASH  # rows 1-7 of a full tile: 128 + 64 + ... + 2 hashes


def _split_inner(hashes: bytes, inner: bytes) -> list[bytes]:
    if len(hashes) != TILE_BYTES or len(inner) != INNER_BYTES:
        raise ValueError("inner nodes are those of a full tile: 254 hashes")
    rows, at = [hashes], 0
    for height in range(1, HEIGHT):
        width = (WIDTH >> height) * HASH
        rows.append(inner[at : at + width])
        at += width
    return rows


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
        # The rows 1-7 of each partial tile, as far as complete: the compact range completes the rest in
        # order, so a tile filled has its inner nodes without hashing them again.
        self._inner = {level: _inner_of(_rows(bytes(h))) for level, h in self._partial.items()}

    @property
    def size(self) -> int:
        return self.range.size

    def partial(self) -> dict[int, tuple[int, bytes]]:
        """The partial tile of each level now: level -> (index, hashes), copied."""
        edge = partial_tiles(self.size)
        return {level: (index, bytes(self._partial[level])) for level, (index, _) in edge.items()}

    def _inner_rows(self, level: int) -> list[bytearray]:
        inner = self._inner.get(level)
        if inner is None:
            inner = self._inner[level] = _inner_of([])
        return inner

    def append(self, leaf_hashes: Iterable[bytes]) -> dict[Tile, TileNodes]:
        """Adds leaf hashes; returns the tiles they changed, as (level, index) -> their nodes now, a full
        tile with its inner nodes (`TileNodes.inner`) as the compact range completed them."""
        changed: dict[Tile, TileNodes] = {}
        partial: dict[int, int] = {}  # tile level -> index of its partial tile, when changed
        for leaf in leaf_hashes:
            filled: list[Tile] = []
            for level, index, value in self.range.append(leaf):
                tile_level, height = divmod(level, HEIGHT)
                if height:
                    self._inner_rows(tile_level)[height - 1] += value
                    continue
                row = self._partial.setdefault(tile_level, bytearray())
                row += value
                partial[tile_level] = index >> HEIGHT
                if len(row) == TILE_BYTES:
                    filled.append((tile_level, index >> HEIGHT))
            # Once all the leaf completed: the nodes above a tile's last hash come after it.
            for tile_level, index in filled:
                row, inner = self._partial[tile_level], self._inner.pop(tile_level)
                changed[(tile_level, index)] = TileNodes(bytes(row), b"".join(inner))
                row.clear()
                del partial[tile_level]
        for tile_level, index in partial.items():
            changed[(tile_level, index)] = TileNodes(bytes(self._partial[tile_level]))
        return changed


def _inner_of(rows: list[bytes]) -> list[bytearray]:
    """Rows 1-7 of a partial tile's `rows` (_rows), empty where it completes none, to grow in place."""
    return [bytearray(rows[height] if height < len(rows) else b"") for height in range(1, HEIGHT)]


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
