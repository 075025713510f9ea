// Run by tests/clients/test_typescript.py (`npx vite-node test/interop/produce.ts`): what the TypeScript
// client's cryptography makes with the vector keys, as JSON on
// stdout, for deskbridge's Python to check.

import { openEnvelope } from "../../src/envelope.js";
import { signatureHeaders } from "../../src/httpsig.js";
import { makeReceipt } from "../../src/receipt.js";
import { sealNotice } from "../../src/seal.js";
import { TAMPERED, UNUSUAL } from "../cases.js";
import { keyring, lookup, NOTICE, recipientsOf, REPLY, type Agency } from "../vectors.js";

async function seal(notice: Record<string, unknown>): Promise<string> {
  return sealNotice(notice, await keyring(notice.sender as Agency), await recipientsOf(notice));
}

const opened = await openEnvelope(NOTICE.envelope, await keyring("kh-cnp"), await lookup());
/** A request signed as `deskbridge-partner --sign` signs it (RFC 9421), for Python's verify_request. */
async function signed(method: string, url: string, body = "") {
  return { method, url, body, headers: await signatureHeaders(await keyring("kh-cnp"), method, new URL(url), body) };
}

const output = {
  envelope_sha256: opened.envelopeSha256,
  receipt: await makeReceipt(await keyring("kh-cnp"), opened.notice.notice_id, opened.envelopeSha256),
  sealed: {
    notice: await seal(NOTICE.notice),
    reply: await seal(REPLY.notice),
    single: await seal({ ...REPLY.notice, recipients: ["kr-desk"] }),
  },
  requests: [
    await signed("GET", "http://127.0.0.1:8080/v1/inbox?after=AAAAAAAAAAE&wait=30"),
    await signed("POST", "http://127.0.0.1:8080/v1/inbox/3f1c2a9e-7b4d-4e8a-9c61-0d5e8f2a7b34/ack", '{"receipt":"x"}'),
  ],
  tampered: await Promise.all(
    TAMPERED.map(async ({ make, agency = "kh-cnp", ...c }) => ({ ...c, agency, envelope: await make() })),
  ),
  unusual: await Promise.all(UNUSUAL.map(async (c) => ({ name: c.name, envelope: await c.make() }))),
};
console.log(JSON.stringify(output));
