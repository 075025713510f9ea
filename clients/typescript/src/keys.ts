// An agency's own key file (`keys.jwks.json`, services/envelope/keys.py) imported into WebCrypto: every
// private key becomes a non-extractable CryptoKey, so no script on the page can read it back out, and the
// private JWK text is dropped once imported.

import { calculateJwkThumbprint } from "jose";

import { PartnerError } from "./errors.js";
import { isRecord } from "./json.js";
import { AGENCY_ID } from "./notice.js";

/** What a partner holds: its Ed25519 signing key and every X25519 key it ever decrypted with. */
export interface AgencyKeyring {
  agency: string;
  /** The current signing key (the last `sig` key of the file); kid = RFC 7638 thumbprint. */
  signing: { kid: string; key: CryptoKey };
  /** Every decryption key by kid, the current and the rotated ones: old notices are sealed to them. */
  decryption: Map<string, CryptoKey>;
}

const KINDS = {
  sig: { crv: "Ed25519", algorithm: "Ed25519", usages: ["sign"] },
  enc: { crv: "X25519", algorithm: "X25519", usages: ["deriveBits"] },
} as const satisfies Record<string, { crv: string; algorithm: string; usages: KeyUsage[] }>;

const NOT_A_KEY_FILE =
  "This file is not a deskbridge key file. Choose the keys.jwks.json your agency's keys were generated into.";

/** The kid of an OKP public key: its RFC 7638 thumbprint (SHA-256), as the directory computes it. */
export function thumbprint(crv: string, x: string): Promise<string> {
  return calculateJwkThumbprint({ kty: "OKP", crv, x }, "sha256");
}

/** Reads a key file's text into a keyring; a PartnerError says what is wrong with the file. */
export async function importKeyFile(text: string): Promise<AgencyKeyring> {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    throw new PartnerError(NOT_A_KEY_FILE);
  }
  if (!isRecord(document) || typeof document.agency !== "string" || !Array.isArray(document.keys))
    throw new PartnerError(NOT_A_KEY_FILE);
  const agency = document.agency;
  if (!AGENCY_ID.test(agency))
    throw new PartnerError(`${NOT_A_KEY_FILE} (Its agency "${agency}" is not an agency id.)`);
  const signing: { kid: string; key: CryptoKey }[] = [];
  const decryption = new Map<string, CryptoKey>();
  for (const [i, jwk] of (document.keys as unknown[]).entries()) {
    const where = `Key ${i + 1} of this key file`;
    if (!isRecord(jwk) || (jwk.use !== "sig" && jwk.use !== "enc"))
      throw new PartnerError(`${where} is not a signing (use "sig") or decryption (use "enc") key.`);
    const kind = KINDS[jwk.use];
    if (jwk.kty !== "OKP" || jwk.crv !== kind.crv || typeof jwk.x !== "string")
      throw new PartnerError(`${where} is not an ${kind.crv} key, as deskbridge's "${jwk.use}" keys are.`);
    if (typeof jwk.d !== "string")
      throw new PartnerError(
        `${where} is a public key only. Import the private key file (keys.jwks.json), not a published key.`,
      );
    let key: CryptoKey;
    try {
      // Only the key material: WebCrypto refuses a JWK whose use or alg it does not expect.
      const material: JsonWebKey = { kty: "OKP", crv: kind.crv, x: jwk.x, d: jwk.d };
      key = await crypto.subtle.importKey("jwk", material, { name: kind.algorithm }, false, [...kind.usages]);
    } catch {
      throw new PartnerError(
        `${where} is damaged (its private and public parts do not belong together), or this runtime ` +
          `cannot use ${kind.crv} keys. Use Node 20.19+, a current Chromium or Firefox, and an untouched key file.`,
      );
    }
    const kid = await thumbprint(kind.crv, jwk.x);
    if (jwk.use === "sig") signing.push({ kid, key });
    else decryption.set(kid, key);
  }
  const current = signing.at(-1);
  if (current === undefined)
    throw new PartnerError(
      "This key file holds no signing key, so nothing could be signed. Choose the full keys.jwks.json.",
    );
  if (decryption.size === 0)
    throw new PartnerError(
      "This key file holds no decryption key, so no notice could be opened. Choose the full keys.jwks.json.",
    );
  return { agency, signing: current, decryption };
}
