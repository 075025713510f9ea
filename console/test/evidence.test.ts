// The browser's evidence verifier on a real bundle (written by tests/transparency/test_evidence.py from a
// run of the whole stack): it passes with exactly the report `deskbridge evidence verify` gives, and each
// tampering fails the check that names it, and only that.
import { describe, expect, it } from "vitest";

import type { EvidenceBundle, EvidenceCheck } from "../src/evidence/bundle";
import { verifyEvidence } from "../src/evidence/verify";
import bundle from "./fixtures/evidence.json";
import report from "./fixtures/evidence.report.json";
import vkey from "./fixtures/evidence.vkey?raw";

const fixture = bundle as unknown as EvidenceBundle;

function tampered(change: (b: EvidenceBundle) => void): EvidenceBundle {
  const copy = structuredClone(fixture);
  change(copy);
  return copy;
}

async function failed(b: EvidenceBundle, key: string = vkey): Promise<string[]> {
  const result = await verifyEvidence(b, key);
  expect(result.ok).toBe(false);
  return result.checks.filter((c) => !c.ok).map((c) => c.check);
}

function otherHex(h: string): string {
  return (h[0] === "0" ? "1" : "0") + h.slice(1);
}

/** The note with one byte of `name`'s signature changed (past its key ID and any timestamp). */
function otherSignature(note: string, name: string): string {
  const prefix = `\u2014 ${name} `;
  return note
    .split("\n")
    .map((line) => {
      if (!line.startsWith(prefix)) return line;
      const at = prefix.length + 40;
      return line.slice(0, at) + (line[at] === "A" ? "B" : "A") + line.slice(at + 1);
    })
    .join("\n");
}

const label = (b: EvidenceBundle, i: number): string =>
  `event ${i} (${b.events[i]!.record.event_type}, leaf ${b.events[i]!.index})`;
const receiptOf = (b: EvidenceBundle, agency: string) => b.receipts.find((r) => r.agency === agency)!;
const keyOf = (b: EvidenceBundle, agency: string) => b.directory.keys.find((k) => k.agency === agency)!;

describe("verifyEvidence", () => {
  it("passes the real bundle with the Python verifier's report, check for check and word for word", async () => {
    const result = await verifyEvidence(structuredClone(fixture), vkey);
    expect(result.checks).toEqual(report as EvidenceCheck[]);
    expect(result.ok).toBe(true);
    const names = result.checks.map((c) => c.check);
    expect(names).toContain("cosignature of kh-cnp");
    expect(names).toContain("receipt of kh-cnp: signature");
    expect(names.filter((n) => n.endsWith(": inclusion proof")).length).toBe(
      fixture.events.length + fixture.directory.events.length,
    );
  });

  it("names a tampered proof hash", async () => {
    const b = tampered((b) => (b.events[3]!.inclusion_proof[0] = otherHex(b.events[3]!.inclusion_proof[0]!)));
    expect(await failed(b)).toEqual([`${label(b, 3)}: inclusion proof`]);
    const result = await verifyEvidence(b, vkey);
    expect(result.checks.find((c) => !c.ok)!.detail).toBe(
      `${label(b, 3)}: inclusion proof does not lead to the checkpoint root`,
    );
  });

  it("names a tampered record field", async () => {
    const b = tampered((b) => (b.events[1]!.record.actor = "someone-else"));
    expect(await failed(b)).toEqual([`${label(b, 1)}: leaf hash`, `${label(b, 1)}: inclusion proof`]);
  });

  it("names a tampered receipt", async () => {
    const b = tampered((b) => {
      const receipt = receiptOf(b, "kh-cnp");
      const at = receipt.receipt.lastIndexOf(".") + 20;
      const c = receipt.receipt[at] === "A" ? "B" : "A";
      receipt.receipt = receipt.receipt.slice(0, at) + c + receipt.receipt.slice(at + 1);
    });
    expect(await failed(b)).toEqual(["receipt of kh-cnp: logged", "receipt of kh-cnp: signature"]);
  });

  it("names another agency's receipt passed off as kh-cnp's", async () => {
    const b = tampered((b) => (receiptOf(b, "kh-cnp").receipt = receiptOf(b, "interpol-ncb-phnom-penh").receipt));
    expect(await failed(b)).toEqual([
      "receipt of kh-cnp: logged",
      "receipt of kh-cnp: signature",
      "receipt of kh-cnp: content",
    ]);
  });

  it("names a tampered checkpoint signature, and a log key other than the pinned one", async () => {
    const b = tampered((b) => (b.checkpoint = otherSignature(b.checkpoint, b.origin)));
    expect(await failed(b)).toEqual(["checkpoint signature"]);
    // The same name, another key: "<name>+<key id>+<base64>" of a key that never signed.
    const pair = (await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"])) as CryptoKeyPair;
    const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    const typed = Uint8Array.of(0x01, ...raw);
    const name = fixture.origin;
    const digest = new Uint8Array(
      await crypto.subtle.digest("SHA-256", Uint8Array.of(...new TextEncoder().encode(name), 0x0a, ...typed)),
    );
    const id = Array.from(digest.slice(0, 4), (x) => x.toString(16).padStart(2, "0")).join("");
    const other = `${name}+${id}+${btoa(String.fromCharCode(...typed))}`;
    const result = await verifyEvidence(structuredClone(fixture), other);
    expect(result.checks.filter((c) => !c.ok).map((c) => c.check)).toEqual(["checkpoint signature"]);
    expect(result.checks[1]!.detail).toMatch(/^checkpoint signature does not verify with the pinned log key/);
  });

  it("names a tampered cosignature", async () => {
    const b = tampered((b) => (b.checkpoint = otherSignature(b.checkpoint, "kh-cnp")));
    expect(await failed(b)).toEqual(["cosignature of kh-cnp"]);
  });

  it("names a leaf of no notice slipped in among the events", async () => {
    const b = tampered((b) => {
      b.events = [...b.events, b.directory.events[0]!].sort((x, y) => x.index - y.index);
    });
    const i = b.events.findIndex((e) => e.record.notice_id === null);
    expect(await failed(b)).toEqual([`${label(b, i)}: this notice`]);
  });

  it("names a directory key swapped for another", async () => {
    const b = tampered((b) => (keyOf(b, "kh-cnp").jwk.x = keyOf(b, "kr-desk").jwk.x!));
    const kid = keyOf(fixture, "kh-cnp").kid;
    // The key fails, and with it every check that needed it.
    expect(await failed(b)).toEqual([
      `key kh-cnp/${kid}: public key`,
      "cosignature of kh-cnp",
      "receipt of kh-cnp: signature",
    ]);
  });

  it("names a bundle of another format", async () => {
    expect(await failed(tampered((b) => (b.format = "deskbridge-evidence/v0")))).toEqual(["format"]);
  });
});
