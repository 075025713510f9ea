"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing and proofs, section 2.1: pure, no I/O.

Storage layout the proofs read through `get_node(level, index)`: the hash of the complete subtree of
2**level leaves [index * 2**level, (index + 1) * 2**level); level 0 holds the leaf hashes. Those nodes
never change once written, so a store can cache them forever; the right edge of a tree whose size is
not a power of two is recomputed from them, so any root or proof costs O(log n) node reads.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

GetNode = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): where MTH splits D[n]."""
    return 1 << ((n - 1).bit_length() - 1)


def _fold(subtrees: Sequence[bytes]) -> bytes:
    """MTH of a range from its perfect subtrees, left to right in decreasing size."""
    acc = subtrees[-1]
    for left in reversed(subtrees[:-1]):
        acc = node_hash(left, acc)
    return acc


class CompactRange:
    """The right edge of a tree of `size` leaves: its perfect subtrees, largest first, one per set bit of
    the size. All an append ever pairs with, so O(log n) memory for any size (transparency-dev/merkle's
    compact.Range, for ranges that start at leaf 0). Every walk over a growing tree goes through here."""

    def __init__(self, size: int = 0, subtrees: Sequence[bytes] = ()) -> None:
        if len(subtrees) != size.bit_count():
            raise ValueError(f"a tree of {size} leaves ends with {size.bit_count()} perfect subtrees")
        self.size = size
        self._edge = [(level, h) for level, h in zip(_levels(size), subtrees, strict=True)]

    @staticmethod
    def frontier(size: int) -> list[tuple[int, int]]:
        """(level, index) of the perfect subtrees a tree of `size` ends with, largest first."""
        return [(level, (size >> level) - 1) for level in _levels(size)]

    @classmethod
    def from_nodes(cls, size: int, get_node: GetNode) -> CompactRange:
        return cls(size, [get_node(level, index) for level, index in cls.frontier(size)])

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Adds a leaf hash; returns the subtrees it completes as (level, index, hash), itself first."""
        index, level, acc = self.size, 0, leaf
        completed = [(0, index, leaf)]
        while self._edge and self._edge[-1][0] == level:
            acc = node_hash(self._edge.pop()[1], acc)
            level += 1
            completed.append((level, index >> level, acc))
        self._edge.append((level, acc))
        self.size += 1
        return completed

    def root(self) -> bytes:
        return _fold([h for _, h in self._edge]) if self._edge else EMPTY_ROOT


def _levels(size: int) -> list[int]:
    """The levels of the set bits of `size`, highest first."""
    return [level for level in reversed(range(size.bit_length())) if size >> level & 1]


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes, in O(n) time and O(log n) memory."""
    edge = CompactRange()
    for h in leaf_hashes:
        edge.append(h)
    return edge.root()


def _range_hash(start: int, end: int, get_node: GetNode) -> bytes:
    """MTH(D[start:end]) for a range of the RFC recursion: start is a multiple of a power of two that
    is >= end - start, so the range splits into aligned complete subtrees read with get_node."""
    return _fold([get_node(level, index) for level, index in _subtrees(start, end)])


def _subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """The aligned complete subtrees (level, index) such a range splits into, largest first."""
    subtrees: list[tuple[int, int]] = []
    width = end - start
    while width:  # one step per set bit, largest first
        level = width.bit_length() - 1
        subtrees.append((level, start >> level))
        start += 1 << level
        width -= 1 << level
    return subtrees


def root_from_nodes(size: int, get_node: GetNode) -> bytes:
    """MTH(D[size]) read from stored complete subtrees: at most log2(size) + 1 reads."""
    if size < 0:
        raise ValueError(f"tree size {size} is negative")
    return EMPTY_ROOT if size == 0 else _range_hash(0, size, get_node)


def inclusion_proof(index: int, size: int, get_node: GetNode) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 2.1.3.1), nearest the leaf first."""
    return path_hashes(inclusion_nodes(index, size), get_node)


def path_hashes(path: list[list[tuple[int, int]]], get_node: GetNode) -> list[bytes]:
    """The hashes of a path inclusion_nodes named: each the fold of its subtrees."""
    return [_fold([get_node(*node) for node in hashed]) for hashed in path]


def inclusion_nodes(index: int, size: int) -> list[list[tuple[int, int]]]:
    """What PATH(index, D[size]) is made of, without a hash: each of its hashes the MTH of complete
    subtrees (level, index), one subtree but for the right edge's. A store reads them at once, without a
    run over the tree to learn which (transparency-dev/merkle's proof.Inclusion, the RFC's recursion
    unrolled): the siblings up to the `fork`, the highest node on the leaf's path with the same span in
    the tree of `size` as in a perfect tree; the range right of the fork, if any; the left siblings above."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    fork = (index ^ size).bit_length() - 1  # the highest bit where they differ: index 0, size 1
    path = [[(level, (index >> level) ^ 1)] for level in range(fork)]
    end = ((index >> fork) + 1) << fork
    if end < size:
        path.append(_subtrees(end, size))
    path += [
        [(level, (index >> level) ^ 1)] for level in range(fork + 1, size.bit_length()) if index >> level & 1
    ]
    return path


def consistency_proof(old_size: int, new_size: int, get_node: GetNode) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 9162 2.1.4.1); empty when old_size is 0 or equals new_size."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    start, end, whole_old_tree = 0, new_size, True
    while old_size != end:
        k = _split(end - start)
        if old_size - start <= k:
            proof.append(_range_hash(start + k, end, get_node))
            end = start + k
        else:
            proof.append(_range_hash(start, start + k, get_node))
            start += k
            whole_old_tree = False
    if not whole_old_tree:
        # SUBPROOF(m, D[m], false): the verifier does not know this subtree's hash yet.
        proof.append(_range_hash(start, end, get_node))
    proof.reverse()
    return proof


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _are_hashes(*values: object) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)


def _shift_while_even(fn: int, sn: int) -> tuple[int, int]:
    while fn and not fn & 1:
        fn, sn = fn >> 1, sn >> 1
    return fn, sn


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """RFC 9162 2.1.3.2, step by step. Never raises: malformed input is simply not a proof."""
    if not (_is_size(index) and _is_size(size) and index < size):
        return False
    if not (isinstance(proof, Sequence) and _are_hashes(leaf, root_hash, *proof)):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                fn, sn = _shift_while_even(fn, sn)
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and hmac.compare_digest(r, root_hash)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2, step by step, plus the trivial cases the RFC leaves out (old size 0, or equal
    sizes), which must come with an empty proof. Never raises."""
    if not (_is_size(old_size) and _is_size(new_size) and old_size <= new_size):
        return False
    if not (isinstance(proof, Sequence) and _are_hashes(old_root, new_root, *proof)):
        return False
    if old_size == 0:
        # Stricter than transparency-dev/merkle, which ignores the roots here: size 0 has one root.
        empty_ok = new_size > 0 or hmac.compare_digest(new_root, EMPTY_ROOT)
        return not proof and hmac.compare_digest(old_root, EMPTY_ROOT) and empty_ok
    if old_size == new_size:
        return not proof and hmac.compare_digest(old_root, new_root)
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                fn, sn = _shift_while_even(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and hmac.compare_digest(fr, old_root) and hmac.compare_digest(sr, new_root)


class MemoryTree:
    """An append-only tree in memory that stores only complete subtrees, level by level: the reference
    for what a persistent store writes (each append completes at most log2(n) + 1 nodes)."""

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = [[]]
        self._edge = CompactRange()

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, leaf: bytes) -> int:
        """Add a leaf hash (not leaf data); returns its index."""
        if not _are_hashes(leaf):
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes")
        index = self.size
        for level, _, value in self._edge.append(leaf):
            if level == len(self._levels):
                self._levels.append([])
            self._levels[level].append(value)
        return index

    def get_node(self, level: int, index: int) -> bytes:
        if not (0 <= level < len(self._levels) and 0 <= index < len(self._levels[level])):
            raise LookupError(f"no complete subtree at level {level} index {index}")
        return self._levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        """The root at any size up to the current one."""
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is beyond the current size {self.size}")
        return root_from_nodes(size, self.get_node)
