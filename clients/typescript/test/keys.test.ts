import { describe, expect, it } from "vitest";

import { PartnerError } from "../src/errors.js";
import { importKeyFile } from "../src/keys.js";
import { jwk, keyFile } from "./vectors.js";

async function refused(text: string): Promise<string> {
  const error = await importKeyFile(text).then(() => undefined, (e: unknown) => e);
  if (!(error instanceof PartnerError)) throw new Error(`not refused: ${String(error)}`);
  return error.message;
}

const file = (keys: unknown[], agency = "kh-cnp") => JSON.stringify({ agency, keys });

describe("importing a key file", () => {
  it("makes non-extractable keys whose kids are the published thumbprints", async () => {
    const ring = await importKeyFile(keyFile("kh-cnp"));
    expect(ring.agency).toBe("kh-cnp");
    expect(ring.signing.kid).toBe(jwk("kh-cnp", "sig").kid);
    expect(ring.signing.key).toMatchObject({ type: "private", extractable: false, usages: ["sign"] });
    expect(ring.signing.key.algorithm.name).toBe("Ed25519");
    expect([...ring.decryption.keys()]).toEqual([jwk("kh-cnp", "enc").kid]);
    const enc = ring.decryption.get(jwk("kh-cnp", "enc").kid)!;
    expect(enc).toMatchObject({ type: "private", extractable: false, usages: ["deriveBits"] });
    await expect(crypto.subtle.exportKey("jwk", enc)).rejects.toThrow();
  });

  it("takes the last signing key as current and keeps every decryption key (a rotated file)", async () => {
    const old = [jwk("kr-desk", "sig"), jwk("kr-desk", "enc")];
    const ring = await importKeyFile(file([...old, jwk("kh-cnp", "sig"), jwk("kh-cnp", "enc")]));
    expect(ring.signing.kid).toBe(jwk("kh-cnp", "sig").kid);
    const kids = [jwk("kr-desk", "enc").kid, jwk("kh-cnp", "enc").kid];
    expect([...ring.decryption.keys()].sort()).toEqual(kids.sort());
  });

  it("recomputes a kid rather than trust the file's", async () => {
    const ring = await importKeyFile(file([{ ...jwk("kh-cnp", "sig"), kid: "mine" }, jwk("kh-cnp", "enc")]));
    expect(ring.signing.kid).toBe(jwk("kh-cnp", "sig").kid);
  });

  it.each([
    ["not JSON", "PRIVATE KEY", /not a deskbridge key file/],
    ["a JWKS without agency", JSON.stringify({ keys: [] }), /not a deskbridge key file/],
    ["an agency that is no agency id", file([], "KH CNP"), /not an agency id/],
    ["no signing key", file([jwk("kh-cnp", "enc")]), /no signing key/],
    ["no decryption key", file([jwk("kh-cnp", "sig")]), /no decryption key/],
    [
      "a public key only",
      file([{ ...jwk("kh-cnp", "sig"), d: undefined }, jwk("kh-cnp", "enc")]),
      /public key only/,
    ],
    ["a key without use", file([{ ...jwk("kh-cnp", "sig"), use: undefined }]), /Key 1 .* not a signing/],
    ["a signing key on X25519", file([{ ...jwk("kh-cnp", "enc"), use: "sig" }]), /not an Ed25519 key/],
    [
      "a private part that belongs to another key",
      file([{ ...jwk("kh-cnp", "sig"), d: jwk("kr-desk", "sig").d }, jwk("kh-cnp", "enc")]),
      /Key 1 .* damaged/,
    ],
  ])("refuses %s with a sentence", async (_, text, message) => {
    expect(await refused(text)).toMatch(message);
  });
});
