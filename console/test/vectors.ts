// The envelope test vectors of tests/vectors/ (docs/envelope.md), read as the files are, and what the tests
// build from them: each agency's key file, keyring and directory entries.

import envelope from "../../tests/vectors/envelope.json?raw";
import keysText from "../../tests/vectors/keys.json?raw";
import noticeCanonical from "../../tests/vectors/notice.canonical.json?raw";
import noticeText from "../../tests/vectors/notice.json?raw";
import noticeJws from "../../tests/vectors/notice.jws?raw";
import replyCanonical from "../../tests/vectors/reply.canonical.json?raw";
import replyEnvelope from "../../tests/vectors/reply.envelope.json?raw";
import replyText from "../../tests/vectors/reply.json?raw";
import replyJws from "../../tests/vectors/reply.jws?raw";

import { readJwks, signingKeyIn, type DirectoryKey } from "../src/crypto/directory";
import { importKeyFile, type AgencyKeyring } from "../src/crypto/keys";

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

const KEYS = (JSON.parse(keysText) as { agencies: Record<Agency, { keys: VectorJwk[] }> }).agencies;

export interface Vector {
  notice: Record<string, unknown>;
  canonical: string;
  jws: string;
  envelope: string;
}

export const NOTICE: Vector = {
  notice: JSON.parse(noticeText),
  canonical: noticeCanonical,
  jws: noticeJws,
  envelope,
};
export const REPLY: Vector = {
  notice: JSON.parse(replyText),
  canonical: replyCanonical,
  jws: replyJws,
  envelope: replyEnvelope,
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
