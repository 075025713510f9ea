// Envelopes changed or built wrongly on purpose, to see each refusal. Built with jose directly, so a test
// can put in what sealNotice never would.

import { base64url, CompactSign, FlattenedSign, GeneralEncrypt } from "jose";

import type { DirectoryKey } from "../src/directory.js";
import type { AgencyKeyring } from "../src/keys.js";
import { routingFor, type Notice } from "../src/notice.js";

type Json = Record<string, unknown>;
export const encode = (value: unknown) => base64url.encode(JSON.stringify(value));
export const decode = (text: string) => JSON.parse(new TextDecoder().decode(base64url.decode(text))) as Json;

export function innerJws(payload: string, ring: AgencyKeyring, header: Json = {}): Promise<string> {
  const base = { alg: "Ed25519", kid: ring.signing.kid, typ: "deskbridge-notice+jws", cty: "json" };
  return new CompactSign(new TextEncoder().encode(payload))
    .setProtectedHeader({ ...base, ...header })
    .sign(ring.signing.key);
}

export async function signOuter(jwe: Json, ring: AgencyKeyring, header: Json = {}): Promise<string> {
  const base = { alg: "Ed25519", kid: ring.signing.kid, typ: "deskbridge-envelope+jws" };
  const outer = await new FlattenedSign(new TextEncoder().encode(JSON.stringify(jwe)))
    .setProtectedHeader({ ...base, cty: "deskbridge-notice+jwe", ...header })
    .sign(ring.signing.key);
  return JSON.stringify(outer);
}

export interface Forgery {
  /** The plaintext; by default the notice signed by the sender. */
  inner?: string;
  /** Members added to (or, given as undefined, taken from) the JWE protected header. */
  protectedHeader?: Json;
  outerHeader?: Json;
  /** Sealed with additional authenticated data (RFC 7516 §5.1, step 14). */
  aad?: string;
}

/** An envelope for `notice` from `ring` to two or more `recipients`, with the changes asked for. */
export async function forge(
  notice: Json,
  ring: AgencyKeyring,
  recipients: DirectoryKey[],
  change: Forgery = {},
): Promise<string> {
  const inner = change.inner ?? (await innerJws(JSON.stringify(notice), ring));
  const routing = routingFor(notice as unknown as Notice);
  const base = { enc: "A256GCM", typ: "deskbridge-notice+jwe", cty: "JOSE" };
  const header = { ...base, ...routing, ...change.protectedHeader };
  const sealed = new GeneralEncrypt(new TextEncoder().encode(inner)).setProtectedHeader(
    JSON.parse(JSON.stringify(header)) as Json,
  );
  if (change.aad !== undefined) sealed.setAdditionalAuthenticatedData(new TextEncoder().encode(change.aad));
  for (const r of recipients)
    sealed.addRecipient(r.key).setUnprotectedHeader({ alg: "ECDH-ES+A256KW", kid: r.kid });
  return signOuter((await sealed.encrypt()) as unknown as Json, ring, change.outerHeader);
}

/** The envelope with its outer members changed (not re-signed). */
export function changeOuter(envelope: string, change: (outer: Json) => void): string {
  const outer = JSON.parse(envelope) as Json;
  change(outer);
  return JSON.stringify(outer);
}

/** The envelope with its JWE changed, then re-signed by `ring` if given (so only the JWE's own protection
 * can catch the change) or left with the old, now wrong, signature. */
export async function changeJwe(
  envelope: string,
  change: (jwe: Json) => void,
  ring?: AgencyKeyring,
): Promise<string> {
  const outer = JSON.parse(envelope) as Json;
  const jwe = decode(outer.payload as string);
  change(jwe);
  if (ring) return signOuter(jwe, ring);
  return JSON.stringify({ ...outer, payload: encode(jwe) });
}

/** A base64url string with one character changed to another (the spelling stays canonical). */
export function flip(text: string, at = 10): string {
  const c = text[at] === "A" ? "B" : "A";
  return text.slice(0, at) + c + text.slice(at + 1);
}
