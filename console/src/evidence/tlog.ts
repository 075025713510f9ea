/** The transparency log's formats, checked in the browser (the same rules as services/transparency/):
 *
 *  - leaf hash = SHA-256(0x00 || JCS(record without prev_hash and entry_hash)) (RFC 9162, RFC 8785)
 *  - RFC 9162 section 2.1.3.2 inclusion proof verification
 *  - c2sp.org/signed-note: text, a blank line, "— <name> base64(4-byte key ID || signature)" lines;
 *    vkeys "<name>+<hex key ID>+base64(type || public key)", Ed25519 type 0x01
 *  - c2sp.org/tlog-checkpoint: origin, tree size, base64 root hash, extension lines
 *  - c2sp.org/tlog-cosignature: cosignature/v1, type 0x04, base64(key ID || u64 time || signature) over
 *    "cosignature/v1\ntime <t>\n" + note text
 *
 * Ed25519 and SHA-256 come from WebCrypto (crypto.subtle), in Chromium and Node alike. */

import canonicalize from "canonicalize";

import type { AuditRecord } from "./bundle";
import { type Bytes, concat, equal, fromBase64, fromHex, sha256, utf8 } from "./bytes";

export const HASH_SIZE = 32;
export const SIG_ED25519 = 0x01;
export const SIG_COSIGNATURE_V1 = 0x04;
const MAX_SIGNATURES = 100; // as Go's sumdb/note and services/transparency/note.py
const MAX_TIMESTAMP = 2n ** 63n - 1n;
const SIG_PREFIX = "\u2014 "; // em dash, space

export class NoteError extends Error {}

// ---- the Merkle tree ---------------------------------------------------------------------------------

/** The leaf of an audit record: its JCS without the chain hashes, hashed with the leaf prefix 0x00. */
export async function leafHash(record: AuditRecord): Promise<Bytes> {
  const leaf: Partial<AuditRecord> = { ...record };
  delete leaf.prev_hash;
  delete leaf.entry_hash;
  const text = canonicalize(leaf);
  if (text === undefined) throw new Error("the record has no JSON form");
  return sha256(concat(Uint8Array.of(0), utf8(text)));
}

function nodeHash(left: Uint8Array, right: Uint8Array): Promise<Bytes> {
  return sha256(concat(Uint8Array.of(1), left, right));
}

/** RFC 9162 2.1.3.2, step by step; malformed input is simply not a proof. Indexes are BigInts here:
 * JavaScript's bit operators on numbers stop at 32 bits. */
export async function verifyInclusion(
  leaf: Uint8Array,
  index: number,
  size: number,
  proof: readonly string[],
  root: Uint8Array,
): Promise<boolean> {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size) return false;
  const path = proof.map(fromHex);
  if (![leaf, root, ...path].every((h) => h !== null && h.length === HASH_SIZE)) return false;
  let fn = BigInt(index);
  let sn = BigInt(size - 1);
  let r: Uint8Array = leaf;
  for (const p of path as Bytes[]) {
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      while (fn !== 0n && (fn & 1n) === 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && equal(r, root);
}

// ---- signed notes and checkpoints --------------------------------------------------------------------

/** Encodable as UTF-8 (no lone surrogate) and no ASCII control character but newline. */
function validText(text: string): boolean {
  return !/\p{Cs}/u.test(text) && !/[\u0000-\u0009\u000b-\u001f]/.test(text);
}

function validName(name: string): boolean {
  return name.length > 0 && !name.includes("+") && !/\s/.test(name) && validText(name);
}

export interface NoteSignature {
  name: string;
  keyId: Bytes;
  signature: Bytes; // without the key ID
}

export interface Note {
  body: string; // the signed text, ending with a newline
  signatures: NoteSignature[];
}

/** A signed note split into its text and (unchecked) signatures, or NoteError. */
export function parseNote(text: string): Note {
  if (!validText(text)) throw new NoteError("a note is UTF-8 without control characters other than newline");
  const split = text.lastIndexOf("\n\n");
  if (split < 0 || !text.endsWith("\n") || split + 2 === text.length) {
    throw new NoteError("a note is text, a blank line, then signature lines");
  }
  const lines = text.slice(split + 2, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) throw new NoteError(`more than ${MAX_SIGNATURES} signatures`);
  const signatures = lines.map((line) => {
    const rest = line.startsWith(SIG_PREFIX) ? line.slice(SIG_PREFIX.length) : "";
    const space = rest.indexOf(" ");
    const name = space < 0 ? rest : rest.slice(0, space);
    const raw = space < 0 ? null : fromBase64(rest.slice(space + 1));
    if (!line.startsWith(SIG_PREFIX) || !validName(name) || raw === null || raw.length < 5) {
      throw new NoteError(`not a signature line: ${JSON.stringify(line)}`);
    }
    return { name, keyId: raw.slice(0, 4), signature: raw.slice(4) };
  });
  return { body: text.slice(0, split + 1), signatures };
}

export interface Checkpoint {
  origin: string;
  size: number;
  rootHash: Bytes;
  extensions: string[];
}

/** The note text of a c2sp.org/tlog-checkpoint, or NoteError. */
export function parseCheckpoint(body: string): Checkpoint {
  if (!body.endsWith("\n")) throw new NoteError("a checkpoint ends with a newline");
  const [origin, size, root, ...extensions] = body.slice(0, -1).split("\n");
  if (origin === undefined || size === undefined || root === undefined) {
    throw new NoteError("a checkpoint has an origin, a size and a root hash line");
  }
  if (!/^(?:0|[1-9][0-9]*)$/.test(size) || !Number.isSafeInteger(Number(size))) {
    throw new NoteError(`tree size ${JSON.stringify(size)} is not a plain decimal`);
  }
  const rootHash = fromBase64(root);
  if (rootHash === null || rootHash.length !== HASH_SIZE) throw new NoteError("the root hash is not 32 bytes of base64");
  if ([origin, ...extensions].some((line) => line === "" || !validText(line))) {
    throw new NoteError("the origin and each extension line must be one non-empty line of text");
  }
  return { origin, size: Number(size), rootHash, extensions };
}

// ---- keys and signatures -----------------------------------------------------------------------------

/** SHA-256(name || 0x0A || type || public key)[:4], as signed-note recommends. */
export async function keyId(name: string, type: number, publicKey: Uint8Array): Promise<Bytes> {
  return (await sha256(concat(utf8(name), Uint8Array.of(0x0a, type), publicKey))).slice(0, 4);
}

/** A note verifier: Ed25519 over the note text (type 0x01, a log) or a witness's cosignature/v1 (0x04). */
export interface NoteVerifier {
  name: string;
  type: typeof SIG_ED25519 | typeof SIG_COSIGNATURE_V1;
  keyId: Bytes;
  key: CryptoKey;
}

export async function noteVerifier(
  name: string,
  type: NoteVerifier["type"],
  publicKey: Bytes,
): Promise<NoteVerifier> {
  if (!validName(name)) throw new NoteError(`key name ${JSON.stringify(name)} is not a valid key name`);
  if (publicKey.length !== 32) throw new NoteError("an Ed25519 public key is 32 bytes");
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  return { name, type, keyId: await keyId(name, type, publicKey), key };
}

/** The verifier of a vkey "<name>+<hex key ID>+<base64(type || key)>", refusing a key ID that does not
 * match its name and key. */
export async function parseVkey(text: string): Promise<NoteVerifier> {
  // Split at the first two "+" only: base64 has "+" of its own.
  const [name = "", hexId = "", ...rest] = text.trim().split("+");
  const key = fromBase64(rest.join("+"));
  const id = fromHex(hexId);
  if (!validName(name) || id === null || id.length !== 4 || key === null || key.length === 0) {
    throw new NoteError(`not a verifier key: ${JSON.stringify(text)}`);
  }
  const type = key[0];
  if (key.length !== 33 || (type !== SIG_ED25519 && type !== SIG_COSIGNATURE_V1)) {
    throw new NoteError(`verifier key ${name}+${hexId}: not an Ed25519 or cosignature key`);
  }
  if (!equal(id, await keyId(name, type, key.slice(1)))) {
    throw new NoteError(`verifier key ${name}+${hexId}: the key ID does not match the key`);
  }
  return noteVerifier(name, type, key.slice(1));
}

function ed25519(key: CryptoKey, signature: Bytes, message: Bytes): Promise<boolean> {
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

/** The time a cosignature/v1 claims (POSIX seconds), from its signature without the key ID. */
export function cosignatureTime(signature: Uint8Array): bigint {
  return signature.length < 8 ? -1n : new DataView(signature.buffer, signature.byteOffset, 8).getBigUint64(0);
}

/** Whether `signature` (without its key ID) is the verifier's over the note text `body`. */
export async function verifyNoteSignature(verifier: NoteVerifier, body: string, signature: Bytes): Promise<boolean> {
  if (verifier.type === SIG_ED25519) return ed25519(verifier.key, signature, utf8(body));
  const time = cosignatureTime(signature);
  if (signature.length !== 8 + 64 || time > MAX_TIMESTAMP) return false;
  const message = concat(utf8(`cosignature/v1\ntime ${time}\n`), utf8(body));
  return ed25519(verifier.key, signature.slice(8), message);
}

/** A checkpoint signed by the log's key, with the key's name as its origin; NoteError naming what failed.
 * Signatures by other keys (cosignatures) are left to the caller. */
export async function openLogCheckpoint(text: string, log: NoteVerifier): Promise<Checkpoint> {
  const { body, signatures } = parseNote(text);
  const own = signatures.filter((s) => s.name === log.name && equal(s.keyId, log.keyId));
  if (own.length === 0) throw new NoteError(`the checkpoint is not signed by the log key ${log.name}`);
  for (const sig of own) {
    if (!(await verifyNoteSignature(log, body, sig.signature))) {
      throw new NoteError(`signature by ${log.name} does not verify`);
    }
  }
  const checkpoint = parseCheckpoint(body);
  if (checkpoint.origin !== log.name) {
    throw new NoteError(`checkpoint origin ${JSON.stringify(checkpoint.origin)}, expected ${JSON.stringify(log.name)}`);
  }
  return checkpoint;
}
