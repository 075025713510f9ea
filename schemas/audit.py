"""An audit log entry as the auditor API serves it and `deskbridge audit verify` checks it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.directory import valid_at
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


# ---- the evidence bundle of one notice (docs/audit.md, "Evidence bundles") ---------------------------

EVIDENCE_FORMAT = "deskbridge-evidence/v1"


class EvidenceEvent(BaseModel):
    """A leaf of the log with its inclusion proof in the bundle's checkpoint (RFC 9162, nearest the leaf
    first). `leaf_hash` is the hash the log stored; a verifier recomputes it from `record`."""

    model_config = ConfigDict(extra="forbid")

    index: int
    leaf_hash: str = Field(description="Lowercase hex; empty if the log stored none (a verifier says so).")
    record: AuditRecord
    inclusion_proof: list[HexHash]


class EvidenceReceipt(BaseModel):
    """A recipient's signed receipt as deskbridge stored it; its SHA-256 is in the notice.acknowledged
    leaf of that recipient."""

    model_config = ConfigDict(extra="forbid")

    agency: str
    receipt: str = Field(description="Compact JWS (typ deskbridge-receipt+jws), exactly as stored.")
    receipt_sha256: HexHash = Field(description="SHA-256 of the receipt's UTF-8 bytes, lowercase hex.")


class EvidenceKey(BaseModel):
    """A directory key a check needs: a receipt's signer, a witness, the notice's sender."""

    model_config = ConfigDict(extra="forbid")

    agency: str
    kid: str = Field(description="RFC 7638 thumbprint of `jwk`.")
    use: str = Field(description="Always 'sig': every key in a bundle verifies signatures.")
    status: Literal["active", "pending", "expired", "revoked"] = Field(description="As of the export.")
    nbf: int = Field(description="Not valid before (Unix seconds).")
    exp: int | None = Field(description="Not valid after (Unix seconds); none if open-ended.")
    revoked_at: int | None = Field(description="When it was revoked (Unix seconds), if it was.")
    jwk: dict[str, str] = Field(description="The public OKP JWK (Ed25519).")

    def valid_at(self, t: float) -> bool:
        return valid_at(self.nbf, self.exp, self.revoked_at, t)


class EvidenceDirectory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[EvidenceKey]
    events: list[EvidenceEvent] = Field(
        description="The key.registered and key.revoked leaves of those keys, with inclusion proofs: the "
        "log, not the server's word, says which agency registered each key."
    )


class EvidenceBundle(BaseModel):
    """Everything about one notice a court needs to check with no network and only the log's public
    key: every leaf of the notice with its inclusion proof in one signed (and cosigned) checkpoint, the
    recipients' signed receipts the log holds the hashes of, and the directory keys that signed them."""

    model_config = ConfigDict(extra="forbid")

    format: str = Field(default=EVIDENCE_FORMAT, description=f"Always {EVIDENCE_FORMAT!r}.")
    notice_id: str
    case_ref: str | None
    envelope_sha256: Sha256Hex | None = Field(description="SHA-256 of the sealed envelope, lowercase hex.")
    origin: str = Field(description="The log's origin (its key name).")
    checkpoint: str = Field(description="Signed note (C2SP tlog-checkpoint) with its cosignature lines.")
    tree_size: int
    events: list[EvidenceEvent] = Field(
        description="Every leaf of this notice up to tree_size, in log order."
    )
    receipts: list[EvidenceReceipt]
    directory: EvidenceDirectory
