// The directory as one signed document (docs/trust.md, services/trust/signed_directory.py): checked
// against the directory key this identity pinned, so the server that hands it out is not trusted.

import { compactVerify, importJWK } from "jose";

import { readJwks, type DirectoryKey } from "./directory.js";
import { PartnerError } from "./errors.js";
import { isRecord } from "./json.js";
import { thumbprint } from "./keys.js";

export const DIRECTORY_TYP = "deskbridge-directory+jws";
/** A directory signed longer ago than this is refused: it could be a replayed old copy. */
export const DIRECTORY_MAX_AGE_S = 600;
const FUTURE_SKEW_S = 300;

export interface DirectoryAgency {
  id: string;
  name: string;
  kind: "desk" | "partner";
  keys: DirectoryKey[];
}

export interface TrustedDirectory {
  /** When the gateway signed it (Unix seconds). */
  iat: number;
  /** The kid of the pinned key that signed it. */
  signedBy: string;
  agencies: DirectoryAgency[];
}

function untrusted(detail: string): PartnerError {
  return new PartnerError(`directory refused: ${detail}`, "directory_untrusted");
}

/** Checks `GET /v1/directory`'s body (`{jws, kid}`) against the pinned public JWK and `now`; the agencies
 * and their keys, every kid recomputed. */
export async function verifyDirectory(
  body: unknown,
  pin: unknown,
  now: Date = new Date(),
): Promise<TrustedDirectory> {
  if (!isRecord(pin) || pin.kty !== "OKP" || pin.crv !== "Ed25519" || typeof pin.x !== "string" || "d" in pin)
    throw new PartnerError("the pinned directory key is not an Ed25519 public JWK", "key_file");
  const pinnedKid = await thumbprint("Ed25519", pin.x);
  if (!isRecord(body) || typeof body.jws !== "string" || typeof body.kid !== "string")
    throw untrusted("the server's answer is not a signed directory");
  if (body.kid !== pinnedKid) throw untrusted(`the directory is signed by ${body.kid}, not by the pinned key`);
  let payload: Uint8Array;
  let typ: unknown;
  try {
    const key = await importJWK({ kty: "OKP", crv: "Ed25519", x: pin.x }, "Ed25519");
    ({ payload, protectedHeader: { typ } } = await compactVerify(body.jws, key, {
      algorithms: ["Ed25519", "EdDSA"],
    }));
  } catch {
    throw untrusted("the directory signature does not verify with the pinned key");
  }
  if (typ !== DIRECTORY_TYP) throw untrusted("the signed document is not a deskbridge directory");
  let document: unknown;
  try {
    document = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    throw untrusted("the signed directory is malformed");
  }
  if (!isRecord(document) || !Number.isSafeInteger(document.iat) || !Array.isArray(document.agencies))
    throw untrusted("the signed directory is malformed");
  const age = now.getTime() / 1000 - (document.iat as number);
  if (age > DIRECTORY_MAX_AGE_S)
    throw untrusted(`the directory was signed ${age.toFixed(0)} s ago; a replayed old copy is refused`);
  if (age < -FUTURE_SKEW_S) throw untrusted("the directory is dated in the future");
  const agencies: DirectoryAgency[] = [];
  for (const entry of document.agencies as unknown[]) {
    if (
      !isRecord(entry) ||
      typeof entry.id !== "string" ||
      typeof entry.name !== "string" ||
      (entry.kind !== "desk" && entry.kind !== "partner")
    )
      throw untrusted("the signed directory is malformed");
    agencies.push({ id: entry.id, name: entry.name, kind: entry.kind, keys: await readJwks(entry.id, entry) });
  }
  return { iat: document.iat as number, signedBy: pinnedKid, agencies };
}

/** Every key of every agency in the directory: what openEnvelope's lookups and sealingKey take. */
export function allKeys(directory: TrustedDirectory): DirectoryKey[] {
  return directory.agencies.flatMap((a) => a.keys);
}
