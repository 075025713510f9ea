"""Signed tree heads of the audit log: the log's key, checkpoints it signs (C2SP tlog-checkpoint notes,
table tlog_checkpoints), witnesses' cosignatures (tlog_cosignatures) and the check that the stored tree
still matches the entries before anything is signed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import OKPKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common import merkle, tlog
from services.common.auditlog import record_leaf_hash, to_record
from services.common.checkpoint import (
    Checkpoint,
    CosignatureVerifier,
    NoteError,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    parse_note,
    sign_note,
    vkey,
)
from services.common.db import AuditEntry, TlogCheckpoint, TlogCosignature, TlogNode
from services.common.keys import KeyFileError, write_owner_only

LOG_KEY_FILE = "audit-log.jwk.json"
LOG_VKEY_FILE = "audit-log.vkey"


# ---- the log key ---------------------------------------------------------------------------------


def generate_log_key(path: Path) -> OKPKey:
    """The audit log's Ed25519 checkpoint key (private JWK, owner-only)."""
    key = OKPKey.generate_key("Ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_owner_only(path, json.dumps({**key.as_dict(private=True), "kid": key.thumbprint()}, indent=2))
    return key


def log_signer(key: OKPKey, origin: str) -> NoteSigner:
    """The log's note signer; its key name is the origin, as C2SP logs conventionally do."""
    private = key.private_key
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError("the audit log key is not an Ed25519 private key")
    return NoteSigner(origin, private)


def load_log_signer(path: Path, origin: str) -> NoteSigner:
    try:
        key = OKPKey.import_key(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise KeyFileError(f"no audit log key at {path}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an audit log key") from exc
    return log_signer(key, origin)


def save_log_vkey(folder: Path, signer: NoteSigner) -> Path:
    """Pins the log's public key in an identity's folder, for `deskbridge audit verify` and witnesses."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOG_VKEY_FILE
    path.write_text(vkey(signer.name, signer.public_key) + "\n")
    return path


# ---- checkpoints and cosignatures ---------------------------------------------------------------


async def latest_checkpoint(session: AsyncSession) -> TlogCheckpoint | None:
    query = select(TlogCheckpoint).order_by(TlogCheckpoint.size.desc()).limit(1)
    return (await session.execute(query)).scalar()


def checkpoint_origin(note: str) -> str:
    body, _ = parse_note(note)
    return Checkpoint.parse(body).origin


async def published(session: AsyncSession, row: TlogCheckpoint) -> str:
    """The checkpoint as served: the log's signed note followed by its witnesses' cosignature lines."""
    query = (
        select(TlogCosignature.line).where(TlogCosignature.size == row.size).order_by(TlogCosignature.witness)
    )
    return row.note + "".join((await session.execute(query)).scalars())


async def add_cosignature(
    session: AsyncSession, size: int, witness: CosignatureVerifier, line: str, log: NoteVerifier
) -> None:
    """Stores a witness's cosignature line over the checkpoint of `size` once it verifies; caller commits."""
    row = await session.get(TlogCheckpoint, size)
    if row is None:
        raise tlog.TreeError(f"no checkpoint of size {size}")
    if not line.endswith("\n") or line.count("\n") != 1:
        raise NoteError("malformed-note", "a cosignature is one signature line ending with a newline")
    _, cosigners = open_checkpoint(row.note + line, log.name, log, [witness])
    if witness.name not in cosigners:
        raise NoteError("unverified", f"the line is not a cosignature by {witness.name}'s key")
    if await session.get(TlogCosignature, (size, witness.name)) is None:
        session.add(TlogCosignature(size=size, witness=witness.name, line=line, created_at=datetime.now(UTC)))


# ---- checking the stored tree against the entries ------------------------------------------------


def _fold(subtrees: list[tuple[int, bytes]]) -> bytes:
    acc = subtrees[-1][1]
    for _, left in reversed(subtrees[:-1]):
        acc = merkle.node_hash(left, acc)
    return acc


async def _nodes_completed_in(session: AsyncSession, start: int, end: int) -> dict[tuple[int, int], bytes]:
    """The stored nodes leaves [start, end) complete: node (L, i) completes at leaf (i + 1) * 2**L - 1."""
    found: dict[tuple[int, int], bytes] = {}
    for level in range(end.bit_length()):
        low, high = -(-(start + 1) // (1 << level)) - 1, (end >> level) - 1
        if low > high:
            continue
        query = select(TlogNode).where(TlogNode.level == level, TlogNode.idx >= low, TlogNode.idx <= high)
        found |= {(n.level, n.idx): n.hash for n in (await session.execute(query)).scalars()}
    return found


@dataclass
class TreeCheck:
    """The tree rebuilt from the entries themselves (a compact range: O(log n) memory), compared with
    the stored leaf hashes, nodes and checkpoints. Built in full at start-up, then extended before each
    signing; a checkpoint is signed only while nothing disagrees."""

    log: NoteVerifier
    size: int = 0
    problems: list[str] = field(default_factory=list)
    _range: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def root(self) -> bytes:
        return _fold(self._range) if self._range else merkle.EMPTY_ROOT

    def _push(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Adds a leaf hash; returns the subtrees it completes as (level, index, hash), itself first."""
        index, level, acc = self.size, 0, leaf
        completed = [(0, index, leaf)]
        while self._range and self._range[-1][0] == level:
            acc = merkle.node_hash(self._range.pop()[1], acc)
            level += 1
            completed.append((level, index >> level, acc))
        self._range.append((level, acc))
        self.size += 1
        return completed

    async def extend(self, session: AsyncSession, to_size: int, page: int = 1000) -> None:
        """Reads the entries after the checked size up to `to_size`, page by page."""
        if not self.healthy or to_size <= self.size:
            return
        query = select(TlogCheckpoint).where(TlogCheckpoint.size > self.size, TlogCheckpoint.size <= to_size)
        checkpoints = {c.size: c for c in (await session.execute(query)).scalars()}
        while self.size < to_size:
            start, end = self.size, min(to_size, self.size + page)
            entries = select(AuditEntry).where(AuditEntry.seq > start, AuditEntry.seq <= end)
            by_seq = {r.seq: r for r in (await session.execute(entries)).scalars()}
            stored = await _nodes_completed_in(session, start, end)
            for index in range(start, end):
                row = by_seq.get(index + 1)
                if row is None:
                    self.problems.append(f"leaf {index}: entry {index + 1} is missing from the log")
                    return
                leaf = record_leaf_hash(to_record(row))
                if stored.get((0, index)) != leaf:
                    self.problems.append(f"leaf {index}: its stored hash does not match entry {index + 1}")
                for level, idx, value in self._push(leaf)[1:]:
                    if stored.get((level, idx)) != value:
                        self.problems.append(f"node level {level} index {idx}: does not match the entries")
                if self.size in checkpoints:
                    self._check_checkpoint(checkpoints[self.size])
        try:
            root = await tlog.root_at(session, self.size)
        except tlog.TreeError as exc:
            self.problems.append(f"tree: {exc}")
            return
        if root != self.root():
            self.problems.append(f"tree: the stored nodes give another root at size {self.size}")

    def _check_checkpoint(self, row: TlogCheckpoint) -> None:
        try:
            checkpoint, _ = open_checkpoint(row.note, self.log.name, self.log)
        except NoteError as exc:
            self.problems.append(f"checkpoint {row.size}: {exc}")
            return
        if checkpoint.size != row.size or checkpoint.root_hash != row.root or row.root != self.root():
            self.problems.append(f"checkpoint {row.size}: does not match the tree rebuilt from the entries")


async def check_tree(session: AsyncSession, log: NoteVerifier) -> TreeCheck:
    """The start-up check: rebuild the whole tree from the entries and compare (O(n), once)."""
    check = TreeCheck(log)
    await _check_not_truncated(session, check, await tlog.tree_size(session))
    await check.extend(session, await tlog.tree_size(session))
    return check


async def _check_not_truncated(session: AsyncSession, check: TreeCheck, size: int) -> TlogCheckpoint | None:
    latest = await latest_checkpoint(session)
    if latest is not None and latest.size > size:
        problem = f"checkpoint {latest.size}: signed {latest.size} leaves but the log has {size} (truncated)"
        if problem not in check.problems:
            check.problems.append(problem)
    return latest


async def sign_checkpoint(
    session: AsyncSession, signer: NoteSigner, check: TreeCheck
) -> TlogCheckpoint | None:
    """Signs a checkpoint at the current size if the tree grew since the last one and still matches its
    entries; the caller commits. Refuses (TreeError) while anything disagrees."""
    size = await tlog.tree_size(session)
    latest = await _check_not_truncated(session, check, size)
    await check.extend(session, size)
    if not check.healthy:
        raise tlog.TreeError("refusing to sign a checkpoint: " + "; ".join(check.problems[:5]))
    if latest is not None and latest.size >= size:
        return None
    body = Checkpoint(signer.name, size, check.root()).body()
    row = TlogCheckpoint(
        size=size, root=check.root(), note=sign_note(body, [signer]), created_at=datetime.now(UTC)
    )
    session.add(row)
    return row
