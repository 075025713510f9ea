import { describe, expect, it } from "vitest";

import { checkSigningKeyAt, readJwks, sealingKey, type DirectoryKey } from "../src/directory.js";
import { PartnerError, Refusal } from "../src/errors.js";
import { jwk, jwks } from "./vectors.js";

const NOW = new Date("2025-04-01T00:00:00Z");
const T = NOW.getTime() / 1000;

function enc(extra: Record<string, unknown>, agency: "kh-cnp" | "kr-desk" = "kh-cnp") {
  const { d: _private, ...pub } = jwk(agency, "enc");
  return { ...pub, status: "active", nbf: T - 100, ...extra };
}

describe("reading a JWKS", () => {
  it("keeps each key with its status and window", async () => {
    const keys = await readJwks("kh-cnp", jwks("kh-cnp", { exp: 2_000_000_000, revoked_at: null }));
    expect(keys.map((k) => [k.use, k.kid, k.status, k.nbf, k.exp, k.revokedAt])).toEqual([
      ["sig", jwk("kh-cnp", "sig").kid, "active", 1_700_000_000, 2_000_000_000, undefined],
      ["enc", jwk("kh-cnp", "enc").kid, "active", 1_700_000_000, 2_000_000_000, undefined],
    ]);
    expect(keys[0]!.key).toEqual({ kty: "OKP", crv: "Ed25519", x: jwk("kh-cnp", "sig").x });
  });

  it("refuses a kid that is not the key's thumbprint", async () => {
    const body = { keys: [{ ...jwks("kh-cnp").keys[0], kid: jwk("kr-desk", "sig").kid }] };
    await expect(readJwks("kh-cnp", body)).rejects.toThrow(/not that key's thumbprint/);
  });

  it.each([
    ["not a key set", { jwks: [] }],
    ["a private part", { keys: [{ ...jwks("kh-cnp").keys[0], d: jwk("kh-cnp", "sig").d }] }],
    ["a signing key on X25519", { keys: [{ ...jwks("kh-cnp").keys[1], use: "sig" }] }],
    ["no nbf", { keys: [{ ...jwks("kh-cnp").keys[0], nbf: undefined }] }],
    ["an unknown status", { keys: [{ ...jwks("kh-cnp").keys[0], status: "retired" }] }],
  ])("refuses %s", async (_, body) => {
    await expect(readJwks("kh-cnp", body)).rejects.toBeInstanceOf(PartnerError);
  });
});

describe("the key to seal to", () => {
  it("is the newest active encryption key inside its window", async () => {
    const newer = enc({}, "kr-desk"); // another key, listed later: the newest
    const keys = await readJwks("kh-cnp", { keys: [enc({}), { ...newer, kid: newer.kid }] });
    expect(sealingKey("kh-cnp", keys, NOW).kid).toBe(newer.kid);
  });

  it.each([
    ["revoked", { status: "revoked", revoked_at: T - 10 }],
    ["pending", { status: "pending", nbf: T + 10 }],
    ["expired", { exp: T - 1 }],
  ])("skips a %s key, and says so when none is left", async (_, extra) => {
    const keys = await readJwks("kh-cnp", { keys: [enc(extra)] });
    expect(() => sealingKey("kh-cnp", keys, NOW)).toThrow(/kh-cnp has no active encryption key/);
  });
});

describe("judging a signing key at a time", () => {
  const key = (extra: Partial<DirectoryKey>): DirectoryKey => ({
    agency: "kr-desk",
    kid: "k",
    use: "sig",
    key: { kty: "OKP", crv: "Ed25519", x: "x" },
    status: "active",
    nbf: 100,
    ...extra,
  });
  const code = (k: DirectoryKey, seconds: number, micros = 0): string | undefined => {
    try {
      checkSigningKeyAt(k, BigInt(seconds) * 1_000_000n + BigInt(micros));
      return undefined;
    } catch (error) {
      return error instanceof Refusal ? error.code : String(error);
    }
  };

  it("is valid from nbf to exp, both included", () => {
    expect(code(key({ exp: 200 }), 100)).toBeUndefined();
    expect(code(key({ exp: 200 }), 200)).toBeUndefined();
    expect(code(key({}), 99, 999_999)).toBe("key_not_valid");
    expect(code(key({ exp: 200 }), 200, 1)).toBe("key_not_valid");
  });

  it("is key_revoked from the second it was revoked, also before nbf", () => {
    expect(code(key({ status: "revoked", revokedAt: 150 }), 149)).toBeUndefined();
    expect(code(key({ status: "revoked", revokedAt: 150 }), 150)).toBe("key_revoked");
    expect(code(key({ status: "revoked", revokedAt: 50 }), 60)).toBe("key_revoked");
  });
});
