/** The evidence bundle of one notice, format deskbridge-evidence/v1 (docs/audit.md, "Evidence bundles";
 * the JSON Schema is schemas/json/evidence-bundle.schema.json). */

export const EVIDENCE_FORMAT = "deskbridge-evidence/v1";

/** An audit log entry; its leaf is the JCS of every field but prev_hash and entry_hash. */
export interface AuditRecord {
  seq: number;
  event_id: string;
  event_type: string;
  occurred_at: string;
  recorded_at: string;
  actor: string;
  agency: string | null;
  notice_id: string | null;
  case_ref: string | null;
  envelope_sha256: string | null;
  details: Record<string, string | number | boolean | null>;
  prev_hash: string;
  entry_hash: string;
}

/** A leaf of the log with its RFC 9162 inclusion proof in the bundle's checkpoint, nearest the leaf first. */
export interface EvidenceEvent {
  index: number;
  leaf_hash: string;
  record: AuditRecord;
  inclusion_proof: string[];
}

/** A recipient's signed receipt (compact JWS) exactly as stored, and its SHA-256. */
export interface EvidenceReceipt {
  agency: string;
  receipt: string;
  receipt_sha256: string;
}

/** A directory key a check needs; nbf, exp and revoked_at in Unix seconds. */
export interface EvidenceKey {
  agency: string;
  kid: string;
  use: string;
  status: "active" | "pending" | "expired" | "revoked";
  nbf: number;
  exp: number | null;
  revoked_at: number | null;
  jwk: Record<string, string>;
}

export interface EvidenceDirectory {
  keys: EvidenceKey[];
  /** The key.registered and key.revoked leaves of those keys. */
  events: EvidenceEvent[];
}

export interface EvidenceBundle {
  format: string;
  notice_id: string;
  case_ref: string | null;
  envelope_sha256: string | null;
  origin: string;
  /** The signed note (C2SP tlog-checkpoint) with its cosignature lines. */
  checkpoint: string;
  tree_size: number;
  events: EvidenceEvent[];
  receipts: EvidenceReceipt[];
  directory: EvidenceDirectory;
}

/** One check: what was looked at, whether it passed, and what was found, as a sentence. */
export interface EvidenceCheck {
  check: string;
  ok: boolean;
  detail: string;
}

/** Every check in the order docs/audit.md gives; ok only when every one passed. */
export interface EvidenceReport {
  ok: boolean;
  checks: EvidenceCheck[];
}
