// An agency's public keys as `GET /v1/directory/agencies/{id}/jwks` lists them (schemas/directory.py
// DirectoryKey): every kid recomputed from the key, the key to seal to picked, a signing key judged at the
// time something was signed. No fetching here: the caller hands in the parsed response body.

import { PartnerError, Refusal } from "./errors.js";
import { isRecord } from "./json.js";
import { thumbprint } from "./keys.js";

export interface PublicOkpJwk {
  kty: "OKP";
  crv: "Ed25519" | "X25519";
  x: string;
}

/** One published key of an agency, its kid checked against its thumbprint. */
export interface DirectoryKey {
  agency: string;
  kid: string;
  use: "sig" | "enc";
  key: PublicOkpJwk;
  /** As of when the directory answered: only an `active` key takes new envelopes. */
  status: "active" | "pending" | "expired" | "revoked";
  /** Not valid before / after (Unix seconds); `exp` absent when open-ended. */
  nbf: number;
  exp?: number;
  /** When it was revoked (Unix seconds), if it was. */
  revokedAt?: number;
}

const CURVE = { sig: "Ed25519", enc: "X25519" } as const;
const STATUSES = ["active", "pending", "expired", "revoked"] as const;

function seconds(value: unknown): value is number {
  return Number.isSafeInteger(value);
}

/** The keys of a JWKS response body for `agency`; a PartnerError if it is not one or a kid is not the
 * thumbprint of its key (a directory that lies about a kid is not used at all). */
export async function readJwks(agency: string, body: unknown): Promise<DirectoryKey[]> {
  const unusable =
    `The directory's answer for ${agency}'s keys is not a key set deskbridge publishes; ` +
    "try again, and tell the desk if it persists.";
  if (!isRecord(body) || !Array.isArray(body.keys)) throw new PartnerError(unusable);
  const keys: DirectoryKey[] = [];
  for (const entry of body.keys as unknown[]) {
    if (!isRecord(entry) || (entry.use !== "sig" && entry.use !== "enc")) throw new PartnerError(unusable);
    const { kid, kty, crv, x, use, status, nbf, exp, revoked_at } = entry;
    const valid =
      typeof kid === "string" &&
      kty === "OKP" &&
      crv === CURVE[use] &&
      typeof x === "string" &&
      !("d" in entry) &&
      STATUSES.includes(status as DirectoryKey["status"]) &&
      seconds(nbf) &&
      (exp == null || seconds(exp)) &&
      (revoked_at == null || seconds(revoked_at));
    if (!valid) throw new PartnerError(unusable);
    if ((await thumbprint(CURVE[use], x as string)) !== kid)
      throw new PartnerError(
        `The directory lists a key of ${agency} under kid ${kid}, which is not that key's thumbprint. ` +
          `None of ${agency}'s keys are used; tell the desk.`,
      );
    keys.push({
      agency,
      kid: kid as string,
      use,
      key: { kty: "OKP", crv: CURVE[use], x: x as string },
      status: status as DirectoryKey["status"],
      nbf: nbf as number,
      ...(exp != null && { exp: exp as number }),
      ...(revoked_at != null && { revokedAt: revoked_at as number }),
    });
  }
  return keys;
}

/** The key to seal a new notice to: the newest `enc` key that is active and inside its nbf/exp now (the
 * directory lists keys in the order they were registered). */
export function sealingKey(
  agency: string,
  keys: readonly DirectoryKey[],
  now: Date = new Date(),
): DirectoryKey {
  const t = now.getTime() / 1000;
  const usable = keys.filter(
    (k) => k.use === "enc" && k.status === "active" && k.nbf <= t && (k.exp === undefined || t <= k.exp),
  );
  const newest = usable.at(-1);
  if (newest === undefined)
    throw new PartnerError(
      `${agency} has no active encryption key in the directory, so nothing can be sealed to it now.`,
    );
  return newest;
}

/** A lookup for openEnvelope: the signing key with this kid among `keys`. */
export function signingKeyIn(
  keys: readonly DirectoryKey[],
): (kid: string) => Promise<DirectoryKey | undefined> {
  return async (kid) => keys.find((k) => k.kid === kid && k.use === "sig");
}

function iso(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toISOString();
}

/** Refuses a signing key for something signed at `at` (microseconds since the epoch) as the Python partner
 * client does (services/cli/client.py): revoked by then is `key_revoked` (a key revoked later still vouches
 * for what it signed before, so old notices keep verifying), outside nbf/exp is `key_not_valid`. */
export function checkSigningKeyAt(key: DirectoryKey, at: bigint): void {
  const micros = (s: number) => BigInt(s) * 1_000_000n;
  if (key.revokedAt !== undefined && micros(key.revokedAt) <= at)
    throw new Refusal("key_revoked", `key ${key.kid} of ${key.agency} was revoked at ${iso(key.revokedAt)}`);
  if (at < micros(key.nbf))
    throw new Refusal("key_not_valid", `key ${key.kid} of ${key.agency} is not valid before ${iso(key.nbf)}`);
  if (key.exp !== undefined && at > micros(key.exp))
    throw new Refusal("key_not_valid", `key ${key.kid} of ${key.agency} expired at ${iso(key.exp)}`);
}
