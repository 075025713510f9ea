// The signed receipt a recipient sends with its acknowledgement (services/envelope/receipts.py): the
// agency's own signature over which notice, which envelope bytes, and when.

import { CompactSign } from "jose";

import { PartnerError } from "./errors.js";
import type { AgencyKeyring } from "./keys.js";
import { uuidOf } from "./notice.js";

export const RECEIPT_TYP = "deskbridge-receipt+jws";

/** A compact JWS over `{notice_id, envelope_sha256, agency, iat}`, as the gateway's check_receipt wants it;
 * `envelopeSha256` is Opened.envelopeSha256 of the copy being acknowledged. */
export async function makeReceipt(
  ring: AgencyKeyring,
  noticeId: string,
  envelopeSha256: string,
  now: Date = new Date(),
): Promise<string> {
  const notice_id = uuidOf(noticeId);
  if (notice_id === undefined)
    throw new PartnerError(`"${noticeId}" is not a notice id, so no receipt was signed.`);
  const iat = Math.floor(now.getTime() / 1000);
  const payload = { notice_id, envelope_sha256: envelopeSha256, agency: ring.agency, iat };
  return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader({ alg: "Ed25519", kid: ring.signing.kid, typ: RECEIPT_TYP })
    .sign(ring.signing.key);
}
