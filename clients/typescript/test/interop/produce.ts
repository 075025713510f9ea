// Run by tests/clients/test_typescript.py (`npx vite-node test/interop/produce.ts`): what the TypeScript
// client's cryptography makes with the vector keys, as JSON on
// stdout, for deskbridge's Python to check.

import { openEnvelope } from "../../src/envelope.js";
import { makeReceipt } from "../../src/receipt.js";
import { sealNotice } from "../../src/seal.js";
import { TAMPERED, UNUSUAL } from "../cases.js";
import { keyring, lookup, NOTICE, recipientsOf, REPLY, type Agency } from "../vectors.js";

async function seal(notice: Record<string, unknown>): Promise<string> {
  return sealNotice(notice, await keyring(notice.sender as Agency), await recipientsOf(notice));
}

const opened = await openEnvelope(NOTICE.envelope, await keyring("kh-cnp"), await lookup());
const output = {
  envelope_sha256: opened.envelopeSha256,
  receipt: await makeReceipt(await keyring("kh-cnp"), opened.notice.notice_id, opened.envelopeSha256),
  sealed: {
    notice: await seal(NOTICE.notice),
    reply: await seal(REPLY.notice),
    single: await seal({ ...REPLY.notice, recipients: ["kr-desk"] }),
  },
  tampered: await Promise.all(
    TAMPERED.map(async ({ make, agency = "kh-cnp", ...c }) => ({ ...c, agency, envelope: await make() })),
  ),
  unusual: await Promise.all(UNUSUAL.map(async (c) => ({ name: c.name, envelope: await c.make() }))),
};
console.log(JSON.stringify(output));
