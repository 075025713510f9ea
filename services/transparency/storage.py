"""The audit log's RFC 9162 Merkle tree in the database: the complete-subtree hashes written with each
append (table tlog_nodes, append-only), and roots and proofs read from them in O(log n) rows.

The maths is merkle.py (pure); this module is its storage and nothing else. What a leaf
is belongs to the log (entries.py), the signed checkpoints to checkpoints.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.platform.errors import Error
from services.transparency import merkle
from services.transparency.models import AuditEntry, TlogNode

T = TypeVar("T")


class TreeError(Error):
    """A proof or checkpoint cannot be served as asked (`tree_range`, `checkpoint_not_found`), or the log
    refuses to sign one (`checkpoint_refused`); the detail says why."""

    code = "tree_range"


# ---- the stored tree -----------------------------------------------------------------------------------


async def read_nodes(session: AsyncSession, coords: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored nodes at these (level, index) coordinates, in one query by primary key."""
    if not coords:
        return {}
    wanted = or_(*(and_(TlogNode.level == level, TlogNode.idx == idx) for level, idx in sorted(coords)))
    rows = (await session.execute(select(TlogNode).where(wanted))).scalars()
    return {(r.level, r.idx): r.hash for r in rows}


async def add_leaves(session: AsyncSession, size: int, leaf_hashes: Sequence[bytes]) -> None:
    """Stores the leaves appended to a tree of `size` and every subtree they complete, in the caller's
    transaction: one read of the right edge, then writes only."""
    if not leaf_hashes:
        return
    frontier = merkle.CompactRange.frontier(size)
    known = await read_nodes(session, set(frontier))
    missing = [coords for coords in frontier if coords not in known]
    if missing:
        raise TreeError(f"the stored tree lacks node(s) {sorted(missing)} of its right edge at size {size}")
    edge = merkle.CompactRange.from_nodes(size, lambda level, idx: known[(level, idx)])
    session.add_all(
        TlogNode(level=level, idx=idx, hash=value)
        for leaf in leaf_hashes
        for level, idx, value in edge.append(leaf)
    )


async def with_nodes(session: AsyncSession, compute: Callable[[merkle.GetNode], T]) -> T:
    """Runs a pure tree function over stored nodes: a dry run learns which nodes it reads (the pattern
    does not depend on hash values), then one query fetches them. O(log n) rows for a root or proof."""
    wanted: set[tuple[int, int]] = set()

    def note(level: int, idx: int) -> bytes:
        wanted.add((level, idx))
        return bytes(merkle.HASH_SIZE)

    compute(note)
    nodes = await read_nodes(session, wanted)

    def get(level: int, idx: int) -> bytes:
        try:
            return nodes[(level, idx)]
        except KeyError:
            raise TreeError(f"the stored tree has no node at level {level} index {idx}") from None

    return compute(get)


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
