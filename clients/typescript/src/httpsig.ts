// HTTP Message Signatures (RFC 9421) as deskbridge wants them on API calls (docs/trust.md "Authenticating
// API calls", services/trust/httpsig.py): label sig1 over ("@method" "@target-uri" "content-digest"),
// with created, keyid (the agency's signing kid), a random nonce and alg="ed25519"; Content-Digest is
// RFC 9530 sha-256, also for an empty body. WebCrypto only: the key stays non-extractable.

import { base64url } from "jose";

import type { AgencyKeyring } from "./keys.js";

const LABEL = "sig1";
const COVERED = ["@method", "@target-uri", "content-digest"];

function base64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

/** The headers that sign a request of `method` to `url` with `body` (empty when there is none). */
export async function signatureHeaders(
  ring: AgencyKeyring,
  method: string,
  url: URL,
  body = "",
  now: Date = new Date(),
): Promise<Record<string, string>> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(body)));
  const contentDigest = `sha-256=:${base64(digest)}:`;
  const nonce = base64url.encode(crypto.getRandomValues(new Uint8Array(16)));
  const created = Math.floor(now.getTime() / 1000);
  const params =
    `(${COVERED.map((c) => `"${c}"`).join(" ")})` +
    `;created=${created};keyid="${ring.signing.kid}";nonce="${nonce}";alg="ed25519"`;
  const base = [
    `"@method": ${method.toUpperCase()}`,
    `"@target-uri": ${url.href}`,
    `"content-digest": ${contentDigest}`,
    `"@signature-params": ${params}`,
  ].join("\n");
  const signature = await crypto.subtle.sign("Ed25519", ring.signing.key, new TextEncoder().encode(base));
  return {
    "Content-Digest": contentDigest,
    "Signature-Input": `${LABEL}=${params}`,
    Signature: `${LABEL}=:${base64(new Uint8Array(signature))}:`,
  };
}
