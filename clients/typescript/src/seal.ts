// Sealing a notice, byte for byte as docs/envelope.md §4 says: canonical JSON (JCS), inner
// compact JWS, general JSON JWE to every recipient, outer flattened JWS. What sealNotice returns is the body
// of `POST /v1/envelopes`.

import canonicalize from "canonicalize";
import { CompactSign, FlattenedSign, GeneralEncrypt } from "jose";
import type { JWK } from "jose";

import {
  CONTENT_ALG,
  ENVELOPE_TYP,
  KEY_WRAP_ALG,
  SEALED_TYP,
  SIGNED_TYP,
} from "./envelope.js";
import { Refusal } from "./errors.js";
import type { AgencyKeyring } from "./keys.js";
import { noticeProblems, routingFor, type Notice } from "./notice.js";

/** An addressed agency's current encryption key, its kid the key's thumbprint (directory.ts `sealingKey`
 * returns one, checked). */
export interface SealingRecipient {
  agency: string;
  kid: string;
  key: CryptoKey | JWK;
}

function jcs(value: unknown): string {
  const text = canonicalize(value);
  if (text === undefined) throw new TypeError("nothing to canonicalize");
  return text;
}

/** Members whose value is null are left out at every depth, as deskbridge renders a notice (§3). */
function withoutNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutNulls);
  if (typeof value !== "object" || value === null) return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([, v]) => v !== null)
      .map(([k, v]) => [k, withoutNulls(v)]),
  );
}

/** A valid notice with nulls left out; Refusal("malformed") naming the first member that is not valid. */
function checkedNotice(notice: Record<string, unknown>): Notice {
  const problem = noticeProblems(notice)[0];
  if (problem) throw new Refusal("malformed", `the notice is not valid: ${problem.path}: ${problem.message}`);
  return withoutNulls(notice) as Notice;
}

function innerJws(notice: Notice, ring: AgencyKeyring): Promise<string> {
  return new CompactSign(new TextEncoder().encode(jcs(notice)))
    .setProtectedHeader({ alg: "Ed25519", kid: ring.signing.kid, typ: SIGNED_TYP, cty: "json" })
    .sign(ring.signing.key);
}

/** The inner JWS alone (§4.1): the sender's signature over the canonical JSON of the notice. */
export function signNotice(notice: Record<string, unknown>, ring: AgencyKeyring): Promise<string> {
  return innerJws(checkedNotice(notice), ring);
}

/** Seals `notice` from `ring`'s agency to exactly the agencies it addresses, one key each. */
export async function sealNotice(
  notice: Record<string, unknown>,
  ring: AgencyKeyring,
  recipients: readonly SealingRecipient[],
): Promise<string> {
  const checked = checkedNotice(notice);
  if (checked.sender !== ring.agency)
    throw new Refusal(
      "signer_mismatch",
      `the notice's sender is ${checked.sender}, but these are ${ring.agency}'s keys`,
    );
  if (recipients.map((r) => r.agency).sort().join() !== [...checked.recipients].sort().join())
    throw new Refusal("recipient_mismatch", "a key is needed for exactly each addressed agency");

  const inner = await innerJws(checked, ring);
  const sealed = new GeneralEncrypt(new TextEncoder().encode(inner)).setProtectedHeader({
    enc: CONTENT_ALG,
    typ: SEALED_TYP,
    cty: "JOSE",
    ...routingFor(checked),
  });
  // jose puts the ephemeral key (epk) in the per-recipient header only when there are several recipients;
  // with one it would go into the protected header. So a single recipient is sealed to twice and the
  // second entry dropped: the first entry, the content key and the ciphertext do not depend on it.
  const entries = recipients.length === 1 ? [recipients[0]!, recipients[0]!] : recipients;
  for (const r of entries) sealed.addRecipient(r.key).setUnprotectedHeader({ alg: KEY_WRAP_ALG, kid: r.kid });
  const jwe = await sealed.encrypt();
  jwe.recipients = jwe.recipients.slice(0, recipients.length);

  const outer = await new FlattenedSign(new TextEncoder().encode(jcs(jwe)))
    .setProtectedHeader({ alg: "Ed25519", kid: ring.signing.kid, typ: ENVELOPE_TYP, cty: SEALED_TYP })
    .sign(ring.signing.key);
  return jcs(outer);
}
