"""What an auditor's or witness's tool checks, pure (no I/O): served leaves against their hashes and a
signed checkpoint, stored subtree hashes against their children, a checkpoint against the one it
remembers, and an exported bundle against nothing but the log's public key. Every finding is one line
that names what is wrong (which leaf, node or checkpoint; a fork or a rollback)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.audit import AuditBundle, AuditLeaf, AuditRecord
from services.transparency import merkle
from services.transparency.entries import record_leaf_hash, verify_chain
from services.transparency.note import Checkpoint, NoteError, NoteVerifier, open_checkpoint


def open_log_checkpoint(note: str, log: NoteVerifier, what: str) -> Checkpoint:
    """A checkpoint signed by the log's key with the key's name as origin, or NoteError naming `what`."""
    try:
        checkpoint, _ = open_checkpoint(note, log.name, log)
    except NoteError as exc:
        raise NoteError(exc.code, f"{what}: {exc.detail}") from exc
    return checkpoint


def _unhex(value: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        return b""


def compare_checkpoints(old: Checkpoint, new: Checkpoint, proof: Sequence[str] | None) -> list[str]:
    """A later checkpoint must extend the remembered one: smaller is a rollback, same size with another
    root or a consistency proof that fails is a fork. `proof` is the consistency proof old -> new."""
    if new.size < old.size:
        return [
            f"rollback: the latest checkpoint has size {new.size}, "
            f"smaller than the remembered checkpoint of size {old.size}"
        ]
    if new.size == old.size:
        if new.root_hash != old.root_hash:
            return [
                f"fork: two different checkpoints of size {new.size} "
                f"(remembered root {old.root_hash.hex()}, served root {new.root_hash.hex()})"
            ]
        return []
    hashes = [_unhex(p) for p in proof or []]
    if not merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, hashes):
        return [
            f"fork: checkpoint {new.size} is not consistent with the remembered checkpoint {old.size} "
            "(the consistency proof fails)"
        ]
    return []


@dataclass
class LeafCheck:
    """Leaves as served, checked one by one and folded into the tree they make."""

    start: int
    end: int
    problems: list[str] = field(default_factory=list)
    recomputed: merkle.MemoryTree = field(default_factory=merkle.MemoryTree)
    stored: merkle.MemoryTree = field(default_factory=merkle.MemoryTree)
    records: list[AuditRecord] = field(default_factory=list)
    _next: int = -1

    def __post_init__(self) -> None:
        self._next = self.start

    def add(self, leaves: Sequence[AuditLeaf]) -> None:
        for leaf in leaves:
            if leaf.index < self._next or leaf.index >= self.end:
                self.problems.append(f"leaf {leaf.index}: served out of order or out of range")
                continue
            for missing in range(self._next, leaf.index):
                self.problems.append(f"leaf {missing}: missing (entry {missing + 1} is not served)")
            self._next = leaf.index + 1
            if leaf.record.seq != leaf.index + 1:
                self.problems.append(f"leaf {leaf.index}: holds entry {leaf.record.seq} (rows reordered)")
            recomputed = record_leaf_hash(leaf.record)
            stored = _unhex(leaf.leaf_hash)
            if stored != recomputed:
                self.problems.append(f"leaf {leaf.index}: content does not match its stored leaf hash")
            if self.start == 0:
                self.recomputed.append(recomputed)
                self.stored.append(stored if len(stored) == merkle.HASH_SIZE else recomputed)
            self.records.append(leaf.record)

    def finish(self) -> None:
        if self._next < self.end:
            self.problems.append(
                f"log truncated: leaves {self._next}..{self.end - 1} are missing "
                f"(the checkpoint covers {self.end}, the server serves {self._next})"
            )
        first = self.records[0] if self.records else None
        if first is not None:
            start_hash = first.prev_hash if self.start else "0" * 64
            self.problems += [
                f"entry {b.seq}: {b.reason}" for b in verify_chain(self.records, start_hash, first.seq)
            ]

    def check_root(self, checkpoint: Checkpoint, what: str) -> list[str]:
        """The leaves (from 0) must give the checkpoint's root; only meaningful when start is 0."""
        if checkpoint.size > self.recomputed.size:
            return []
        if self.recomputed.root(checkpoint.size) != checkpoint.root_hash:
            return [
                f"{what}: its root does not match the leaves served (leaves before {checkpoint.size} altered)"
            ]
        return []

    def check_nodes(self, level: int, nodes: dict[int, str]) -> list[str]:
        """Stored subtree hashes of one level against the stored hashes of their children."""
        problems = []
        for index in range(self.stored.size >> level):
            expected = self.stored.get_node(level, index)
            served = nodes.get(index)
            if served is None:
                problems.append(f"node level {level} index {index}: missing from the stored tree")
            elif _unhex(served) != expected:
                problems.append(f"node level {level} index {index}: stored hash does not match its children")
        return problems


def check_bundle(bundle: AuditBundle, trusted: Checkpoint, log: NoteVerifier) -> list[str]:
    """An exported range, offline: its checkpoint's signature, how it relates to the checkpoint the
    auditor trusts, every leaf against its hash and its inclusion proof."""
    try:
        checkpoint = open_log_checkpoint(bundle.checkpoint, log, "the bundle's checkpoint")
    except NoteError as exc:
        return [str(exc)]
    problems: list[str] = []
    if trusted.size > checkpoint.size:
        problems.append(
            f"the bundle's checkpoint (size {checkpoint.size}) is older than the given checkpoint "
            f"(size {trusted.size}); export the range again"
        )
    elif trusted.size == checkpoint.size or bundle.consistency is None:
        if trusted.size != checkpoint.size:
            problems.append(
                f"the bundle carries no consistency proof from the given checkpoint {trusted.size}"
            )
        else:
            problems += compare_checkpoints(trusted, checkpoint, None)
    elif bundle.consistency.from_size != trusted.size or bundle.consistency.to_size != checkpoint.size:
        problems.append(
            f"the bundle's consistency proof is from size {bundle.consistency.from_size}, "
            f"not from the given checkpoint {trusted.size}"
        )
    else:
        problems += compare_checkpoints(trusted, checkpoint, bundle.consistency.proof)
    if len(bundle.inclusion) != len(bundle.leaves):
        problems.append("the bundle has not one inclusion proof per leaf")
    leaves = LeafCheck(bundle.start, bundle.end)
    leaves.add(bundle.leaves)
    leaves.finish()
    problems += leaves.problems
    for leaf, proof in zip(bundle.leaves, bundle.inclusion, strict=False):
        hashes = [_unhex(p) for p in proof]
        if not merkle.verify_inclusion(
            record_leaf_hash(leaf.record), leaf.index, checkpoint.size, hashes, checkpoint.root_hash
        ):
            problems.append(f"leaf {leaf.index}: its inclusion proof in checkpoint {checkpoint.size} fails")
    return problems
