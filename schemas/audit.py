"""An audit log entry as the auditor API serves it and `deskbridge audit verify` checks it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import DetailValue, Sha256Hex


class AuditRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    event_id: str
    event_type: str
    occurred_at: str
    recorded_at: str
    actor: str
    agency: str | None
    notice_id: str | None
    case_ref: str | None
    envelope_sha256: Sha256Hex | None
    details: dict[str, DetailValue]
    prev_hash: Sha256Hex
    entry_hash: Sha256Hex


class AuditPage(BaseModel):
    entries: list[AuditRecord]
    next_after: int | None
    head_seq: int
    head_hash: Sha256Hex


HexHash = Sha256Hex  # a Merkle hash (leaf, node or root), lowercase hex


class AuditLeaf(BaseModel):
    """Leaf `index` of the Merkle tree: the entry with seq index + 1. `leaf_hash` is the hash the log
    stored; recompute it from `record` (services/transparency/entries.leaf_data) rather than trust it."""

    index: int
    leaf_hash: str
    record: AuditRecord


class LeafPage(BaseModel):
    size: int = Field(description="The tree's size when the page was read.")
    leaves: list[AuditLeaf]


class TreeNode(BaseModel):
    index: int
    hash: str


class NodePage(BaseModel):
    level: int
    size: int
    nodes: list[TreeNode]


class InclusionProof(BaseModel):
    index: int
    size: int
    proof: list[HexHash]


class ConsistencyProof(BaseModel):
    from_size: int
    to_size: int
    proof: list[HexHash]


class CheckpointItem(BaseModel):
    size: int
    note: str = Field(description="The signed note (C2SP tlog-checkpoint), without cosignatures.")


class CheckpointPage(BaseModel):
    checkpoints: list[CheckpointItem]
    next_after: int | None


class CosignatureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: str = Field(
        max_length=1000, description='One cosignature/v1 line, "\u2014 <agency id> <base64>\\n".'
    )


class AuditBundle(BaseModel):
    """Leaves [start, end) with everything to check them offline against the log's public key: the
    checkpoint they are proved against, an inclusion proof per leaf and, when asked, a consistency
    proof from an earlier size the auditor already trusts."""

    origin: str
    checkpoint: str
    start: int
    end: int
    leaves: list[AuditLeaf]
    inclusion: list[list[HexHash]]
    consistency: ConsistencyProof | None = None
