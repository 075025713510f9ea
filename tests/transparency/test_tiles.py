"""The tiled tree, pure: tile paths as C2SP tlog-tiles spells them, and the right edge an appender keeps,
which must write exactly the tiles the spec defines and agree with the reference tree at every size."""

from __future__ import annotations

import hashlib

import pytest

from services.transparency import merkle, tiles


def _leaf(n: int) -> bytes:
    return merkle.leaf_hash(n.to_bytes(8, "big"))


@pytest.mark.parametrize(
    ("index", "path"),
    [(0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067")],
)
def test_indexes_are_spelt_in_3_digit_elements(index: int, path: str) -> None:
    assert tiles.index_path(index) == path
    assert tiles.parse_index(path) == (index, 256)
    assert tiles.parse_index(path + ".p/17") == (index, 17)
    assert tiles.tile_path(2, index, 17) == f"tile/2/{path}.p/17"
    assert tiles.tile_path(None, index) == f"tile/entries/{path}"


@pytest.mark.parametrize(
    "path",
    ["7", "0007", "x000/007", "001/002", "x1/002", "000.p/0", "000.p/256", "000.p/07", "000.p/", "-01"],
)
def test_any_other_spelling_is_no_tile(path: str) -> None:
    assert tiles.parse_index(path) is None


def test_levels_are_0_to_63_without_leading_zeroes() -> None:
    assert [tiles.parse_level(t) for t in ("0", "1", "63", "64", "01", "x", "")] == [0, 1, 63] + [None] * 4


def test_the_edge_writes_the_spec_tiles_and_reloads_from_them_at_any_size() -> None:
    reference = merkle.MemoryTree()
    stored: dict[tiles.Tile, bytes] = {}
    edge = tiles.TiledEdge(0, {})
    size, batches = 0, [1, 255, 1, 300, 43, 255, 256, 512, 1, 70]
    for batch in batches:
        leaves = [_leaf(n) for n in range(size, size + batch)]
        for leaf in leaves:
            reference.append(leaf)
        changed = edge.append(leaves)
        size += batch
        # Each changed tile once, grown from what was stored before (append-only, a prefix kept).
        for key, nodes in changed.items():
            assert nodes.hashes.startswith(stored.get(key, b""))
            stored[key] = nodes.hashes
            if len(nodes.hashes) == tiles.TILE_BYTES:  # with the inner nodes the range completed
                assert nodes.inner() == tiles.TileNodes(nodes.hashes).inner()
        # Every tile as the spec defines it: MTH(D[(n * 256 + i) * 256**l : ...]) for i < width.
        for (level, index), hashes in stored.items():
            width = min(256, (size >> (8 * level)) - index * 256)
            assert len(hashes) == width * 32
            for i in range(width):
                first = (index * 256 + i) << (8 * level)
                assert hashes[i * 32 : (i + 1) * 32] == reference.get_node(8 * level, first >> (8 * level))
        assert edge.range.root() == reference.root()
        # An appender restarting here rebuilds the same edge from the partial tiles alone.
        partial = {
            level: stored[(level, index)][: width * 32]
            for level, (index, width) in tiles.partial_tiles(size).items()
        }
        assert tiles.TiledEdge(size, partial).range.root() == reference.root()
        if batch % 2:  # and goes on from there, its partial tiles' inner nodes hashed from them
            edge = tiles.TiledEdge(size, partial)
    assert size == 1694
    assert tiles.partial_tiles(70_000) == {0: (273, 112), 1: (1, 17), 2: (0, 1)}  # the spec's example
    assert tiles.partial_tiles(256) == {1: (0, 1)}
    for level in range(12):
        for index in range(size >> level):
            assert tiles.node_from_tiles(level, index, stored) == reference.get_node(level, index)
    for old in (1, 255, 256, 257, 1000, size):
        proof = merkle.consistency_proof(old, size, lambda lv, ix: tiles.node_from_tiles(lv, ix, stored))
        assert merkle.verify_consistency(old, size, reference.root(old), reference.root(), proof)
    with pytest.raises(ValueError, match="do not fit"):
        tiles.TiledEdge(300, {0: bytes(32)})


def test_a_subtree_is_the_rfc_hash_of_its_run_of_hashes() -> None:
    row = b"".join(_leaf(n) for n in range(4))
    left = hashlib.sha256(b"\x01" + _leaf(0) + _leaf(1)).digest()
    right = hashlib.sha256(b"\x01" + _leaf(2) + _leaf(3)).digest()
    assert tiles.subtree(row, 0, 4) == hashlib.sha256(b"\x01" + left + right).digest()
    assert tiles.subtree(row, 2, 2) == right
    with pytest.raises(LookupError):
        tiles.subtree(row, 2, 4)


def test_tile_nodes_are_the_subtrees_of_the_tile_and_a_wider_version_hashes_only_its_new_ones() -> None:
    row = b"".join(_leaf(n) for n in range(256))
    for widths in [(1, 2, 3), (37, 100, 256), (128, 129, 200), (5, 5, 7)]:
        versions = [tiles.TileNodes(row[: width * 32]) for width in widths]
        versions[0].node(0, 0)  # hashed; the middle version never is: the widest takes the first's nodes
        versions[1].grows(versions[0])
        versions[2].grows(versions[1])
        for width, nodes in reversed(list(zip(widths, versions, strict=True))):
            for height in range(9):
                for index in range(width >> height):
                    expected = tiles.subtree(row, index << height, 1 << height)
                    assert nodes.node(height, index) == expected
                with pytest.raises(LookupError):
                    nodes.node(height, width >> height)
    other = tiles.TileNodes(b"\x07" * 64)
    other.node(0, 0)
    grown = tiles.TileNodes(row[:96])
    grown.grows(other)  # not a narrower version of this tile: ignored
    assert grown.node(1, 0) == tiles.subtree(row, 0, 2)


def test_stored_inner_nodes_are_given_only_once_they_climb_to_the_tiles_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = b"".join(_leaf(n) for n in range(256))
    inner = tiles.TileNodes(row).inner()
    assert len(inner) == tiles.INNER_BYTES
    root = tiles.subtree(row, 0, 256)
    stored = tiles.TileNodes(row, inner, root)
    for height in range(8):
        for index in range(256 >> height):
            assert stored.node(height, index) == tiles.subtree(row, index << height, 1 << height)
    assert not stored.distrusted
    # What a climb showed true is remembered: a node asked again, or one on a shown path, is not hashed.
    hashed: list[bytes] = []
    original = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda data=b"": hashed.append(data) or original(data))
    again = tiles.TileNodes(row, inner, root)
    assert again.node(1, 0) == stored.node(1, 0) and len(hashed) == 7
    assert again.node(1, 0) == stored.node(1, 0) and len(hashed) == 7
    assert again.node(1, 1) == stored.node(1, 1) and len(hashed) == 7  # a sibling on that climb
    assert again.node(1, 2) == stored.node(1, 2) and len(hashed) == 8  # to its parent, shown true
    monkeypatch.undo()
    # One node altered (height 3, node 5): never given, as itself, nor is a node whose climb meets it as
    # a sibling or as an ancestor (what the climb made of it differs); a node elsewhere is.
    at = (128 + 64 + 5) * 32  # rows 1 and 2 before it
    for height, index, meets in [(2, 0, False), (3, 5, True), (3, 4, True), (2, 9, True), (1, 21, True)]:
        altered = tiles.TileNodes(row, inner[:at] + bytes(32) + inner[at + 32 :], root)
        assert altered.node(height, index) == tiles.subtree(row, index << height, 1 << height)
        assert altered.distrusted == meets
    with pytest.raises(ValueError, match="254 hashes"):
        tiles.TileNodes(row[:64], inner, root)
