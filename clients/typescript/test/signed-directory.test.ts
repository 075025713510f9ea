import { describe, expect, it } from "vitest";

import { PartnerError } from "../src/errors.js";
import { verifyDirectory } from "../src/signed-directory.js";
import { directorySigner } from "./directory-server.js";
import { jwk } from "./vectors.js";

async function refusal(action: Promise<unknown>): Promise<string> {
  const error = await action.then(() => undefined, (e: unknown) => e);
  if (!(error instanceof PartnerError)) throw new Error(`not refused: ${String(error)}`);
  expect(error.code).toBe("directory_untrusted");
  return error.message;
}

describe("the signed directory", () => {
  it("verifies against the pin and lists every agency with its checked keys", async () => {
    const signer = await directorySigner();
    const directory = await verifyDirectory(await signer.sign(), signer.pin);
    expect(directory.signedBy).toBe(signer.pin.kid);
    expect(directory.agencies.map((a) => [a.id, a.kind])).toEqual([
      ["kr-desk", "desk"],
      ["kh-cnp", "partner"],
      ["interpol-ncb-phnom-penh", "partner"],
    ]);
    const cnp = directory.agencies[1]!;
    expect(cnp.keys.map((k) => [k.use, k.kid])).toEqual([
      ["sig", jwk("kh-cnp", "sig").kid],
      ["enc", jwk("kh-cnp", "enc").kid],
    ]);
  });

  it("refuses one signed by another key, even one that names the pinned kid", async () => {
    const pinned = await directorySigner();
    const other = await directorySigner();
    expect(await refusal(verifyDirectory(await other.sign(), pinned.pin))).toMatch(/not by the pinned key/);
    const lying = { ...(await other.sign()), kid: pinned.pin.kid };
    expect(await refusal(verifyDirectory(lying, pinned.pin))).toMatch(/does not verify/);
  });

  it("refuses one signed more than 10 minutes ago, or in the future", async () => {
    const signer = await directorySigner();
    const now = Math.floor(Date.now() / 1000);
    await expect(verifyDirectory(await signer.sign(now - 590), signer.pin)).resolves.toBeDefined();
    expect(await refusal(verifyDirectory(await signer.sign(now - 610), signer.pin))).toMatch(/replayed/);
    expect(await refusal(verifyDirectory(await signer.sign(now + 600), signer.pin))).toMatch(/future/);
  });

  it("refuses another kind of signed document and a changed payload", async () => {
    const signer = await directorySigner();
    const receipt = await signer.sign(undefined, undefined, "deskbridge-receipt+jws");
    expect(await refusal(verifyDirectory(receipt, signer.pin))).toMatch(/not a deskbridge directory/);
    const { jws, kid } = (await signer.sign()) as { jws: string; kid: string };
    const [header, , signature] = jws.split(".");
    const forged = `${header}.${Buffer.from('{"iat":1,"agencies":[]}').toString("base64url")}.${signature}`;
    expect(await refusal(verifyDirectory({ jws: forged, kid }, signer.pin))).toMatch(/does not verify/);
  });

  it("refuses a key listed under a kid that is not its thumbprint", async () => {
    const signer = await directorySigner();
    const body = await signer.sign(undefined, (d) => {
      const agencies = d.agencies as { keys: { kid: string }[] }[];
      agencies[1]!.keys[0]!.kid = jwk("kr-desk", "sig").kid;
    });
    await expect(verifyDirectory(body, signer.pin)).rejects.toThrow(/not that key's thumbprint/);
  });
});
