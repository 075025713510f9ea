// Opening an inbox item with the agency's own keys against the verified directory, and sealing a reply to
// it: the steps `deskbridge-partner inbox pull` and `reply` take, as services/cli/main.py takes them.

import type { InboxItem } from "./api.js";
import { sealingKey, signingKeyIn } from "./directory.js";
import { openEnvelope, parseEnvelope, type Opened } from "./envelope.js";
import { Refusal } from "./errors.js";
import type { AgencyKeyring } from "./keys.js";
import type { Notice } from "./notice.js";
import { sealNotice } from "./seal.js";
import { allKeys, type TrustedDirectory } from "./signed-directory.js";

/** Opens and verifies `item` (docs/envelope.md §5/§6: both signatures with the sender's key as of
 * `sent_at`, the routing header bound to the signed notice); a Refusal with the reason code if not. */
export async function openInboxItem(
  item: InboxItem,
  ring: AgencyKeyring,
  directory: TrustedDirectory,
): Promise<Opened> {
  if (parseEnvelope(item.envelope).routing.sender !== item.sender)
    throw new Refusal("header_mismatch", "the inbox entry names another sender than the envelope");
  return openEnvelope(item.envelope, ring, signingKeyIn(allKeys(directory)));
}

/** Seals `notice` (sender and sent_at filled in) to the current encryption key of each addressed agency. */
export function sealFor(
  notice: Record<string, unknown>,
  ring: AgencyKeyring,
  directory: TrustedDirectory,
  now: Date = new Date(),
): Promise<string> {
  const keys = allKeys(directory);
  const recipients = (notice.recipients as string[]).map((agency) =>
    sealingKey(
      agency,
      keys.filter((k) => k.agency === agency),
      now,
    ),
  );
  return sealNotice(notice, ring, recipients);
}

/** The reply to `original` (type reply, same case_ref, tlp and priority, to its sender), from `ring`'s
 * agency now; `summary` and `details` are the reply's own. */
export function replyTo(
  original: Notice,
  ring: AgencyKeyring,
  summary: string,
  details?: string,
  now: Date = new Date(),
): Record<string, unknown> {
  return {
    notice_id: crypto.randomUUID(),
    type: "reply",
    priority: original.priority,
    tlp: original.tlp,
    case_ref: original.case_ref,
    recipients: [original.sender],
    summary,
    ...(details !== undefined && { details }),
    subjects: [],
    locations: [],
    attachments: [],
    in_reply_to: original.notice_id,
    sender: ring.agency,
    sent_at: now.toISOString().replace(/\.\d{3}Z$/, "Z"),
  };
}
