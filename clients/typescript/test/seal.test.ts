import canonicalize from "canonicalize";
import { base64url } from "jose";
import { describe, expect, it } from "vitest";

import { openEnvelope } from "../src/envelope.js";
import { Refusal } from "../src/errors.js";
import { sealNotice, signNotice } from "../src/seal.js";
import { keyring, lookup, NOTICE, recipientsOf, REPLY, type Agency } from "./vectors.js";

type Json = Record<string, unknown>;
const decode = (text: string) => JSON.parse(new TextDecoder().decode(base64url.decode(text))) as Json;

async function seal(notice: Json): Promise<string> {
  return sealNotice(notice, await keyring(notice.sender as Agency), await recipientsOf(notice));
}

// docs/envelope.md §4.2, spelled out: the routing members copied from the notice (and notice_type = type).
const ROUTING_FROM_NOTICE = [
  "sender", "notice_id", "priority", "tlp", "case_ref", "recipients", "sent_at", "expires_at", "in_reply_to",
  "forwarded_from",
];
const SINGLE: Json = { ...REPLY.notice, recipients: ["kr-desk"] };

describe("sealing", () => {
  it.each([
    ["the notice", NOTICE],
    ["the reply", REPLY],
  ])("the inner JWS of %s is the vector's, byte for byte", async (_, vector) => {
    expect(await signNotice(vector.notice, await keyring(vector.notice.sender as Agency))).toBe(vector.jws);
  });

  it.each([
    ["the notice", NOTICE.notice],
    ["the reply", REPLY.notice],
    ["a reply to one agency", SINGLE],
  ])("%s opens for every recipient", async (_, notice) => {
    const envelope = await seal(notice);
    for (const agency of notice.recipients as Agency[]) {
      const opened = await openEnvelope(envelope, await keyring(agency), await lookup());
      expect(opened.notice).toEqual(JSON.parse(canonicalize(notice)!));
      expect(opened.outer).toEqual(opened.inner);
    }
  });

  it.each([
    ["two recipients", NOTICE.notice],
    ["one recipient", SINGLE],
  ])("the envelope is §4 exactly, with %s", async (_, notice) => {
    const envelope = await seal(notice);
    expect(canonicalize(JSON.parse(envelope))).toBe(envelope);
    expect(envelope.startsWith('{"payload":')).toBe(true);
    const outer = JSON.parse(envelope) as Json;
    expect(Object.keys(outer).sort()).toEqual(["payload", "protected", "signature"]);
    const ring = await keyring(notice.sender as Agency);
    expect(decode(outer.protected as string)).toEqual({
      alg: "Ed25519", kid: ring.signing.kid, typ: "deskbridge-envelope+jws", cty: "deskbridge-notice+jwe",
    });
    const payload = new TextDecoder().decode(base64url.decode(outer.payload as string));
    expect(canonicalize(JSON.parse(payload))).toBe(payload);
    const jwe = JSON.parse(payload) as Json;
    expect(Object.keys(jwe).sort()).toEqual(["ciphertext", "iv", "protected", "recipients", "tag"]);
    const { type, ...rest } = notice;
    const routing = Object.fromEntries(ROUTING_FROM_NOTICE.filter((k) => k in rest).map((k) => [k, rest[k]]));
    expect(decode(jwe.protected as string)).toEqual({
      enc: "A256GCM",
      typ: "deskbridge-notice+jwe",
      cty: "JOSE",
      notice_type: type,
      ...routing,
    });
    const entries = jwe.recipients as { header: Json; encrypted_key: string }[];
    const keys = await recipientsOf(notice);
    expect(entries.map((e) => e.header.kid)).toEqual(keys.map((k) => k.kid));
    for (const entry of entries) {
      expect(Object.keys(entry).sort()).toEqual(["encrypted_key", "header"]);
      expect(Object.keys(entry.header).sort()).toEqual(["alg", "epk", "kid"]);
      expect(entry.header.alg).toBe("ECDH-ES+A256KW");
      expect(Object.keys(entry.header.epk as Json).sort()).toEqual(["crv", "kty", "x"]);
      expect(base64url.decode(entry.encrypted_key)).toHaveLength(40);
    }
    expect(base64url.decode(jwe.iv as string)).toHaveLength(12);
    expect(base64url.decode(jwe.tag as string)).toHaveLength(16);
  });

  it("each recipient gets its own ephemeral key, and each sealing a fresh one", async () => {
    const epks = async () => {
      const jwe = decode((JSON.parse(await seal(NOTICE.notice)) as Json).payload as string);
      return (jwe.recipients as { header: { epk: { x: string } } }[]).map((e) => e.header.epk.x);
    };
    const all = [...(await epks()), ...(await epks())];
    expect(new Set(all).size).toBe(4);
  });

  it("null members are left out of what is signed", async () => {
    const subjects = (NOTICE.notice.subjects as Json[]).map((s) => ({ name_latin: null, ...s }));
    const envelope = await seal({ ...NOTICE.notice, in_reply_to: null, forwarded_from: null, subjects });
    const opened = await openEnvelope(envelope, await keyring("kh-cnp"), await lookup());
    expect(opened.notice).toEqual(JSON.parse(NOTICE.canonical));
    expect("in_reply_to" in opened.notice).toBe(false);
  });

  async function refusal(action: Promise<unknown>): Promise<string> {
    const error = await action.then(() => undefined, (e: unknown) => e);
    if (!(error instanceof Refusal)) throw new Error(`not refused: ${String(error)}`);
    return error.code;
  }

  it("refuses another's keys, keys not for exactly the addressed agencies, a notice not valid", async () => {
    const [first, second] = await recipientsOf(NOTICE.notice);
    const desk = await keyring("kr-desk");
    const seal = (notice: Json, recipients = [first!, second!], ring = desk) =>
      sealNotice(notice, ring, recipients);
    expect(await refusal(seal(NOTICE.notice, undefined, await keyring("kh-cnp")))).toBe("signer_mismatch");
    expect(await refusal(seal(NOTICE.notice, [second!]))).toBe("recipient_mismatch");
    expect(await refusal(seal(NOTICE.notice, [first!, first!]))).toBe("recipient_mismatch");
    expect(await refusal(seal({ ...NOTICE.notice, sent_at: "2025-03-31 09:00" }))).toBe("malformed");
  });
});
