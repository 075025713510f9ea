"""Signed tree heads of the audit log: the log's key, checkpoints it signs (C2SP tlog-checkpoint notes,
table tlog_checkpoints), witnesses' cosignatures (tlog_cosignatures), the check that the stored tree
still matches the entries before anything is signed, and the publisher that signs on an interval and on
demand (with the tally of auditor queries it writes to the log), only while its replica holds the lease."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.audit import AuditBundle, CheckpointItem, CheckpointPage, ConsistencyProof
from schemas.events import Event, EventType
from services.envelope.keys import generate_key_file, load_key_file
from services.platform.errors import Error
from services.transparency import merkle, storage, tiles
from services.transparency.entries import ROW, stored_leaf_hash
from services.transparency.lease import Lease, NotLeaseHolder
from services.transparency.models import AuditEntry, TlogCheckpoint, TlogCosignature
from services.transparency.note import (
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
from services.transparency.service import MAX_PAGE, append, leaf_range, leaves
from services.transparency.storage import TreeError, TreeMemory
from services.trust.service import Principal, active_signing_keys

log = structlog.get_logger("audit")
LOG_KEY_FILE = "audit-log.jwk.json"
LOG_VKEY_FILE = "audit-log.vkey"


# ---- the log key ---------------------------------------------------------------------------------


def generate_log_key(path: Path, origin: str) -> NoteSigner:
    """A new audit log key (private JWK, owner-only); its key name is the origin, as C2SP logs do."""
    return NoteSigner(origin, generate_key_file(path, origin))


def load_log_signer(path: Path, origin: str) -> NoteSigner:
    return NoteSigner(origin, load_key_file(path, origin, "an audit log key"))


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
        raise TreeError(f"no checkpoint of size {size}", "checkpoint_not_found")
    if not line.endswith("\n") or line.count("\n") != 1:
        raise NoteError("note_malformed", "a cosignature is one signature line ending with a newline")
    _, cosigners = open_checkpoint(row.note + line, log.name, log, [witness])
    if witness.name not in cosigners:
        raise NoteError("note_unverified", f"the line is not a cosignature by {witness.name}'s key")
    if await session.get(TlogCosignature, (size, witness.name)) is None:
        session.add(TlogCosignature(size=size, witness=witness.name, line=line, created_at=datetime.now(UTC)))


async def checkpoint_row(session: AsyncSession, size: int | None = None) -> TlogCheckpoint:
    """The checkpoint of `size`, or the latest one; TreeError(checkpoint_not_found) if there is none."""
    row = await (latest_checkpoint(session) if size is None else session.get(TlogCheckpoint, size))
    if row is None:
        missing = "no checkpoint has been published yet" if size is None else f"no checkpoint of size {size}"
        raise TreeError(missing, "checkpoint_not_found")
    return row


async def checkpoints_page(session: AsyncSession, after: int, limit: int) -> CheckpointPage:
    """Checkpoints of a size greater than `after`, oldest first."""
    query = (
        select(TlogCheckpoint).where(TlogCheckpoint.size > after).order_by(TlogCheckpoint.size).limit(limit)
    )
    rows = list((await session.execute(query)).scalars())
    return CheckpointPage(
        checkpoints=[CheckpointItem(size=r.size, note=r.note) for r in rows],
        next_after=rows[-1].size if len(rows) == limit else None,
    )


async def cosign(session: AsyncSession, agency: str, size: int, line: str, log: NoteVerifier) -> None:
    """Stores `line` as `agency`'s cosignature over the checkpoint of `size` if one of the agency's active
    signing keys made it (caller commits); CosignatureRefused names why not."""
    witnesses = [CosignatureVerifier(agency, key) for key in await active_signing_keys(session, agency)]
    refusal = "no active signing key of the agency verifies the cosignature"
    for witness in witnesses:
        try:
            await add_cosignature(session, size, witness, line, log)
        except NoteError as exc:
            refusal = f"{exc.code}: {exc}"
            continue
        return
    raise CosignatureRefused(f"cosignature refused: {refusal}")


class CosignatureRefused(Error):
    code = "cosignature_refused"


async def export_bundle(
    session: AsyncSession, start: int, end: int, old: int | None, memory: TreeMemory | None = None
) -> AuditBundle:
    """Leaves [start, end) with the latest checkpoint and every proof (over what `memory` knows), for
    offline checks; with `old`, also the consistency proof from that size."""
    checkpoint = await checkpoint_row(session)
    if end > checkpoint.size:
        raise TreeError(f"leaves up to {end} are not all in the latest checkpoint (size {checkpoint.size})")
    leaf_range(start, end, checkpoint.size, limit=10 * MAX_PAGE)
    served = await leaves(session, start, end)
    inclusion = [
        [p.hex() for p in await storage.inclusion(session, leaf.index, checkpoint.size, memory)]
        for leaf in served
    ]
    consistency = None
    if old is not None:
        proof = await storage.consistency(session, old, checkpoint.size, memory)
        consistency = ConsistencyProof(from_size=old, to_size=checkpoint.size, proof=[p.hex() for p in proof])
    return AuditBundle(
        origin=checkpoint_origin(checkpoint.note),
        checkpoint=await published(session, checkpoint),
        start=start,
        end=end,
        leaves=served,
        inclusion=inclusion,
        consistency=consistency,
    )


# ---- checking the stored tree against the entries ------------------------------------------------


async def _hashes_completed_in(session: AsyncSession, start: int, end: int) -> dict[tuple[int, int], bytes]:
    """The stored hashes leaves [start, end) complete, at the tree levels tiles store (8L): node (l, i)
    completes at leaf (i + 1) * 2**l - 1. One query per tile level."""
    found: dict[tuple[int, int], bytes] = {}
    for level in range(0, end.bit_length(), tiles.HEIGHT):
        low, high = -(-(start + 1) // (1 << level)) - 1, end >> level
        stored = await storage.stored_hashes(session, level // tiles.HEIGHT, low, high)
        found |= {(level, idx): value for idx, value in stored.items()}
    return found


# An entry's columns in entries.ROW's order: the check reads them as they are, without ORM objects.
_COLUMNS = tuple(AuditEntry.__table__.c[name] for name in ROW)


@dataclass
class TreeCheck:
    """The tree rebuilt from the entries themselves (a compact range: O(log n) memory), compared with
    the stored tiles and checkpoints. At start-up it begins at the latest signed checkpoint, checked
    against the stored tiles: the log key signs a size only after this check passed up to it, so that
    signature is the remembered mark and a restart reads only the entries appended since. Extended before
    each signing; a checkpoint is signed only while nothing disagrees."""

    log: NoteVerifier
    problems: list[str] = field(default_factory=list)
    _edge: merkle.CompactRange = field(default_factory=merkle.CompactRange)

    @property
    def size(self) -> int:
        return self._edge.size

    @property
    def healthy(self) -> bool:
        return not self.problems

    def root(self) -> bytes:
        return self._edge.root()

    async def start_at(self, session: AsyncSession, row: TlogCheckpoint) -> None:
        """Takes a signed checkpoint as checked: its signature must verify and the stored tiles must give
        its root (O(log n) hashes from a few tiles)."""
        if not self._check_signature(row):
            return
        try:
            edge = await storage.with_nodes(
                session, lambda get: merkle.CompactRange.from_nodes(row.size, get)
            )
        except TreeError as exc:
            self.problems.append(f"checkpoint {row.size}: {exc}")
            return
        if edge.root() != row.root:
            self.problems.append(f"checkpoint {row.size}: the stored tiles give another root")
            return
        self._edge = edge

    async def extend(self, session: AsyncSession, to_size: int, page: int = 1024) -> None:
        """Reads the entries after the checked size up to `to_size`, page by page."""
        if not self.healthy or to_size <= self.size:
            return
        query = select(TlogCheckpoint).where(TlogCheckpoint.size > self.size, TlogCheckpoint.size <= to_size)
        checkpoints = {c.size: c for c in (await session.execute(query)).scalars()}
        while self.size < to_size:
            start, end = self.size, min(to_size, self.size + page)
            entries = select(*_COLUMNS).where(AuditEntry.seq > start, AuditEntry.seq <= end)
            by_seq = {r.seq: r for r in (await session.execute(entries)).all()}
            stored = await _hashes_completed_in(session, start, end)
            for index in range(start, end):
                row = by_seq.get(index + 1)
                if row is None:
                    self.problems.append(f"leaf {index}: entry {index + 1} is missing from the log")
                    return
                try:
                    leaf = stored_leaf_hash(row)
                except (ValueError, TypeError):
                    self.problems.append(f"leaf {index}: entry {index + 1} is not an entry's data")
                    return
                if stored.get((0, index)) != leaf:
                    self.problems.append(f"leaf {index}: its stored hash does not match entry {index + 1}")
                for level, idx, value in self._edge.append(leaf)[1:]:
                    if level % tiles.HEIGHT == 0 and stored.get((level, idx)) != value:
                        self.problems.append(f"node level {level} index {idx}: does not match the entries")
                if self.size in checkpoints:
                    self._check_checkpoint(checkpoints[self.size])
        try:
            root = await storage.root_at(session, self.size)
        except TreeError as exc:
            self.problems.append(f"tree: {exc}")
            return
        if root != self.root():
            self.problems.append(f"tree: the stored tiles give another root at size {self.size}")

    def _check_signature(self, row: TlogCheckpoint) -> bool:
        try:
            checkpoint, _ = open_checkpoint(row.note, self.log.name, self.log)
        except NoteError as exc:
            self.problems.append(f"checkpoint {row.size}: {exc}")
            return False
        if checkpoint.size != row.size or checkpoint.root_hash != row.root:
            self.problems.append(f"checkpoint {row.size}: its note does not match its row")
            return False
        return True

    def _check_checkpoint(self, row: TlogCheckpoint) -> None:
        if self._check_signature(row) and row.root != self.root():
            self.problems.append(f"checkpoint {row.size}: does not match the tree rebuilt from the entries")


async def check_tree(session: AsyncSession, log: NoteVerifier) -> TreeCheck:
    """The start-up check: from the latest signed checkpoint (checked against the tiles) to the log's
    end, so its cost follows what was appended since that checkpoint, not the log's size."""
    size = await storage.tree_size(session)
    check = TreeCheck(log)
    latest = await _check_not_truncated(session, check, size)
    if latest is not None and latest.size <= size:
        await check.start_at(session, latest)
    await check.extend(session, size)
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
    size = await storage.tree_size(session)
    latest = await _check_not_truncated(session, check, size)
    await check.extend(session, size)
    if not check.healthy:
        raise TreeError(
            "refusing to sign a checkpoint: " + "; ".join(check.problems[:5]), "checkpoint_refused"
        )
    if latest is not None and latest.size >= size:
        return None
    body = Checkpoint(signer.name, size, check.root()).body()
    row = TlogCheckpoint(
        size=size, root=check.root(), note=sign_note(body, [signer]), created_at=datetime.now(UTC)
    )
    session.add(row)
    return row


@dataclass
class AuditorQueries:
    """Reading the log is itself audited, rate-bound so reading never floods the log it reads: requests
    are tallied in memory per caller and written as one auditor.query entry per caller per window,
    naming the routes and how often each was called."""

    window: timedelta
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    _tally: dict[tuple[str, str | None], dict[str, int]] = field(default_factory=dict)

    def record(self, caller: Principal, route: str) -> None:
        routes = self._tally.setdefault((caller.name, caller.agency), {})
        routes[route] = routes.get(route, 0) + 1

    def due(self, now: datetime) -> bool:
        return bool(self._tally) and now - self.started >= self.window

    def drain(self, now: datetime) -> list[Event]:
        """The window's entries, one per caller; the window restarts."""
        events = [
            Event(
                event_id=f"auditor.query:{self.run_id}:{self.started.isoformat()}:{actor}"[:128],
                type=EventType.auditor_query,
                occurred_at=now,
                actor=actor,
                agency=agency,
                details={
                    "since": self.started.isoformat(),
                    "requests": sum(routes.values()),
                    "routes": ",".join(f"{route}={n}" for route, n in sorted(routes.items())),
                },
            )
            for (actor, agency), routes in sorted(self._tally.items())
        ]
        self._tally, self.started = {}, now
        return events


@dataclass
class Publisher:
    """Signs checkpoints on a steady interval when the log grew, and on demand. Refuses to sign while
    the tree rebuilt from the entries disagrees with what is stored (checked at start-up from the latest
    checkpoint on). With a lease, signs only while it holds it, checked again inside the signing
    transaction (fencing). What it appends (the auditor queries' tally) it tells `tree`, its process's
    memory of the tree, once committed."""

    sessions: async_sessionmaker[AsyncSession]
    signer: NoteSigner | None
    queries: AuditorQueries
    lease: Lease | None = None
    tree: TreeMemory = field(default_factory=TreeMemory)
    check: TreeCheck | None = None
    # What it last saw of the log, for the metrics: at start, then at every tick.
    size: int = 0
    newest_checkpoint_at: datetime | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def log_verifier(self) -> NoteVerifier:
        """The log key's public half, which witnesses' cosignatures are checked against."""
        if self.signer is None:
            raise TreeError("the audit service has no log key", "checkpoint_refused")
        return self.signer.verifier()

    async def start(self) -> None:
        await self.look()
        if self.signer is None:
            log.error("no audit log key: checkpoints will not be signed")
            return
        async with self._lock, self.sessions() as session:
            self.check = await check_tree(session, self.signer.verifier())
        if not self.check.healthy:
            log.error(
                "AUDIT TREE DOES NOT MATCH ITS ENTRIES: no checkpoint will be signed",
                problems=self.check.problems,
            )
        else:
            log.info("audit tree checked", size=self.check.size)

    async def flush_queries(self, force: bool = False) -> None:
        now = datetime.now(UTC)
        if not (force or self.queries.due(now)):
            return
        events = self.queries.drain(now)
        if events:
            async with self.sessions() as session:
                growth = await append(session, events, self.tree)
                await session.commit()
            self.tree.committed(growth)

    async def publish(self) -> TlogCheckpoint | None:
        """A new checkpoint if the log grew since the last one; raises TreeError if it cannot sign."""
        if self.signer is None or self.check is None:
            raise TreeError("the audit service has no log key and signs no checkpoints", "checkpoint_refused")
        async with self._lock, self.sessions() as session:
            if self.lease is not None:
                await self.lease.fence(session)
            row = await sign_checkpoint(session, self.signer, self.check)
            await session.commit()
        if row is not None:
            log.info("checkpoint signed", size=row.size, root=row.root.hex())
        return row

    async def look(self) -> None:
        """Reads the log's size and its newest checkpoint's time (two indexed queries)."""
        async with self.sessions() as session:
            self.size = await storage.tree_size(session)
            latest = await latest_checkpoint(session)
        self.newest_checkpoint_at = latest.created_at if latest is not None else None

    async def publish_on_takeover(self) -> None:
        """The first checkpoint of a new holder, at once rather than an interval later."""
        try:
            await self.publish()
        except (TreeError, NotLeaseHolder) as exc:
            log.error("checkpoint refused after the takeover", error=str(exc))

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        refused = False
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            try:
                await self.flush_queries(force=stop.is_set())
                try:
                    if self.lease is None or self.lease.held:  # a standby waits for the lease
                        await self.publish()
                finally:
                    await self.look()
                refused = False
            except NotLeaseHolder:  # lost between the check and the signing; logged by the lease
                pass
            except TreeError as exc:
                if not refused:  # once per episode, not once per tick
                    log.error("checkpoint refused", error=str(exc))
                refused = True
            except Exception:  # the loop outlives a database hiccup; the next tick tries again
                log.exception("checkpoint publishing failed")
