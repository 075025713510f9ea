// Opening an envelope (in Node or a browser, WebCrypto only): docs/envelope.md §5, steps 1 to 9 in that order, each failure a
// Refusal with the reason code of §7, the same code services/envelope/service.py gives for the same input.

import { base64url, compactVerify, flattenedDecrypt, flattenedVerify } from "jose";
import type { FlattenedJWE, JWEHeaderParameters } from "jose";

import { checkSigningKeyAt, type DirectoryKey } from "./directory.js";
import { Refusal } from "./errors.js";
import { isRecord } from "./json.js";
import type { AgencyKeyring } from "./keys.js";
import {
  bindingDifferences,
  instantOf,
  noticeProblems,
  routingOf,
  routingProblems,
  ROUTING_MEMBERS,
  type Notice,
  type RoutingHeader,
} from "./notice.js";

export const MAX_ENVELOPE_BYTES = 2 * 1024 * 1024;
export const ENVELOPE_TYP = "deskbridge-envelope+jws";
export const SEALED_TYP = "deskbridge-notice+jwe";
export const SIGNED_TYP = "deskbridge-notice+jws";
export const KEY_WRAP_ALG = "ECDH-ES+A256KW";
export const CONTENT_ALG = "A256GCM";
/** `EdDSA` (RFC 8037) is accepted from older libraries; deskbridge emits `Ed25519` (RFC 9864). */
export const SIGNATURE_ALGS = ["Ed25519", "EdDSA"];

/** The signing key a kid names, from the directory (see directory.ts `signingKeyIn`); `sender` is the
 * agency the routing header names, for a lookup that fetches that agency's keys. */
export type SigningKeyLookup = (kid: string, sender: string) => Promise<DirectoryKey | undefined>;

export interface Signer {
  agency: string;
  kid: string;
}

export interface Opened {
  notice: Notice;
  routing: RoutingHeader;
  /** Who signed the envelope (outer) and the notice (inner): both are the routing sender. */
  outer: Signer;
  inner: Signer;
  /** Which of our decryption keys opened it. */
  recipientKid: string;
  /** Hex SHA-256 of the envelope's UTF-8 bytes as received: what a receipt names. */
  envelopeSha256: string;
}

interface Recipient {
  header: Record<string, unknown>;
  encrypted_key: string;
}

interface GeneralJwe {
  protected: string;
  iv: string;
  ciphertext: string;
  tag: string;
  recipients: Recipient[];
  aad?: string | null;
  unprotected?: Record<string, unknown> | null;
}

/** An envelope read (steps 1 to 3) but not yet trusted: enough to find the signer's key. */
export interface ParsedEnvelope {
  bytes: Uint8Array<ArrayBuffer>;
  outer: { protected: string; payload: string; signature: string };
  outerHeader: Record<string, unknown>;
  kid: string;
  jwe: GeneralJwe;
  jweHeader: Record<string, unknown>;
  routing: RoutingHeader;
}

// ---- reading -------------------------------------------------------------------------------------------

const B64URL = /^[A-Za-z0-9_-]*$/;
const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Only the one canonical spelling of some bytes (§4.4): no padding, no white space, unused bits zero. */
function fromB64url(value: string, what: string): Uint8Array {
  const rest = value.length % 4;
  const last = ALPHABET.indexOf(value.at(-1) ?? "A");
  if (!B64URL.test(value) || rest === 1 || (rest === 2 && last & 0x0f) || (rest === 3 && last & 0x03))
    throw new Refusal("malformed", `${what} is not canonical unpadded base64url`);
  return base64url.decode(value);
}

function jsonObject(bytes: Uint8Array, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(bytes));
  } catch {
    throw new Refusal("malformed", `${what} is not JSON`);
  }
  if (!isRecord(value)) throw new Refusal("malformed", `${what} is not a JSON object`);
  return value;
}

function b64urlMember(value: unknown, what: string): string {
  if (typeof value !== "string" || !B64URL.test(value))
    throw new Refusal("malformed", `${what} is not a base64url string`);
  return value;
}

function exactly(value: Record<string, unknown>, required: string[], optional: string[], what: string): void {
  const extra = Object.keys(value).filter((k) => !required.includes(k) && !optional.includes(k));
  const missing = required.filter((k) => !(k in value));
  if (missing.length) throw new Refusal("malformed", `${what} lacks ${missing.join(", ")}`);
  if (extra.length) throw new Refusal("malformed", `${what} has extra members ${extra.join(", ")}`);
}

function readJwe(value: Record<string, unknown>): GeneralJwe {
  exactly(value, ["protected", "iv", "ciphertext", "tag", "recipients"], ["aad", "unprotected"], "JWE");
  for (const name of ["protected", "iv", "ciphertext", "tag"]) b64urlMember(value[name], `JWE ${name}`);
  if (value.aad != null) b64urlMember(value.aad, "JWE aad");
  if (value.unprotected != null && !isRecord(value.unprotected))
    throw new Refusal("malformed", "JWE unprotected is not an object");
  const recipients = value.recipients;
  if (!Array.isArray(recipients) || recipients.length < 1 || recipients.length > 50)
    throw new Refusal("malformed", "JWE recipients must be a list of 1 to 50 entries");
  for (const entry of recipients as unknown[]) {
    if (!isRecord(entry)) throw new Refusal("malformed", "a JWE recipient is not an object");
    exactly(entry, ["header", "encrypted_key"], [], "a JWE recipient");
    if (!isRecord(entry.header)) throw new Refusal("malformed", "a JWE recipient header is not an object");
    b64urlMember(entry.encrypted_key, "a JWE encrypted_key");
  }
  return value as unknown as GeneralJwe;
}

/** Steps 1 to 3: size, shape, algorithms. Checks form only and trusts nothing. */
export function parseEnvelope(envelope: string): ParsedEnvelope {
  if (LONE_SURROGATE.test(envelope)) throw new Refusal("malformed", "envelope is not valid UTF-8 text");
  const bytes = new TextEncoder().encode(envelope);
  if (bytes.length > MAX_ENVELOPE_BYTES)
    throw new Refusal("oversize", `envelope is ${bytes.length} bytes, the limit is ${MAX_ENVELOPE_BYTES}`);
  const outer = jsonObject(bytes, "envelope");
  exactly(outer, ["payload", "protected", "signature"], [], "envelope");
  for (const name of ["payload", "protected", "signature"]) b64urlMember(outer[name], `envelope ${name}`);
  const { payload, protected: protectedB64, signature } = outer as ParsedEnvelope["outer"];
  const outerHeader = jsonObject(fromB64url(protectedB64, "outer header"), "outer protected header");
  const jwe = readJwe(jsonObject(fromB64url(payload, "envelope payload"), "JWE"));
  const jweHeader = jsonObject(fromB64url(jwe.protected, "JWE protected header"), "JWE protected header");
  const problem = routingProblems(jweHeader)[0];
  if (problem) throw new Refusal("malformed", `routing header ${problem.path}: ${problem.message}`);
  for (const [value, what] of [
    [signature, "envelope signature"],
    [jwe.iv, "JWE iv"],
    [jwe.ciphertext, "JWE ciphertext"],
    [jwe.tag, "JWE tag"],
    ...jwe.recipients.map((r) => [r.encrypted_key, "a JWE encrypted_key"]),
  ] as [string, string][])
    fromB64url(value, what);

  const { alg, kid } = outerHeader;
  if (typeof alg !== "string" || !SIGNATURE_ALGS.includes(alg))
    throw new Refusal("bad_algorithm", `outer signature algorithm ${JSON.stringify(alg)} is not accepted`);
  if (typeof kid !== "string" || !kid) throw new Refusal("malformed", "outer protected header has no kid");
  if (outerHeader.typ !== ENVELOPE_TYP || jweHeader.typ !== SEALED_TYP)
    throw new Refusal("malformed", "envelope typ headers are not deskbridge's");
  if (jweHeader.enc !== CONTENT_ALG)
    throw new Refusal("bad_algorithm", `content encryption must be ${CONTENT_ALG}`);
  if (jwe.recipients.some((r) => r.header.alg !== KEY_WRAP_ALG))
    throw new Refusal("bad_algorithm", `key wrapping must be ${KEY_WRAP_ALG}`);
  const routing = routingOf(jweHeader);
  const flattened = { payload, protected: protectedB64, signature };
  return { bytes, outer: flattened, outerHeader, kid, jwe, jweHeader, routing };
}

// ---- header parameters: the registered JOSE ones (RFC 7515 §4.1, RFC 7516 §4.1, RFC 7518 §4.6) --------

type Valid = (value: unknown) => boolean;
const isString: Valid = (v) => typeof v === "string";
const isUrl: Valid = (v) => typeof v === "string" && /^https?:\/\//.test(v);
const JWS_PARAMS: Record<string, Valid> = {
  alg: isString,
  jku: isUrl,
  jwk: isRecord,
  kid: isString,
  x5u: isUrl,
  x5c: (v) => Array.isArray(v) && v.every(isString),
  x5t: isString,
  "x5t#S256": isString,
  typ: isString,
  cty: isString,
  b64: (v) => v === true, // an unencoded payload (RFC 7797) needs `crit`, which no layer may carry
};
const JWE_PARAMS: Record<string, Valid> = {
  ...JWS_PARAMS,
  enc: isString,
  epk: isRecord,
  apu: isString,
  apv: isString,
  ...Object.fromEntries(ROUTING_MEMBERS.map((name) => [name, () => true])), // typed by routingProblems
};

/** The first header member that is not a registered parameter of `known` (or `crit`, `zip`: nothing here
 * understands them) or that has a value of the wrong kind. */
function unsupportedParameter(
  header: Record<string, unknown>,
  known: Record<string, Valid>,
): string | undefined {
  return Object.keys(header).find((name) => !Object.hasOwn(known, name) || !known[name]!(header[name]));
}

// ---- opening -------------------------------------------------------------------------------------------

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Step 4 and 7: the directory's signing key `kid`, fit for what the routing header says was sent then,
 * and the sender's; its public key to verify with. */
async function senderKey(kid: string, routing: RoutingHeader, lookup: SigningKeyLookup): Promise<CryptoKey> {
  const key = await lookup(kid, routing.sender);
  if (key === undefined || key.use !== "sig")
    throw new Refusal("unknown_key", `${routing.sender} has no signing key ${kid} in the directory`);
  checkSigningKeyAt(key, instantOf(routing.sent_at)!);
  if (key.agency !== routing.sender)
    throw new Refusal("signer_mismatch", `key ${kid} is a key of ${key.agency}, not of ${routing.sender}`);
  try {
    return await crypto.subtle.importKey("jwk", { ...key.key }, { name: "Ed25519" }, false, ["verify"]);
  } catch {
    throw new Refusal("bad_signature", `the directory's key ${kid} is not an Ed25519 public key`);
  }
}

async function decrypt(parsed: ParsedEnvelope, entry: Recipient, key: CryptoKey): Promise<Uint8Array> {
  const { jwe } = parsed;
  if (jwe.aad != null || jwe.unprotected != null)
    throw new Refusal("undecryptable", "the JWE has aad or an unprotected header; deskbridge uses neither");
  const unsupported =
    unsupportedParameter(parsed.jweHeader, JWE_PARAMS) ?? unsupportedParameter(entry.header, JWE_PARAMS);
  if (unsupported !== undefined)
    throw new Refusal("undecryptable", `the JWE header parameter ${unsupported} is not supported`);
  // RFC 7516 §7.2.2: the shared members and our own entry; `protected` unchanged, it is the AAD.
  const flattened: FlattenedJWE = {
    protected: jwe.protected,
    iv: jwe.iv,
    ciphertext: jwe.ciphertext,
    tag: jwe.tag,
    header: entry.header as JWEHeaderParameters,
    encrypted_key: entry.encrypted_key,
  };
  try {
    const { plaintext } = await flattenedDecrypt(flattened, key, {
      keyManagementAlgorithms: [KEY_WRAP_ALG],
      contentEncryptionAlgorithms: [CONTENT_ALG],
    });
    return plaintext;
  } catch {
    throw new Refusal("undecryptable", "the envelope does not decrypt with our key");
  }
}

/** Verifies and decrypts an envelope addressed to `ring`'s agency (docs/envelope.md §5, steps 1 to 9). */
export async function openEnvelope(
  envelope: string,
  ring: AgencyKeyring,
  signingKeyOf: SigningKeyLookup,
): Promise<Opened> {
  const parsed = parseEnvelope(envelope);
  const { routing } = parsed;

  const outerKey = await senderKey(parsed.kid, routing, signingKeyOf);
  const outerUnsupported = unsupportedParameter(parsed.outerHeader, JWS_PARAMS);
  if (outerUnsupported !== undefined)
    throw new Refusal("bad_signature", `the outer header parameter ${outerUnsupported} is not supported`);
  try {
    await flattenedVerify(parsed.outer, outerKey, { algorithms: SIGNATURE_ALGS });
  } catch {
    throw new Refusal("bad_signature", "outer signature does not verify");
  }

  const entry = parsed.jwe.recipients.find(
    (r) => typeof r.header.kid === "string" && ring.decryption.has(r.header.kid),
  );
  if (entry === undefined)
    throw new Refusal("not_a_recipient", "none of the envelope's recipient keys is ours");
  const recipientKid = entry.header.kid as string;
  const plaintext = await decrypt(parsed, entry, ring.decryption.get(recipientKid)!);

  const dot = plaintext.indexOf(0x2e);
  let innerHeaderText: string;
  try {
    innerHeaderText = utf8.decode(dot < 0 ? plaintext : plaintext.subarray(0, dot));
  } catch {
    throw new Refusal("malformed", "inner JWS is not text");
  }
  const innerHeader = jsonObject(fromB64url(innerHeaderText, "inner JWS header"), "inner JWS header");
  const innerKid = innerHeader.kid;
  if (typeof innerKid !== "string") throw new Refusal("malformed", "inner JWS has no kid");
  const innerKey = await senderKey(innerKid, routing, signingKeyOf);

  let payload: Uint8Array;
  try {
    if (unsupportedParameter(innerHeader, JWS_PARAMS) !== undefined) throw new Error("unsupported parameter");
    ({ payload } = await compactVerify(utf8.decode(plaintext), innerKey, { algorithms: SIGNATURE_ALGS }));
  } catch {
    throw new Refusal("bad_signature", "inner signature does not verify");
  }
  let notice: unknown;
  try {
    notice = JSON.parse(utf8.decode(payload));
  } catch {
    throw new Refusal("malformed", "signed notice is not JSON");
  }
  const problem = noticeProblems(notice)[0];
  if (problem)
    throw new Refusal("malformed", `signed notice is not valid: ${problem.path}: ${problem.message}`);

  const differences = bindingDifferences(routing, notice as Notice);
  if (differences.length)
    throw new Refusal(
      "header_mismatch",
      `the routing header differs from the signed notice in ${differences.join(", ")}`,
    );
  return {
    notice: notice as Notice,
    routing,
    outer: { agency: routing.sender, kid: parsed.kid },
    inner: { agency: routing.sender, kid: innerKid },
    recipientKid,
    envelopeSha256: await sha256Hex(parsed.bytes),
  };
}
