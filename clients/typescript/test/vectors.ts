// The envelope test vectors of tests/vectors/ (docs/envelope.md), read as the files are, and what the tests
// build from them: each agency's key file, keyring and directory entries.

import { readFileSync } from "node:fs";

import { readJwks, signingKeyIn, type DirectoryKey } from "../src/directory.js";
import { importKeyFile, type AgencyKeyring } from "../src/keys.js";

export const AGENCIES = ["kr-desk", "kh-cnp", "interpol-ncb-phnom-penh"] as const;
export type Agency = (typeof AGENCIES)[number];

interface VectorJwk {
  kty: string;
  crv: string;
  x: string;
  d: string;
  kid: string;
  use: "sig" | "enc";
  alg: string;
}

/** A file of tests/vectors/ as text, exactly as committed. */
function vector(name: string): string {
  return readFileSync(new URL(`../../../tests/vectors/${name}`, import.meta.url), "utf8");
}

const KEYS = (JSON.parse(vector("keys.json")) as { agencies: Record<Agency, { keys: VectorJwk[] }> }).agencies;

export interface Vector {
  notice: Record<string, unknown>;
  canonical: string;
  jws: string;
  envelope: string;
}

export const NOTICE: Vector = {
  notice: JSON.parse(vector("notice.json")),
  canonical: vector("notice.canonical.json"),
  jws: vector("notice.jws"),
  envelope: vector("envelope.json"),
};
export const REPLY: Vector = {
  notice: JSON.parse(vector("reply.json")),
  canonical: vector("reply.canonical.json"),
  jws: vector("reply.jws"),
  envelope: vector("reply.envelope.json"),
};

export function jwk(agency: Agency, use: "sig" | "enc"): VectorJwk {
  return KEYS[agency].keys.find((k) => k.use === use)!;
}

/** The agency's keys in the key file format of services/envelope/keys.py (keys.jwks.json). */
export function keyFile(agency: Agency): string {
  return JSON.stringify({ agency, keys: KEYS[agency].keys }, null, 2);
}

export function keyring(agency: Agency): Promise<AgencyKeyring> {
  return importKeyFile(keyFile(agency));
}

/** A JWKS as the directory publishes it: public halves, each with status and validity window. */
export function jwks(agency: Agency, extra: Record<string, unknown> = {}): { keys: object[] } {
  const published = { status: "active", nbf: 1_700_000_000, ...extra };
  return { keys: KEYS[agency].keys.map(({ d: _private, ...pub }) => ({ ...pub, ...published })) };
}

/** Every vector agency's published keys. */
export async function directory(): Promise<DirectoryKey[]> {
  return (await Promise.all(AGENCIES.map((a) => readJwks(a, jwks(a))))).flat();
}

export async function lookup(): Promise<(kid: string) => Promise<DirectoryKey | undefined>> {
  return signingKeyIn(await directory());
}

/** Each addressed agency's current encryption key, as sealNotice wants them. */
export async function recipientsOf(notice: Record<string, unknown>): Promise<DirectoryKey[]> {
  const keys = await directory();
  return (notice.recipients as string[]).map((a) => keys.find((k) => k.agency === a && k.use === "enc")!);
}
