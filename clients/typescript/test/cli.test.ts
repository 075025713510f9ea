// `deskbridge-partner` run in-process against a small HTTP server that plays the gateway: the signed
// directory of the vector agencies, an inbox holding the vector notice, a tampered copy and an
// acknowledged one, and whatever is acknowledged or posted kept for the test to open.

import { createHash } from "node:crypto";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { compactVerify, importJWK } from "jose";
import canonicalize from "canonicalize";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";

import { main } from "../src/commands.js";
import { openEnvelope, parseEnvelope } from "../src/envelope.js";
import { flip } from "./forge.js";
import { directorySigner, type DirectorySigner } from "./directory-server.js";
import { jwk, keyFile, keyring, lookup, NOTICE, REPLY, type Agency } from "./vectors.js";

const TOKEN = "dbp_test-credential-never-printed";
const TAMPERED_ID = "0b7e1f52-3f4c-4c3a-9d3e-111111111111";

interface Gateway {
  url: string;
  signer: DirectorySigner;
  acks: Map<string, string>;
  posted: string[];
  close(): Promise<void>;
}

function item(envelope: string, state: string, cursor: string, notice_id?: string) {
  const { routing } = parseEnvelope(envelope);
  return {
    notice_id: notice_id ?? routing.notice_id,
    sender: routing.sender,
    case_ref: routing.case_ref,
    notice_type: routing.notice_type,
    priority: routing.priority,
    tlp: routing.tlp,
    state,
    delivered_at: "2025-03-31T09:00:01Z",
    cursor,
    envelope,
  };
}

async function gateway(): Promise<Gateway> {
  const signer = await directorySigner();
  const outer = JSON.parse(NOTICE.envelope) as Record<string, string>;
  const tampered = JSON.stringify({ ...outer, signature: flip(outer.signature!) });
  const inbox = [
    item(REPLY.envelope, "acknowledged", "c1"),
    item(NOTICE.envelope, "delivered", "c2"),
    item(tampered, "delivered", "c3", TAMPERED_ID),
  ];
  const acks = new Map<string, string>();
  const posted: string[] = [];
  const server: Server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk: Buffer) => (body += chunk.toString("utf8")));
    request.on("end", async () => {
      const url = new URL(request.url!, "http://gateway");
      const answer = (status: number, value: unknown) => {
        response.writeHead(status, { "Content-Type": "application/json" });
        response.end(JSON.stringify(value));
      };
      if (request.headers.authorization !== `Bearer ${TOKEN}`)
        return answer(401, { code: "unauthenticated", detail: "no such credential" });
      const ack = /^\/v1\/inbox\/([^/]+)\/ack$/.exec(url.pathname);
      if (request.method === "GET" && url.pathname === "/v1/directory") return answer(200, await signer.sign());
      if (request.method === "GET" && url.pathname === "/v1/inbox") {
        const after = url.searchParams.get("after");
        return after === null
          ? answer(200, { items: inbox, next_cursor: "c3" })
          : answer(200, { items: [], next_cursor: after });
      }
      if (request.method === "POST" && ack) {
        acks.set(ack[1]!, (JSON.parse(body) as { receipt: string }).receipt);
        return answer(200, { notice_id: ack[1] });
      }
      if (request.method === "POST" && url.pathname === "/v1/envelopes") {
        posted.push(body);
        return answer(202, { notice_id: parseEnvelope(body).routing.notice_id });
      }
      answer(404, { code: "not_found", detail: url.pathname });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return { url: `http://127.0.0.1:${port}`, signer, acks, posted, close };
}

let gw: Gateway;
let home: string;
const homes: string[] = []; // every agency home the tests make, removed after them

async function tempHome(): Promise<string> {
  const made = await mkdtemp(join(tmpdir(), "deskbridge-partner-"));
  homes.push(made);
  return made;
}

beforeAll(async () => {
  gw = await gateway();
  home = await tempHome();
  for (const agency of ["kh-cnp", "interpol-ncb-phnom-penh"] as Agency[]) {
    await mkdir(join(home, agency));
    await writeFile(join(home, agency, "credential"), `${TOKEN}\n`);
    await writeFile(join(home, agency, "keys.jwks.json"), keyFile(agency));
    await writeFile(join(home, agency, "directory.pin.jwk.json"), JSON.stringify(gw.signer.pin));
  }
});
afterAll(async () => {
  await gw.close();
  await Promise.all(homes.map((made) => rm(made, { recursive: true, force: true })));
});
beforeEach(() => {
  gw.acks.clear();
  gw.posted.length = 0;
});

async function run(...argv: string[]): Promise<{ status: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const status = await main(["--server", gw.url, "--home", home, ...argv], {
    out: (line) => out.push(line),
    err: (line) => err.push(line),
  });
  expect([...out, ...err].join("\n")).not.toContain(TOKEN);
  expect([...out, ...err].join("\n")).not.toContain(jwk("kh-cnp", "sig").d);
  return { status, out, err };
}

describe("deskbridge-partner", () => {
  it("directory show lists each agency and its keys", async () => {
    const { status, out } = await run("--as", "kh-cnp", "directory", "show");
    expect(status).toBe(0);
    expect(out).toContain("kh-cnp partner kh-cnp name");
    expect(out).toContain(`  sig ${jwk("kh-cnp", "sig").kid} active`);
  });

  it("inbox pull --json opens, verifies and acknowledges with a signed receipt; a tampered copy is refused", async () => {
    const { status, out, err } = await run("--as", "kh-cnp", "inbox", "pull", "--json");
    expect(status).toBe(3);
    expect(out.map((line) => JSON.parse(line))).toEqual([
      { cursor: "c2", notice: JSON.parse(NOTICE.canonical), verified_by: "kr-desk", acknowledged: true },
    ]);
    expect(err).toEqual([expect.stringMatching(new RegExp(`^refused ${TAMPERED_ID}: .* \\[bad_signature\\]$`))]);
    const id = NOTICE.notice.notice_id as string;
    expect([...gw.acks.keys()]).toEqual([id]);
    const { x, crv, kty } = jwk("kh-cnp", "sig");
    const { payload, protectedHeader } = await compactVerify(gw.acks.get(id)!, await importJWK({ x, crv, kty }, "Ed25519"));
    expect(protectedHeader.typ).toBe("deskbridge-receipt+jws");
    expect(JSON.parse(new TextDecoder().decode(payload))).toMatchObject({
      notice_id: id,
      agency: "kh-cnp",
      envelope_sha256: createHash("sha256").update(NOTICE.envelope).digest("hex"),
    });
  });

  it("inbox pull --no-ack acknowledges nothing; the summary names the refused copy", async () => {
    const { status, out } = await run("--as", "kh-cnp", "inbox", "pull", "--no-ack");
    expect(status).toBe(3);
    expect(out[0]).toMatch(/^\[FLASH\] kidnapping_confinement .* from kr-desk \(TLP:/);
    expect(out.at(-1)).toBe("1 notice(s) opened, 1 refused");
    expect(gw.acks.size).toBe(0);
  });

  it("reply seals to the original sender, same case, tlp and priority, in reply to it", async () => {
    const original = NOTICE.notice;
    const { status, out } = await run(
      "--as", "kh-cnp", "reply", "--to", (original.notice_id as string).toUpperCase(), "--summary", "Located",
    );
    expect(status).toBe(0);
    const { notice_id } = JSON.parse(out[0]!) as { notice_id: string };
    expect(gw.posted).toHaveLength(1);
    const opened = await openEnvelope(gw.posted[0]!, await keyring("kr-desk"), await lookup());
    expect(opened.notice).toMatchObject({
      notice_id,
      type: "reply",
      in_reply_to: original.notice_id,
      case_ref: original.case_ref,
      tlp: original.tlp,
      priority: original.priority,
      recipients: ["kr-desk"],
      sender: "kh-cnp",
      summary: "Located",
    });
    expect(canonicalize(JSON.parse(gw.posted[0]!))).toBe(gw.posted[0]);
  });

  it("notice send seals a draft to every recipient", async () => {
    const draft = join(home, "draft.json");
    const { sender: _s, sent_at: _t, ...fields } = NOTICE.notice;
    await writeFile(draft, JSON.stringify({ ...fields, notice_id: crypto.randomUUID(), recipients: ["kr-desk", "kh-cnp"] }));
    const { status, out } = await run("--as", "interpol-ncb-phnom-penh", "notice", "send", "--file", draft);
    expect(status).toBe(0);
    for (const agency of ["kr-desk", "kh-cnp"] as Agency[]) {
      const opened = await openEnvelope(gw.posted[0]!, await keyring(agency), await lookup());
      expect(opened.notice.sender).toBe("interpol-ncb-phnom-penh");
      expect(opened.notice.notice_id).toBe((JSON.parse(out[0]!) as { notice_id: string }).notice_id);
    }
  });

  it("errors are one line with the server's or the client's code, exit 1; usage errors exit 2", async () => {
    const wrongPin = await tempHome();
    await mkdir(join(wrongPin, "kh-cnp"));
    await writeFile(join(wrongPin, "kh-cnp", "credential"), TOKEN);
    await writeFile(join(wrongPin, "kh-cnp", "directory.pin.jwk.json"), JSON.stringify((await directorySigner()).pin));
    const untrusted = await main(["--server", gw.url, "--home", wrongPin, "--as", "kh-cnp", "directory", "show"], {
      out: () => {},
      err: (line) => expect(line).toMatch(/^error: directory refused: .* \[directory_untrusted\]$/),
    });
    expect(untrusted).toBe(1);
    await writeFile(join(wrongPin, "kh-cnp", "credential"), "dbp_someone-else");
    const unauthenticated: string[] = [];
    await main(["--server", gw.url, "--home", wrongPin, "--as", "kh-cnp", "directory", "show"], {
      out: () => {},
      err: (line) => unauthenticated.push(line),
    });
    expect(unauthenticated).toEqual([expect.stringMatching(/^error: GET \/v1\/directory failed with 401.* \[unauthenticated\]$/)]);
    const missing = await run("--as", "kh-cnp", "reply", "--to", crypto.randomUUID(), "--summary", "x");
    expect([missing.status, missing.err[0]?.match(/\[(\w+)\]$/)?.[1]]).toEqual([1, "not_in_inbox"]);
    expect((await run("--as", "kh-cnp", "inbox", "pull", "--bogus")).status).toBe(2);
    expect((await run("inbox", "pull")).status).toBe(2);
    expect((await run("--as", "kh-cnp", "reply", "--to", "not-an-id", "--summary", "x")).status).toBe(2);
  });
});
