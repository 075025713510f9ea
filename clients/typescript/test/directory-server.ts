// A signed directory of the vector agencies, as `GET /v1/directory` serves it, and the pin to check it.

import { CompactSign, exportJWK, generateKeyPair } from "jose";

import { thumbprint } from "../src/keys.js";
import { AGENCIES, jwks } from "./vectors.js";

export interface DirectorySigner {
  pin: { kty: string; crv: string; x: string; kid: string; use: string; alg: string };
  /** The body of `GET /v1/directory`, signed `iat` seconds (default: now), with changes to the document. */
  sign(iat?: number, change?: (document: Record<string, unknown>) => void, typ?: string): Promise<object>;
}

export async function directorySigner(): Promise<DirectorySigner> {
  const { privateKey, publicKey } = await generateKeyPair("Ed25519");
  const { x } = await exportJWK(publicKey);
  const kid = await thumbprint("Ed25519", x!);
  return {
    pin: { kty: "OKP", crv: "Ed25519", x: x!, kid, use: "sig", alg: "Ed25519" },
    async sign(iat = Math.floor(Date.now() / 1000), change = () => {}, typ = "deskbridge-directory+jws") {
      const document: Record<string, unknown> = {
        iss: "deskbridge-directory",
        iat,
        agencies: AGENCIES.map((id) => ({
          id,
          name: `${id} name`,
          kind: id === "kr-desk" ? "desk" : "partner",
          keys: jwks(id).keys,
        })),
      };
      change(document);
      const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(document)))
        .setProtectedHeader({ alg: "Ed25519", kid, typ })
        .sign(privateKey);
      return { jws, kid };
    },
  };
}
