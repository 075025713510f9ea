/** The evidence bundle of one notice checked in the browser against nothing but the pinned log key: the
 * same checks, in the same order and the same words, as `deskbridge evidence verify`
 * (services/evidence/checks.py; docs/audit.md, "Evidence bundles", lists them). */

import { calculateJwkThumbprint, compactVerify, decodeProtectedHeader } from "jose";

import {
  EVIDENCE_FORMAT,
  type EvidenceBundle,
  type EvidenceCheck,
  type EvidenceEvent,
  type EvidenceKey,
  type EvidenceReceipt,
  type EvidenceReport,
} from "./bundle";
import { type Bytes, fromBase64Url, sha256, toHex, utf8 } from "./bytes";
import {
  type Checkpoint,
  NoteError,
  type NoteVerifier,
  SIG_COSIGNATURE_V1,
  SIG_ED25519,
  cosignatureTime,
  leafHash,
  noteVerifier,
  openLogCheckpoint,
  parseCheckpoint,
  parseNote,
  parseVkey,
  verifyInclusion,
  verifyNoteSignature,
} from "./tlog";

const RECEIPT_TYP = "deskbridge-receipt+jws";
const RECEIPT_ALGORITHMS = ["Ed25519", "EdDSA"]; // EdDSA: deprecated by RFC 9864, still accepted
const LAST_UNIX_SECOND = 253_402_300_799; // the end of year 9999, as services/envelope/receipts.py
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Key {
  entry: EvidenceKey;
  raw: Bytes;
  key: CryptoKey;
}

const pass = (check: string, detail: string): EvidenceCheck => ({ check, ok: true, detail });
const fail = (check: string, detail: string): EvidenceCheck => ({ check, ok: false, detail });

function time(t: number | bigint): string {
  if (t < 0 || t > LAST_UNIX_SECOND) return `${t} s`;
  return new Date(Number(t) * 1000).toISOString().replace(".000Z", "Z");
}

function validAt(key: EvidenceKey, t: number | bigint): boolean {
  if (key.revoked_at !== null && key.revoked_at <= t) return false;
  return key.nbf <= t && (key.exp === null || t <= key.exp);
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Every check of docs/audit.md, in its order; `ok` when every one passed. */
export async function verifyEvidence(bundle: EvidenceBundle, vkey: string): Promise<EvidenceReport> {
  const checks: EvidenceCheck[] = [];
  try {
    checks.push(format(bundle));
    let log: NoteVerifier | null = null;
    try {
      log = await parseVkey(vkey);
      if (log.type !== SIG_ED25519) throw new NoteError("it is a cosignature key, not a log key");
    } catch (error) {
      log = null;
      checks.push(fail("checkpoint signature", `the pinned log key is not usable: ${message(error)}`));
    }
    const checkpoint = await checkpointChecks(bundle, log, checks);
    const keys = await keyChecks(bundle.directory.keys, checks);
    checks.push(...(await cosignatures(bundle.checkpoint, log?.name ?? bundle.origin, keys)));
    checks.push(...(await eventChecks(bundle, checkpoint)));
    checks.push(...(await leaves("key event", bundle.directory.events, checkpoint)));
    checks.push(...registrations(bundle, keys));
    checks.push(...(await receipts(bundle, keys)));
    checks.push(sender(bundle, keys));
  } catch (error) {
    checks.push(fail("bundle", `the file is not an evidence bundle: ${message(error)}`));
  }
  return { ok: checks.every((c) => c.ok), checks };
}

function format(bundle: EvidenceBundle): EvidenceCheck {
  if (bundle.format === EVIDENCE_FORMAT) return pass("format", `the bundle is ${EVIDENCE_FORMAT}`);
  return fail("format", `the bundle's format is '${bundle.format}', not ${EVIDENCE_FORMAT}`);
}

/** Its signature by the pinned key, then its size and origin against the bundle's. A checkpoint whose
 * signature fails is still read, so that every other check is reported against its root. */
async function checkpointChecks(
  bundle: EvidenceBundle,
  log: NoteVerifier | null,
  checks: EvidenceCheck[],
): Promise<Checkpoint | null> {
  let checkpoint: Checkpoint | null = null;
  if (log !== null) {
    const pinned = `${log.name}+${toHex(log.keyId)}`;
    try {
      checkpoint = await openLogCheckpoint(bundle.checkpoint, log);
      checks.push(
        pass("checkpoint signature", `checkpoint ${checkpoint.size} is signed by the pinned log key ${pinned}`),
      );
    } catch (error) {
      const detail = `checkpoint signature does not verify with the pinned log key ${pinned} (${message(error)})`;
      checks.push(fail("checkpoint signature", detail));
    }
  }
  if (checkpoint === null) {
    try {
      checkpoint = parseCheckpoint(parseNote(bundle.checkpoint).body);
    } catch {
      checkpoint = null;
    }
  }
  if (checkpoint === null) {
    checks.push(fail("tree size", "the checkpoint does not parse: no root to check against"));
  } else if (checkpoint.size !== bundle.tree_size || checkpoint.origin !== bundle.origin) {
    const detail =
      `the bundle says tree size ${bundle.tree_size} of ${bundle.origin}, its checkpoint ` +
      `${checkpoint.size} of ${checkpoint.origin}`;
    checks.push(fail("tree size", detail));
  } else {
    checks.push(pass("tree size", `the bundle's tree size ${bundle.tree_size} is its checkpoint's`));
  }
  return checkpoint;
}

/** The bundle's keys that are Ed25519 public keys named by their own thumbprint, by kid. */
async function keyChecks(entries: readonly EvidenceKey[], checks: EvidenceCheck[]): Promise<Map<string, Key>> {
  const keys = new Map<string, Key>();
  for (const entry of entries) {
    const what = `key ${entry.agency}/${entry.kid}: public key`;
    const { kty, crv, x } = entry.jwk;
    const raw = typeof x === "string" ? fromBase64Url(x) : null;
    let key: CryptoKey;
    let thumbprint: string;
    try {
      if (kty !== "OKP" || crv !== "Ed25519" || "d" in entry.jwk || raw === null || raw.length !== 32) {
        throw new Error("not an Ed25519 public JWK");
      }
      key = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
      thumbprint = await calculateJwkThumbprint({ kty, crv, x });
    } catch {
      checks.push(fail(what, `key ${entry.kid} of ${entry.agency} is not an Ed25519 public JWK`));
      continue;
    }
    if (entry.use !== "sig" || thumbprint !== entry.kid || (entry.jwk.kid ?? entry.kid) !== entry.kid) {
      checks.push(fail(what, `key ${entry.kid} of ${entry.agency}: its kid is not its JWK's thumbprint`));
      continue;
    }
    checks.push(pass(what, `key ${entry.kid} of ${entry.agency} is an Ed25519 key named by its thumbprint`));
    if (!keys.has(entry.kid)) keys.set(entry.kid, { entry, raw, key });
  }
  return keys;
}

/** Each witness's cosignature/v1 line, with that agency's key from the bundle's directory. */
async function cosignatures(note: string, logName: string, keys: Map<string, Key>): Promise<EvidenceCheck[]> {
  let parsed;
  try {
    parsed = parseNote(note);
  } catch {
    return []; // the checkpoint check already failed on it
  }
  const checks: EvidenceCheck[] = [];
  for (const sig of parsed.signatures) {
    if (sig.name === logName) continue;
    const what = `cosignature of ${sig.name}`;
    let witness: [EvidenceKey, NoteVerifier] | null = null;
    for (const k of keys.values()) {
      if (k.entry.agency !== sig.name) continue;
      const verifier = await noteVerifier(sig.name, SIG_COSIGNATURE_V1, k.raw);
      if (toHex(verifier.keyId) === toHex(sig.keyId)) {
        witness = [k.entry, verifier];
        break;
      }
    }
    if (witness === null) {
      checks.push(fail(what, `${what}: the bundle holds no key of ${sig.name} that made it`));
      continue;
    }
    const [entry, verifier] = witness;
    const at = cosignatureTime(sig.signature);
    if (!(await verifyNoteSignature(verifier, parsed.body, sig.signature))) {
      checks.push(fail(what, `${what} does not verify with its key ${entry.kid}`));
    } else if (!validAt(entry, at)) {
      checks.push(fail(what, `${what}: key ${entry.kid} was not valid at ${time(at)}`));
    } else {
      checks.push(pass(what, `${what} verifies with key ${entry.kid} (cosigned ${time(at)})`));
    }
  }
  return checks;
}

/** Each leaf against its record, and its inclusion proof against the checkpoint's root. */
async function leaves(
  kind: string,
  events: readonly EvidenceEvent[],
  checkpoint: Checkpoint | null,
): Promise<EvidenceCheck[]> {
  const checks: EvidenceCheck[] = [];
  for (const [i, event] of events.entries()) {
    const what = `${kind} ${i} (${event.record.event_type}, leaf ${event.index})`;
    let leaf: Bytes | null = null;
    try {
      leaf = await leafHash(event.record);
    } catch {
      leaf = null;
    }
    if (leaf === null || toHex(leaf) !== event.leaf_hash) {
      checks.push(fail(`${what}: leaf hash`, `${what}: leaf hash does not match its record`));
    } else if (event.record.seq !== event.index + 1) {
      const detail = `${what}: holds entry ${event.record.seq}, which is leaf ${event.record.seq - 1}`;
      checks.push(fail(`${what}: leaf hash`, detail));
    } else {
      checks.push(pass(`${what}: leaf hash`, `${what}: leaf hash matches its record`));
    }
    const proved =
      leaf !== null &&
      checkpoint !== null &&
      (await verifyInclusion(leaf, event.index, checkpoint.size, event.inclusion_proof, checkpoint.rootHash));
    if (proved && checkpoint !== null) {
      const detail = `${what}: inclusion proof leads to the root of checkpoint ${checkpoint.size}`;
      checks.push(pass(`${what}: inclusion proof`, detail));
    } else {
      const detail = `${what}: inclusion proof does not lead to the checkpoint root`;
      checks.push(fail(`${what}: inclusion proof`, detail));
    }
  }
  return checks;
}

/** The notice's leaves: each one checked, about this notice and its envelope, all in log order. */
async function eventChecks(bundle: EvidenceBundle, checkpoint: Checkpoint | null): Promise<EvidenceCheck[]> {
  const checks = await leaves("event", bundle.events, checkpoint);
  for (const [i, event] of bundle.events.entries()) {
    const record = event.record;
    const what = `event ${i} (${record.event_type}, leaf ${event.index})`;
    let detail: string;
    if (record.notice_id !== bundle.notice_id) {
      detail = `${what}: is about notice ${record.notice_id}, not ${bundle.notice_id}`;
    } else if (record.envelope_sha256 !== null && record.envelope_sha256 !== bundle.envelope_sha256) {
      detail = `${what}: names envelope ${record.envelope_sha256}, not ${bundle.envelope_sha256}`;
    } else if (record.case_ref !== null && record.case_ref !== bundle.case_ref) {
      detail = `${what}: names case ${record.case_ref}, not ${bundle.case_ref}`;
    } else {
      checks.push(pass(`${what}: this notice`, `${what}: is about this notice and envelope`));
      continue;
    }
    checks.push(fail(`${what}: this notice`, detail));
  }
  const indexes = bundle.events.map((e) => e.index);
  if (indexes.length === 0) {
    checks.push(fail("events", "the bundle holds no event of the notice"));
  } else if (indexes.some((index, i) => i > 0 && indexes[i - 1]! >= index)) {
    checks.push(fail("events", "the events are not in log order, or one is there twice"));
  } else {
    checks.push(pass("events", `${indexes.length} events of notice ${bundle.notice_id}, in log order`));
  }
  return checks;
}

/** Each key's registration to its agency is a leaf of the log; a logged revocation is not hidden. */
function registrations(bundle: EvidenceBundle, keys: Map<string, Key>): EvidenceCheck[] {
  const checks: EvidenceCheck[] = [];
  for (const [kid, key] of keys) {
    const what = `key ${key.entry.agency}/${kid}: registered`;
    const logged = bundle.directory.events.filter((e) => e.record.details.kid === kid);
    const registered = logged.find(
      (e) =>
        e.record.event_type === "key.registered" &&
        e.record.agency === key.entry.agency &&
        e.record.details.use === "sig",
    );
    const revoked = logged.find((e) => e.record.event_type === "key.revoked");
    if (registered === undefined) {
      checks.push(fail(what, `key ${kid}: the bundle holds no leaf that registered it to ${key.entry.agency}`));
    } else if (revoked !== undefined && key.entry.revoked_at === null) {
      checks.push(fail(what, `key ${kid}: revoked at leaf ${revoked.index}, but the bundle lists it as not revoked`));
    } else {
      const detail =
        `key ${kid}: registered to ${key.entry.agency} at leaf ${registered.index} ` +
        `(${registered.record.occurred_at})`;
      checks.push(pass(what, detail));
    }
  }
  return checks;
}

/** Each receipt is the one whose hash the recipient's notice.acknowledged leaf holds, signed by a key of
 * that recipient valid when it signed, over this notice and envelope. */
async function receipts(bundle: EvidenceBundle, keys: Map<string, Key>): Promise<EvidenceCheck[]> {
  const acks = new Map<string | null, EvidenceEvent>();
  for (const e of bundle.events) {
    if (e.record.event_type === "notice.acknowledged") acks.set(e.record.agency, e);
  }
  const checks: EvidenceCheck[] = [];
  for (const receipt of bundle.receipts) {
    checks.push(await logged(receipt, acks.get(receipt.agency)));
    checks.push(...(await signed(bundle, receipt, keys)));
  }
  const held = new Set(bundle.receipts.map((r) => r.agency));
  for (const [agency, ack] of acks) {
    if (agency === null || !held.has(agency)) {
      const detail = `receipt of ${agency}: missing, though leaf ${ack.index} logs its acknowledgement`;
      checks.push(fail(`receipt of ${agency}: logged`, detail));
    }
  }
  return checks;
}

async function logged(receipt: EvidenceReceipt, ack: EvidenceEvent | undefined): Promise<EvidenceCheck> {
  const what = `receipt of ${receipt.agency}`;
  const digest = toHex(await sha256(utf8(receipt.receipt)));
  if (ack === undefined) return fail(`${what}: logged`, `${what}: no notice.acknowledged leaf of ${receipt.agency}`);
  if (ack.record.details.receipt_sha256 !== digest) {
    return fail(`${what}: logged`, `${what}: receipt hash differs from the one logged`);
  }
  if (receipt.receipt_sha256 !== digest) {
    return fail(`${what}: logged`, `${what}: its receipt_sha256 is not the receipt's hash`);
  }
  return pass(`${what}: logged`, `${what}: its hash is the one logged at leaf ${ack.index}`);
}

interface ReceiptClaims {
  notice_id: string;
  envelope_sha256: string;
  agency: string;
  iat: number;
}

/** The header and payload of a compact JWS over a receipt, NOT verified, or null. */
function readReceipt(token: string): { kid: string; claims: ReceiptClaims } | null {
  try {
    const header = decodeProtectedHeader(token);
    const parts = token.split(".");
    const payload = parts.length === 3 ? fromBase64Url(parts[1]!) : null;
    if (payload === null) return null;
    const claims: unknown = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(payload));
    if (typeof claims !== "object" || claims === null || Array.isArray(claims)) return null;
    const { notice_id, envelope_sha256, agency, iat, ...extra } = claims as Record<string, unknown>;
    const ok =
      typeof notice_id === "string" &&
      typeof envelope_sha256 === "string" &&
      typeof agency === "string" &&
      Number.isSafeInteger(iat) &&
      (iat as number) >= 0 &&
      (iat as number) <= LAST_UNIX_SECOND &&
      Object.keys(extra).length === 0;
    return ok ? { kid: String(header.kid), claims: { notice_id, envelope_sha256, agency, iat: iat as number } } : null;
  } catch {
    return null;
  }
}

async function signed(bundle: EvidenceBundle, receipt: EvidenceReceipt, keys: Map<string, Key>): Promise<EvidenceCheck[]> {
  const what = `receipt of ${receipt.agency}`;
  const read = readReceipt(receipt.receipt);
  if (read === null) {
    const detail = `${what}: not a compact JWS over a receipt`;
    return [fail(`${what}: signature`, detail), fail(`${what}: content`, detail)];
  }
  const { kid, claims } = read;
  const key = keys.get(kid);
  let signature: EvidenceCheck;
  if (key === undefined) {
    signature = fail(`${what}: signature`, `${what}: signed with key ${kid}, not in the bundle`);
  } else if (key.entry.agency !== receipt.agency) {
    signature = fail(`${what}: signature`, `${what}: signed with key ${kid} of ${key.entry.agency}`);
  } else {
    let verified = false;
    try {
      const result = await compactVerify(receipt.receipt, key.key, { algorithms: RECEIPT_ALGORITHMS });
      verified = result.protectedHeader.typ === RECEIPT_TYP;
    } catch {
      verified = false;
    }
    signature = verified
      ? pass(`${what}: signature`, `${what}: signature verifies with key ${kid}`)
      : fail(`${what}: signature`, `${what}: signature does not verify with key ${kid}`);
  }
  const noticeId = claims.notice_id.toLowerCase();
  const sameNotice = UUID.test(noticeId) && noticeId === bundle.notice_id.toLowerCase();
  let content: EvidenceCheck;
  if (!sameNotice || claims.envelope_sha256 !== bundle.envelope_sha256 || claims.agency !== receipt.agency) {
    content = fail(`${what}: content`, `${what}: names another notice, envelope or agency`);
  } else if (key !== undefined && !validAt(key.entry, claims.iat)) {
    content = fail(`${what}: content`, `${what}: key ${kid} was not valid at ${time(claims.iat)}`);
  } else {
    content = pass(`${what}: content`, `${what}: signed ${time(claims.iat)} over this notice and envelope`);
  }
  return [signature, content];
}

/** The sender's signing keys, for a court that holds the sealed envelope and checks its signature. */
function sender(bundle: EvidenceBundle, keys: Map<string, Key>): EvidenceCheck {
  const submitted = bundle.events.find((e) => e.record.event_type === "notice.submitted");
  if (submitted === undefined || submitted.record.agency === null) {
    return fail("sender key", "the bundle holds no notice.submitted leaf naming the sender");
  }
  const from = submitted.record.agency;
  const kids = [...keys].filter(([, k]) => k.entry.agency === from).map(([kid]) => kid).sort();
  if (kids.length === 0) return fail("sender key", `the bundle holds no signing key of the sender ${from}`);
  return pass("sender key", `${from} sent it (leaf ${submitted.index}); its key(s): ${kids.join(", ")}`);
}
