// Envelopes every reader must refuse, each with the reason code of docs/envelope.md §7, and envelopes
// unlike deskbridge's own that must still open. The vitest suite checks openEnvelope on them;
// tests/clients/test_typescript.py checks that services/envelope/service.py does the same.

import { base64url, GeneralEncrypt } from "jose";

import type { ReasonCode } from "../src/errors.js";
import { routingFor, type Notice } from "../src/notice.js";
import { changeJwe, changeOuter, decode, encode, flip, forge, innerJws, signOuter } from "./forge.js";
import { keyring, NOTICE, recipientsOf, REPLY, type Agency } from "./vectors.js";

export interface Tampered {
  name: string;
  code: ReasonCode;
  /** Who tries to open it (default kh-cnp, a recipient of the vector notice). */
  agency?: Agency;
  make: () => Promise<string>;
}

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
type Json = Record<string, unknown>;
const desk = () => keyring("kr-desk");
const cnp = () => keyring("kh-cnp");

function outer(change: (o: Json) => void) {
  return async () => changeOuter(NOTICE.envelope, change);
}

function jweResigned(change: (jwe: Json) => void) {
  return async () => changeJwe(NOTICE.envelope, change, await desk());
}

function forged(change: Parameters<typeof forge>[3]) {
  return async () => forge(NOTICE.notice, await desk(), await recipientsOf(NOTICE.notice), change);
}

function innerSigned(payload: string, header: Json = {}) {
  return async () => forged({ inner: await innerJws(payload, await desk(), header) })();
}

export const TAMPERED: Tampered[] = [
  { name: "2 MiB and a byte", code: "oversize", make: async () => " ".repeat(2 * 1024 * 1024 + 1) },
  { name: "2 MiB in UTF-8 bytes, not characters", code: "oversize", make: async () => "박".repeat(700_000) },
  { name: "not JSON", code: "malformed", make: async () => "{" },
  { name: "a JSON array", code: "malformed", make: async () => "[]" },
  { name: "an unprotected outer header", code: "malformed", make: outer((o) => (o.header = {})) },
  { name: "no signature", code: "malformed", make: outer((o) => delete o.signature) },
  { name: "a padded signature", code: "malformed", make: outer((o) => (o.signature = `${o.signature}==`)) },
  {
    name: "a signature with a non-zero unused bit",
    code: "malformed",
    make: outer((o) => {
      const s = o.signature as string;
      o.signature = s.slice(0, -1) + ALPHABET[ALPHABET.indexOf(s.at(-1)!) + 1];
    }),
  },
  {
    name: "a lone surrogate",
    code: "malformed",
    make: async () => NOTICE.envelope.replace(/}$/, ',"x":"\uD800"}'),
  },
  { name: "a padded JWE tag", code: "malformed", make: jweResigned((jwe) => (jwe.tag = `${jwe.tag}=`)) },
  {
    name: "a JWE tag with a non-zero unused bit",
    code: "malformed",
    make: jweResigned((jwe) => {
      const t = jwe.tag as string;
      jwe.tag = t.slice(0, -1) + ALPHABET[ALPHABET.indexOf(t.at(-1)!) + 1];
    }),
  },
  { name: "no recipients", code: "malformed", make: jweResigned((jwe) => (jwe.recipients = [])) },
  {
    name: "a routing time without offset",
    code: "malformed",
    make: forged({ protectedHeader: { sent_at: "2025-03-31T09:00:00" } }),
  },
  {
    name: "a routing time in the year 10000 in UTC",
    code: "malformed",
    make: forged({ protectedHeader: { sent_at: "9999-12-31T23:00:00-02:00" } }),
  },
  {
    name: "an unknown notice type",
    code: "malformed",
    make: forged({ protectedHeader: { notice_type: "gossip" } }),
  },
  { name: "no routing sender", code: "malformed", make: forged({ protectedHeader: { sender: undefined } }) },
  { name: "an outer typ JWT", code: "malformed", make: forged({ outerHeader: { typ: "JWT" } }) },
  ...["HS256", "none", "ES256"].map(
    (alg): Tampered => ({
      name: `outer alg ${alg}`,
      code: "bad_algorithm",
      make: outer((o) => (o.protected = encode({ ...decode(o.protected as string), alg }))),
    }),
  ),
  {
    name: "content encryption A128GCM",
    code: "bad_algorithm",
    make: forged({ protectedHeader: { enc: "A128GCM" } }),
  },
  {
    name: "a recipient alg ECDH-ES+A128KW",
    code: "bad_algorithm",
    make: jweResigned((jwe) => ((jwe.recipients as { header: Json }[])[0]!.header.alg = "ECDH-ES+A128KW")),
  },
  {
    name: "an outer kid the directory does not know",
    code: "unknown_key",
    make: forged({ outerHeader: { kid: "not-a-kid" } }),
  },
  {
    name: "an altered outer signature",
    code: "bad_signature",
    make: outer((o) => (o.signature = flip(o.signature as string))),
  },
  {
    name: "an altered ciphertext",
    code: "bad_signature",
    make: async () => changeJwe(NOTICE.envelope, (jwe) => (jwe.ciphertext = flip(jwe.ciphertext as string))),
  },
  {
    name: "an outer header parameter nobody registered",
    code: "bad_signature",
    make: forged({ outerHeader: { note: "x" } }),
  },
  {
    name: "an outer signature by another agency",
    code: "signer_mismatch",
    make: async () => signOuter(decode(JSON.parse(NOTICE.envelope).payload as string), await cnp()),
  },
  {
    name: "an envelope sealed to others",
    code: "not_a_recipient",
    agency: "kr-desk",
    make: async () => NOTICE.envelope,
  },
  {
    name: "an altered ciphertext re-signed by the sender",
    code: "undecryptable",
    make: jweResigned((jwe) => (jwe.ciphertext = flip(jwe.ciphertext as string))),
  },
  ...(["iv", "tag", "encrypted_key"] as const).map(
    (member): Tampered => ({
      name: `an altered ${member} re-signed by the sender`,
      code: "undecryptable",
      make: jweResigned((jwe) => {
        if (member === "encrypted_key") {
          for (const r of jwe.recipients as Json[]) r.encrypted_key = flip(r.encrypted_key as string, 2);
        } else jwe[member] = flip(jwe[member] as string, 2);
      }),
    }),
  ),
  {
    name: "a routing header changed and re-signed by the sender",
    code: "undecryptable",
    make: jweResigned((jwe) => {
      jwe.protected = encode({ ...decode(jwe.protected as string), priority: "routine" });
    }),
  },
  {
    name: "a JWE header parameter nobody registered",
    code: "undecryptable",
    make: forged({ protectedHeader: { note: "x" } }),
  },
  { name: "a JWE with aad added", code: "undecryptable", make: jweResigned((jwe) => (jwe.aad = "AAAA")) },
  { name: "a JWE sealed with aad", code: "undecryptable", make: forged({ aad: "extra" }) },
  {
    name: "a JWE with an unprotected header",
    code: "undecryptable",
    make: jweResigned((jwe) => (jwe.unprotected = {})),
  },
  { name: "an inner that is not a JWS", code: "malformed", make: forged({ inner: "not a jws" }) },
  { name: "an inner header that is padded", code: "malformed", make: forged({ inner: "e30=.e30.e30" }) },
  {
    name: "an inner kid the directory does not know",
    code: "unknown_key",
    make: innerSigned(NOTICE.canonical, { kid: "not-a-kid" }),
  },
  {
    name: "an inner signature by another agency",
    code: "signer_mismatch",
    make: async () => forged({ inner: await innerJws(NOTICE.canonical, await cnp()) })(),
  },
  {
    name: "an inner payload swapped under a valid signature",
    code: "bad_signature",
    make: async () => {
      const [header, , signature] = (await innerJws(NOTICE.canonical, await desk())).split(".");
      return forged({ inner: `${header}.${base64url.encode(REPLY.canonical)}.${signature}` })();
    },
  },
  {
    name: "an inner header parameter nobody registered",
    code: "bad_signature",
    make: innerSigned(NOTICE.canonical, { note: "x" }),
  },
  {
    name: "an inner alg HS256",
    code: "bad_signature",
    make: async () => {
      const header = encode({ alg: "HS256", kid: (await desk()).signing.kid });
      return forged({ inner: `${header}.e30.e30` })();
    },
  },
  {
    name: "a signed notice with a member too many",
    code: "malformed",
    make: innerSigned(JSON.stringify({ ...NOTICE.notice, colour: "red" })),
  },
  {
    name: "a signed reply without in_reply_to",
    code: "malformed",
    make: innerSigned(JSON.stringify({ ...NOTICE.notice, type: "reply" })),
  },
  ...(
    [
      ["another priority", { priority: "routine" }],
      ["the recipients in another order", { recipients: ["interpol-ncb-phnom-penh", "kh-cnp"] }],
      ["sent_at a microsecond later", { sent_at: "2025-03-31T09:00:00.000001Z" }],
      ["an in_reply_to the notice does not have", { in_reply_to: "3f1c2a9e-7b4d-4e8a-9c61-0d5e8f2a7b34" }],
      ["no expires_at", { expires_at: undefined }],
    ] as const
  ).map(
    ([what, header]): Tampered => ({
      name: `a routing header with ${what}`,
      code: "header_mismatch",
      make: forged({ protectedHeader: header }),
    }),
  ),
];

/** Not what deskbridge writes, but what docs/envelope.md lets a sender write: these open. */
export const UNUSUAL: { name: string; make: () => Promise<string> }[] = [
  {
    name: "routing values equal once parsed (another offset for the same instant, an uppercase UUID)",
    make: forged({
      protectedHeader: {
        sent_at: "2025-03-31T18:00:00+09:00",
        notice_id: (NOTICE.notice.notice_id as string).toUpperCase(),
      },
    }),
  },
  {
    name: "EdDSA, the older name of the algorithm, in both signatures",
    make: async () => {
      const inner = await innerJws(NOTICE.canonical, await desk(), { alg: "EdDSA" });
      return forged({ inner, outerHeader: { alg: "EdDSA" } })();
    },
  },
  {
    name: "a single-recipient general JWE with epk in the protected header (jose's own choice)",
    make: async () => {
      const ring = await desk();
      const [recipient] = await recipientsOf(NOTICE.notice);
      const routing = routingFor(NOTICE.notice as unknown as Notice);
      const sealed = new GeneralEncrypt(new TextEncoder().encode(await innerJws(NOTICE.canonical, ring)))
        .setProtectedHeader({ enc: "A256GCM", typ: "deskbridge-notice+jwe", cty: "JOSE", ...routing });
      const { key, kid } = recipient!;
      sealed.addRecipient(key).setUnprotectedHeader({ alg: "ECDH-ES+A256KW", kid });
      return signOuter((await sealed.encrypt()) as unknown as Json, ring);
    },
  },
];
