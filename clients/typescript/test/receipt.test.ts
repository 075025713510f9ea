import { compactVerify, decodeProtectedHeader, importJWK } from "jose";
import { describe, expect, it } from "vitest";

import { makeReceipt } from "../src/receipt.js";
import { jwk, keyring } from "./vectors.js";

describe("a receipt", () => {
  it("is the recipient's Ed25519 compact JWS over notice id, envelope hash, agency and time", async () => {
    const ring = await keyring("kh-cnp");
    const at = new Date("2025-03-31T09:00:05.900Z");
    const token = await makeReceipt(ring, "3F1C2A9E-7B4D-4E8A-9C61-0D5E8F2A7B34", "ab".repeat(32), at);
    const { x, crv, kty, kid } = jwk("kh-cnp", "sig");
    expect(decodeProtectedHeader(token)).toEqual({ alg: "Ed25519", kid, typ: "deskbridge-receipt+jws" });
    const key = await importJWK({ x, crv, kty }, "Ed25519");
    const { payload } = await compactVerify(token, key, { algorithms: ["Ed25519"] });
    expect(JSON.parse(new TextDecoder().decode(payload))).toEqual({
      notice_id: "3f1c2a9e-7b4d-4e8a-9c61-0d5e8f2a7b34",
      envelope_sha256: "ab".repeat(32),
      agency: "kh-cnp",
      iat: 1743411605,
    });
  });

  it("is refused for something that is not a notice id", async () => {
    const ring = await keyring("kh-cnp");
    await expect(makeReceipt(ring, "notice 7", "ab".repeat(32))).rejects.toThrow(/not a notice id/);
  });
});
