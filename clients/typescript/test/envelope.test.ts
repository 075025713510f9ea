import { describe, expect, it } from "vitest";

import { readJwks, signingKeyIn } from "../src/directory.js";
import { openEnvelope, type SigningKeyLookup } from "../src/envelope.js";
import { Refusal } from "../src/errors.js";
import { TAMPERED, UNUSUAL } from "./cases.js";
import { jwks, keyring, lookup, NOTICE, REPLY, type Agency } from "./vectors.js";

async function sha256(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

describe("opening", () => {
  it.each([
    ["envelope.json", NOTICE, "kh-cnp"],
    ["envelope.json", NOTICE, "interpol-ncb-phnom-penh"],
    ["reply.envelope.json", REPLY, "kr-desk"],
    ["reply.envelope.json", REPLY, "interpol-ncb-phnom-penh"],
  ] as const)("the vector %s as %s", async (_, vector, agency) => {
    const opened = await openEnvelope(vector.envelope, await keyring(agency), await lookup());
    expect(opened.notice).toEqual(JSON.parse(vector.canonical));
    const sender = vector.notice.sender as string;
    expect(opened.outer.agency).toBe(sender);
    expect(opened.inner.agency).toBe(sender);
    expect(opened.routing.notice_id).toBe(vector.notice.notice_id);
    expect(opened.envelopeSha256).toBe(await sha256(vector.envelope));
  });

  it.each(UNUSUAL)("$name", async ({ make }) => {
    const opened = await openEnvelope(await make(), await keyring("kh-cnp"), await lookup());
    expect(opened.notice).toEqual(JSON.parse(NOTICE.canonical));
  });
});

describe("refusals", () => {
  async function refusal(envelope: string, agency: Agency, keys?: SigningKeyLookup): Promise<string> {
    try {
      await openEnvelope(envelope, await keyring(agency), keys ?? (await lookup()));
    } catch (error) {
      if (error instanceof Refusal) return error.code;
      throw error;
    }
    throw new Error("the envelope opened");
  }

  it.each(TAMPERED)("$name is $code", async ({ make, agency, code }) => {
    expect(await refusal(await make(), agency ?? "kh-cnp")).toBe(code);
  });

  const sentAt = Date.parse(NOTICE.notice.sent_at as string) / 1000;
  const desk = async (extra: Record<string, unknown>) =>
    signingKeyIn(await readJwks("kr-desk", jwks("kr-desk", extra)));
  const opens = async (keys: SigningKeyLookup) =>
    openEnvelope(NOTICE.envelope, await keyring("kh-cnp"), keys);

  it("a signing key revoked before sent_at is key_revoked; one revoked after still verifies", async () => {
    const revoked = (at: number) => desk({ status: "revoked", revoked_at: at });
    expect(await refusal(NOTICE.envelope, "kh-cnp", await revoked(sentAt - 1))).toBe("key_revoked");
    await expect(opens(await revoked(sentAt + 1))).resolves.toBeDefined();
  });

  it("sent_at outside the signing key's nbf/exp is key_not_valid", async () => {
    const early = await desk({ nbf: sentAt + 1 });
    const late = await desk({ nbf: 0, exp: sentAt - 1 });
    expect(await refusal(NOTICE.envelope, "kh-cnp", early)).toBe("key_not_valid");
    expect(await refusal(NOTICE.envelope, "kh-cnp", late)).toBe("key_not_valid");
    await expect(opens(await desk({ nbf: sentAt, exp: sentAt }))).resolves.toBeDefined();
  });
});
