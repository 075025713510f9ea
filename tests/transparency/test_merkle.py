"""RFC 9162 Merkle tree: the Certificate Transparency reference vectors, the RFC's own recursive
definitions as an oracle, and properties over every size up to 300. Pure: no I/O, no fixtures.

Vectors copied from transparency-dev/merkle (Apache-2.0), the Go library behind Trillian and Tessera:
  proof/verify_test.go   the eight leaves, the roots of sizes 1..8, the inclusion and consistency proofs
                         and the corruptions its verifier must refuse (corruptInclusionProof,
                         corruptConsistencyProof)
  rfc6962/rfc6962_test.go  the empty root, leaf and node hashes
(the same data as google/certificate-transparency's merkle_tree_test.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.transparency.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryTree,
    consistency_proof,
    inclusion_nodes,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    root_from_nodes,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

LEAVES = [
    b"",
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]
ROOTS = [  # ROOTS[n - 1] is the root of the first n leaves
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
# (index, size, proof); verify_test.go numbers leaves from 1, these from 0.
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


def tree_of(leaf_hashes: Sequence[bytes]) -> MemoryTree:
    tree = MemoryTree()
    for lh in leaf_hashes:
        tree.append(lh)
    return tree


CT_TREE = tree_of([leaf_hash(d) for d in LEAVES])
BIG = 300
BIG_LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(BIG)]  # distinct, so positions are distinct
BIG_TREE = tree_of(BIG_LEAVES)
BIG_ROOTS = [root(BIG_LEAVES[:n]) for n in range(BIG + 1)]


# --- The RFC 9162 2.1 definitions, transcribed recursively over the leaf list: the oracle -----------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return EMPTY_ROOT
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return node_hash(rfc_mth(d[:k]), rfc_mth(d[k:]))


def rfc_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*rfc_path(m, d[:k]), rfc_mth(d[k:])]
    return [*rfc_path(m - k, d[k:]), rfc_mth(d[:k])]


def rfc_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [rfc_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*rfc_subproof(m, d[:k], b), rfc_mth(d[k:])]
    return [*rfc_subproof(m - k, d[k:], False), rfc_mth(d[:k])]


class CountingNodes:
    """get_node over a tree that checks the brief's storage contract: only complete subtrees of the
    size asked for, and few of them."""

    def __init__(self, tree: MemoryTree, size: int) -> None:
        self.tree, self.size, self.reads = tree, size, 0

    def __call__(self, level: int, index: int) -> bytes:
        assert (index + 1) << level <= self.size, f"node {level}/{index} is not complete at size {self.size}"
        self.reads += 1
        return self.tree.get_node(level, index)

    def assert_logarithmic(self) -> None:
        assert self.reads <= 2 * self.size.bit_length() + 1, f"{self.reads} reads at size {self.size}"


# --- Vectors -----------------------------------------------------------------------------------------


def test_rfc6962_hashes() -> None:
    assert h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == EMPTY_ROOT
    assert leaf_hash(b"") == h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert leaf_hash(b"L123456") == h("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    assert node_hash(b"N123", b"N456") == h(
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


@pytest.mark.parametrize("n", range(1, 9))
def test_ct_roots(n: int) -> None:
    leaf_hashes = [leaf_hash(d) for d in LEAVES[:n]]
    assert root(leaf_hashes) == rfc_mth(leaf_hashes) == CT_TREE.root(n) == ROOTS[n - 1]


def test_empty_tree() -> None:
    assert root([]) == MemoryTree().root() == root_from_nodes(0, CT_TREE.get_node) == EMPTY_ROOT


def inclusion_corruptions(
    index: int, size: int, proof: list[bytes], rt: bytes, leaf: bytes
) -> list[tuple[str, tuple[object, ...]]]:
    """transparency-dev/merkle corruptInclusionProof, probe for probe."""
    probes: list[tuple[str, tuple[object, ...]]] = [
        ("index - 1", (leaf, index - 1, size, proof, rt)),
        ("index + 1", (leaf, index + 1, size, proof, rt)),
        ("index ^ 2", (leaf, index ^ 2, size, proof, rt)),
        ("size * 2", (leaf, index, size * 2, proof, rt)),
        ("size // 2", (leaf, index, size // 2, proof, rt)),
        ("wrong leaf", (b"WrongLeaf", index, size, proof, rt)),
        ("empty root", (leaf, index, size, proof, EMPTY_ROOT)),
        ("random root", (leaf, index, size, proof, SOME_HASH)),
        ("trailing garbage", (leaf, index, size, [*proof, b""], rt)),
        ("trailing root", (leaf, index, size, [*proof, rt], rt)),
        ("preceding garbage", (leaf, index, size, [b"", *proof], rt)),
        ("preceding root", (leaf, index, size, [rt, *proof], rt)),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([proof[i][0] ^ 8]) + proof[i][1:]
        probes.append((f"proof[{i}] bit 3", (leaf, index, size, flipped, rt)))
    if proof:
        probes.append(("removed component", (leaf, index, size, proof[:-1], rt)))
    if len(proof) > 1:
        probes.append(("inserted component", (leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], rt)))
    return probes


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_ct_inclusion_proofs(index: int, size: int, proof: list[bytes]) -> None:
    leaf = leaf_hash(LEAVES[index])
    nodes = CountingNodes(CT_TREE, size)
    assert inclusion_proof(index, size, nodes) == proof
    assert verify_inclusion(leaf, index, size, proof, ROOTS[size - 1])
    wrongly_verified = [
        name
        for name, args in inclusion_corruptions(index, size, proof, ROOTS[size - 1], leaf)
        if verify_inclusion(*args)  # type: ignore[arg-type]
    ]
    assert wrongly_verified == []


def consistency_corruptions(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> list[tuple[str, tuple[object, ...]]]:
    """transparency-dev/merkle corruptConsistencyProof, probe for probe."""
    probes: list[tuple[str, tuple[object, ...]]] = [
        ("size1 - 1", (size1 - 1, size2, root1, root2, proof)),
        ("size1 + 1", (size1 + 1, size2, root1, root2, proof)),
        ("size1 ^ 2", (size1 ^ 2, size2, root1, root2, proof)),
        ("size2 * 2", (size1, size2 * 2, root1, root2, proof)),
        ("size2 // 2", (size1, size2 // 2, root1, root2, proof)),
        ("wrong root1", (size1, size2, b"WrongRoot", root2, proof)),
        ("wrong root2", (size1, size2, root1, b"WrongRoot", proof)),
        ("swapped roots", (size1, size2, root2, root1, proof)),
        ("empty proof", (size1, size2, root1, root2, [])),
        ("trailing garbage", (size1, size2, root1, root2, [*proof, b""])),
        ("trailing root1", (size1, size2, root1, root2, [*proof, root1])),
        ("trailing root2", (size1, size2, root1, root2, [*proof, root2])),
        ("preceding garbage", (size1, size2, root1, root2, [b"", *proof])),
        ("preceding root1", (size1, size2, root1, root2, [root1, *proof])),
        ("preceding root2", (size1, size2, root1, root2, [root2, *proof])),
        ("preceding proof[0]", (size1, size2, root1, root2, [proof[0], *proof])),
        ("truncated proof", (size1, size2, root1, root2, proof[:-1])),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([proof[i][0] ^ 16]) + proof[i][1:]
        probes.append((f"proof[{i}] bit 4", (size1, size2, root1, root2, flipped)))
    return probes


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY)
def test_ct_consistency_proofs(size1: int, size2: int, proof: list[bytes]) -> None:
    root1, root2 = ROOTS[size1 - 1], ROOTS[size2 - 1]
    assert consistency_proof(size1, size2, CountingNodes(CT_TREE, size2)) == proof
    assert verify_consistency(size1, size2, root1, root2, proof)
    if proof:  # as in Go: only non-trivial proofs are corrupted
        wrongly_verified = [
            name
            for name, args in consistency_corruptions(size1, size2, root1, root2, proof)
            if verify_consistency(*args)  # type: ignore[arg-type]
        ]
        assert wrongly_verified == []


# transparency-dev/merkle TestVerifyConsistency's fixed cases; (0, n) is stricter here: the old root of
# an empty tree must be the empty root (Go ignores both roots for size 0).
ROOT1, ROOT2 = b"\x01" * 32, b"\x02" * 32


@pytest.mark.parametrize(
    ("size1", "size2", "root1", "root2", "proof", "ok"),
    [
        (0, 0, ROOT1, ROOT2, [], False),
        (1, 1, ROOT1, ROOT2, [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [], True),
        (0, 1, EMPTY_ROOT, ROOT2, [], True),
        (0, 0, ROOT1, ROOT1, [], False),  # Go: True
        (0, 1, ROOT1, ROOT2, [], False),  # Go: True
        (1, 1, ROOT2, ROOT2, [], True),
        (1, 0, ROOT1, ROOT2, [], False),
        (2, 1, ROOT1, ROOT2, [], False),
        (1, 2, ROOT1, ROOT2, [], False),
        (0, 0, EMPTY_ROOT, ROOT2, [], False),
        (1, 1, EMPTY_ROOT, ROOT2, [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
    ],
)
def test_consistency_edge_cases(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes], ok: bool
) -> None:
    assert verify_consistency(size1, size2, root1, root2, proof) is ok


def test_inclusion_edge_cases() -> None:
    """transparency-dev/merkle TestVerifyInclusion and TestVerifyInclusionSingleEntry."""
    single = leaf_hash(b"data")
    assert verify_inclusion(single, 0, 1, [], single)  # a one-leaf tree's root is its leaf hash
    assert not verify_inclusion(single, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], single)
    assert not verify_inclusion(b"", 0, 1, [], b"")
    for index, size in [(0, 0), (0, 1), (1, 0), (2, 1)]:
        assert not verify_inclusion(SOME_HASH, index, size, [], b"")
        assert not verify_inclusion(b"", index, size, [], EMPTY_ROOT)
        assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)


@pytest.mark.parametrize(
    "args",
    [
        (None, 0, 1, [], SOME_HASH),
        (SOME_HASH, -1, 1, [], SOME_HASH),
        (SOME_HASH, 0, -1, [], SOME_HASH),
        (SOME_HASH, True, 2, [SOME_HASH], SOME_HASH),
        (SOME_HASH, 0.0, 1, [], SOME_HASH),
        (SOME_HASH, "0", "1", [], SOME_HASH),
        (SOME_HASH, 0, 2, None, SOME_HASH),
        (SOME_HASH, 0, 2, [None], SOME_HASH),
        (SOME_HASH, 0, 2, [SOME_HASH.hex()], SOME_HASH),
        (SOME_HASH, 0, 2, SOME_HASH, SOME_HASH),  # bytes is a Sequence, of ints
        (SOME_HASH, 0, 2, [bytearray(SOME_HASH)], SOME_HASH),
        (SOME_HASH, 0, 2**70, [SOME_HASH] * 3, SOME_HASH),
    ],
)
def test_verifiers_never_raise(args: tuple[object, ...]) -> None:
    assert verify_inclusion(*args) is False  # type: ignore[arg-type]
    assert verify_consistency(*args) is False  # type: ignore[arg-type]


def test_producers_refuse_impossible_proofs() -> None:
    for index, size in [(0, 0), (8, 8), (-1, 8)]:
        with pytest.raises(ValueError, match="not in a tree"):
            inclusion_proof(index, size, CT_TREE.get_node)
    for old, new in [(5, 4), (-1, 3)]:
        with pytest.raises(ValueError, match="no consistency proof"):
            consistency_proof(old, new, CT_TREE.get_node)
    with pytest.raises(LookupError):
        inclusion_proof(0, 9, CT_TREE.get_node)  # beyond what the store holds
    with pytest.raises(ValueError, match="beyond"):
        CT_TREE.root(9)
    with pytest.raises(ValueError, match="32 bytes"):
        MemoryTree().append(b"short")


# --- Every size: the node-based code against the RFC's recursive definitions ------------------------


def test_memory_tree_roots_every_size() -> None:
    for n in range(BIG + 1):
        nodes = CountingNodes(BIG_TREE, n)
        assert root_from_nodes(n, nodes) == BIG_TREE.root(n) == BIG_ROOTS[n]
        assert nodes.reads <= n.bit_length()
    assert [rfc_mth(BIG_LEAVES[:n]) for n in range(70)] == BIG_ROOTS[:70]


def test_a_compact_range_resumed_from_stored_nodes_completes_what_the_tree_stores() -> None:
    """The one right-edge walk: resumed at any size from the nodes stored so far, it gives the RFC root
    and completes exactly the nodes the full tree holds."""
    for start in range(0, 70):
        edge = CompactRange.from_nodes(start, BIG_TREE.get_node)
        assert edge.root() == BIG_ROOTS[start]
        assert CompactRange.frontier(start) == [
            (level, (start >> level) - 1)
            for level in reversed(range(start.bit_length()))
            if start >> level & 1
        ]
        for index in range(start, min(start + 9, BIG)):
            completed = edge.append(BIG_LEAVES[index])
            assert completed[0] == (0, index, BIG_LEAVES[index])
            assert all(BIG_TREE.get_node(level, idx) == value for level, idx, value in completed)
            # a node completes when its last leaf arrives: (idx + 1) * 2**level - 1 == index
            assert all((idx + 1 << level) - 1 == index for level, idx, _ in completed)
            assert edge.root() == BIG_ROOTS[index + 1] and edge.size == index + 1
    with pytest.raises(ValueError):
        CompactRange(5, [bytes(32)])  # 5 leaves end with two perfect subtrees, not one


def test_every_proof_up_to_64_leaves() -> None:
    for size in range(1, 65):
        leaves = BIG_LEAVES[:size]
        for index in range(size):
            nodes = CountingNodes(BIG_TREE, size)
            proof = inclusion_proof(index, size, nodes)
            nodes.assert_logarithmic()
            assert proof == rfc_path(index, leaves)
            assert verify_inclusion(leaves[index], index, size, proof, BIG_ROOTS[size])
        for old in range(1, size + 1):
            nodes = CountingNodes(BIG_TREE, size)
            proof = consistency_proof(old, size, nodes)
            nodes.assert_logarithmic()
            assert proof == rfc_subproof(old, leaves, True)
            assert verify_consistency(old, size, BIG_ROOTS[old], BIG_ROOTS[size], proof)


@settings(max_examples=2000, deadline=None, database=None)
@given(size=st.integers(1, 2**48), data=st.data())
def test_the_path_read_at_once_is_the_rfc_recursion_at_any_size(size: int, data: st.DataObject) -> None:
    # inclusion_nodes names the path's subtrees before any is read; the RFC's recursion (2.1.3.1), over
    # any store, asks for the same ones and folds them the same way.
    index = data.draw(st.integers(0, size - 1), label="index")

    def node(level: int, idx: int) -> bytes:
        assert (idx + 1) << level <= size
        return hashlib.sha256(b"%d/%d" % (level, idx)).digest()

    def mth(start: int, end: int) -> bytes:  # of a range whose subtrees are complete: fold them
        if end - start == 1 << (end - start).bit_length() - 1 and start % (end - start) == 0:
            return node((end - start).bit_length() - 1, start >> (end - start).bit_length() - 1)
        k = 1 << (end - start - 1).bit_length() - 1
        return node_hash(mth(start, start + k), mth(start + k, end))

    def path(m: int, start: int, end: int) -> list[bytes]:
        if end - start == 1:
            return []
        k = 1 << (end - start - 1).bit_length() - 1
        if m < start + k:
            return [*path(m, start, start + k), mth(start + k, end)]
        return [*path(m, start + k, end), mth(start, start + k)]

    assert inclusion_proof(index, size, node) == path(index, 0, size)
    assert sum(len(hashed) for hashed in inclusion_nodes(index, size)) <= 2 * size.bit_length()


def test_ten_million_leaves_cost_logarithmic_reads() -> None:
    """A tree of identical leaves needs one hash per level, so its nodes exist without 10^7 appends."""
    size = 10**7
    per_level = [leaf_hash(b"same")]
    for _ in range(size.bit_length()):
        per_level.append(node_hash(per_level[-1], per_level[-1]))
    reads = 0

    def get_node(level: int, index: int) -> bytes:
        nonlocal reads
        assert (index + 1) << level <= size
        reads += 1
        return per_level[level]

    rt = root_from_nodes(size, get_node)
    for index in (0, 4_999_999, size - 1):
        reads = 0
        proof = inclusion_proof(index, size, get_node)
        assert reads <= 2 * size.bit_length() + 1
        assert verify_inclusion(per_level[0], index, size, proof, rt)
    reads = 0
    proof = consistency_proof(size - 12345, size, get_node)
    assert reads <= 2 * size.bit_length() + 1
    assert verify_consistency(size - 12345, size, root_from_nodes(size - 12345, get_node), rt, proof)


# --- Properties: random sizes up to 300, every kind of tampering refused -----------------------------


def flip(data: bytes, position: int, mask: int) -> bytes:
    position %= len(data)
    return data[:position] + bytes([data[position] ^ mask]) + data[position + 1 :]


def tamperings(proof: list[bytes], draw: Callable[..., object]) -> list[list[bytes]]:
    """A flipped byte in one element, a dropped first or last element, an element added either end."""
    extra = draw(st.binary(min_size=32, max_size=32))
    assert isinstance(extra, bytes)
    changed = [[extra, *proof], [*proof, extra], [*proof, proof[-1]] if proof else [extra]]
    if proof:
        i = draw(st.integers(0, len(proof) - 1))
        pos, mask = draw(st.integers(0, 31)), draw(st.integers(1, 255))
        assert isinstance(i, int) and isinstance(pos, int) and isinstance(mask, int)
        changed += [proof[:i] + [flip(proof[i], pos, mask)] + proof[i + 1 :], proof[1:], proof[:-1]]
    return changed


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_inclusion_property(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, BIG), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    leaf, rt = BIG_LEAVES[index], BIG_ROOTS[size]
    nodes = CountingNodes(BIG_TREE, size)
    proof = inclusion_proof(index, size, nodes)
    nodes.assert_logarithmic()
    assert verify_inclusion(leaf, index, size, proof, rt)

    for changed in tamperings(proof, data.draw):
        assert not verify_inclusion(leaf, index, size, changed, rt)
    pos, mask = data.draw(st.integers(0, 31)), data.draw(st.integers(1, 255))
    assert not verify_inclusion(flip(leaf, pos, mask), index, size, proof, rt)
    assert not verify_inclusion(leaf, index, size, proof, flip(rt, pos, mask))
    if size > 1:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="wrong index")
        assert not verify_inclusion(leaf, other, size, proof, rt)
    # A wrong size is checked against that size's true root: a proof can fit more than one tree shape
    # (index 0 has the same path in sizes 5 and 6), but never that tree's root.
    wrong = data.draw(st.integers(index + 1, BIG).filter(lambda s: s != size), label="wrong size")
    assert not verify_inclusion(leaf, index, wrong, proof, BIG_ROOTS[wrong])
    assert not verify_inclusion(leaf, index, index, proof, rt)


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_consistency_property(data: st.DataObject) -> None:
    new = data.draw(st.integers(1, BIG), label="new size")
    old = data.draw(st.integers(1, new), label="old size")
    old_root, new_root = BIG_ROOTS[old], BIG_ROOTS[new]
    nodes = CountingNodes(BIG_TREE, new)
    proof = consistency_proof(old, new, nodes)
    nodes.assert_logarithmic()
    assert verify_consistency(old, new, old_root, new_root, proof)
    assert verify_consistency(0, new, EMPTY_ROOT, new_root, [])
    if old == new:
        assert proof == []
        return

    for changed in tamperings(proof, data.draw):
        assert not verify_consistency(old, new, old_root, new_root, changed)
    pos, mask = data.draw(st.integers(0, 31)), data.draw(st.integers(1, 255))
    assert not verify_consistency(old, new, flip(old_root, pos, mask), new_root, proof)
    assert not verify_consistency(old, new, old_root, flip(new_root, pos, mask), proof)
    assert not verify_consistency(new, old, new_root, old_root, proof)
    wrong_old = data.draw(st.integers(1, new).filter(lambda s: s != old), label="wrong old size")
    assert not verify_consistency(wrong_old, new, BIG_ROOTS[wrong_old], new_root, proof)
    wrong_new = data.draw(st.integers(old, BIG).filter(lambda s: s != new), label="wrong new size")
    assert not verify_consistency(old, wrong_new, old_root, BIG_ROOTS[wrong_new], proof)


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert a != b
    assert node_hash(a, b) != leaf_hash(a + b) != node_hash(b, a)
    assert leaf_hash(b"") != EMPTY_ROOT == hashlib.sha256().digest()
