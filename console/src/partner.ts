// A partner agency: its private keys live in this browser as non-extractable WebCrypto keys; every notice
// is decrypted and both signatures checked here, receipts and replies are signed here. The gateway only
// ever sees ciphertext, signatures and public keys.
import { ApiError, message } from "./api";
import { Status, field, h, replace, select, time } from "./dom";
import { NOTICE_TYPES, PRIORITIES, TLP, label, tlpClass, tlpText } from "./labels";
import type { Shell } from "./main";
import {
  type AgencyKeyring,
  type DirectoryKey,
  importKeyFile,
  type InboxItem,
  makeReceipt,
  type Notice,
  type Opened,
  openEnvelope,
  readJwks,
  Refusal,
  type SealingRecipient,
  sealingKey,
  sealNotice,
} from "@deskbridge/partner";
import { loadKeyring, saveKeyring } from "./keystore";

const WAIT_S = 25;
const STATE_REFRESH_MS = 5000;

/** The directory's public keys, fetched per agency and read again when a kid is not known yet (a
 * rotation) or a reply is sealed (the current encryption key). Every kid is checked as its thumbprint. */
class Directory {
  private readonly keys = new Map<string, DirectoryKey[]>();

  constructor(private readonly shell: Shell) {}

  private async of(agency: string, fresh: boolean): Promise<DirectoryKey[]> {
    let keys = this.keys.get(agency);
    if (fresh || !keys) {
      keys = await readJwks(agency, await this.shell.gateway.call("GET", `/v1/directory/agencies/${encodeURIComponent(agency)}/jwks`));
      this.keys.set(agency, keys);
    }
    return keys;
  }

  readonly signingKey = async (kid: string, sender: string): Promise<DirectoryKey | undefined> => {
    const find = (keys: DirectoryKey[]) => keys.find((k) => k.kid === kid && k.use === "sig");
    return find(await this.of(sender, false)) ?? find(await this.of(sender, true));
  };

  async encryptionKey(agency: string): Promise<SealingRecipient> {
    const key = sealingKey(agency, await this.of(agency, true));
    return { agency, kid: key.kid, key: key.key };
  }
}

/** At sign-in: the key file is imported once; afterwards the keys come from this browser's IndexedDB. */
export async function partnerSignIn(agency: string, keyFile: File | undefined, status: Status): Promise<void> {
  if (keyFile) {
    status.busy("Importing your keys into this browser…");
    const ring = await importKeyFile(await keyFile.text());
    if (ring.agency !== agency) throw new Error(`This key file belongs to ${ring.agency}, but the credential to ${agency}. Choose ${agency}'s key file.`);
    await saveKeyring(ring);
    return;
  }
  if (!(await loadKeyring(agency))) throw new Error(`This browser holds no keys for ${agency} yet. Choose your agency's key file (keys.jwks.json) once.`);
}

export async function partnerView(shell: Shell): Promise<void> {
  const agency = shell.session.agency!;
  const ring = await loadKeyring(agency);
  if (!ring) throw new Error(`This browser holds no keys for ${agency}. Sign out and sign in with your key file.`);
  const directory = new Directory(shell);
  const status = new Status();
  const list = h("div", { class: "inbox", "data-testid": "inbox" });
  replace(
    shell.body,
    h("section", { class: "card", "aria-labelledby": "inbox-title" }, h("h2", { id: "inbox-title" }, `Inbox of ${agency}`), h("p", { class: "hint" }, "Notices arrive here as they are delivered. Each is opened and checked in this browser with your own keys."), status.el, list),
  );
  const shown = new Map<string, HTMLElement>();
  let cursor: string | undefined;
  status.busy("Waiting for notices…");
  // States change without a new delivery (recall, expiry): looked at on their own beat, not the long-poll's.
  void (async () => {
    for (;;) {
      await new Promise((r) => setTimeout(r, STATE_REFRESH_MS));
      try {
        await refreshStates(shell, shown);
      } catch {
        // the inbox loop reports what is wrong; the next beat tries again
      }
    }
  })();
  for (;;) {
    try {
      const page = await shell.gateway.call<{ items: InboxItem[]; next_cursor: string | null }>("GET", "/v1/inbox", { query: { after: cursor, wait: WAIT_S, limit: 50 } });
      for (const item of page.items) {
        const card = await noticeCard(shell, ring, directory, item);
        shown.get(item.notice_id)?.remove();
        shown.set(item.notice_id, card);
        list.prepend(card);
      }
      cursor = page.next_cursor ?? cursor;
      status.ok(shown.size ? `${shown.size} notice${shown.size > 1 ? "s" : ""}; listening for more.` : "No notices yet; listening.");
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) throw error;
      status.error(`The inbox is not up to date. ${message(error)} Retrying…`);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

/** Recalled copies are marked as the gateway reports them; an expired one leaves the inbox, so a card
 * whose notice is gone and past its expiry is marked expired. */
async function refreshStates(shell: Shell, shown: Map<string, HTMLElement>): Promise<void> {
  const page = await shell.gateway.call<{ items: InboxItem[] }>("GET", "/v1/inbox", { query: { limit: 500 } });
  const listed = new Set<string>();
  for (const item of page.items) {
    listed.add(item.notice_id);
    const card = shown.get(item.notice_id);
    if (card && card.dataset.state !== item.state) markState(card, item.state);
  }
  for (const [noticeId, card] of shown) {
    const expires = card.dataset.expiresAt ? Date.parse(card.dataset.expiresAt) : NaN;
    if (!listed.has(noticeId) && expires <= Date.now() && card.dataset.state !== "expired") markState(card, "expired");
  }
}

function markState(card: HTMLElement, state: string): void {
  card.dataset.state = state;
  const badge = card.querySelector<HTMLElement>(".copy-state");
  if (badge) {
    badge.className = `copy-state state state-${state}`;
    badge.textContent = state;
  }
  const withdrawn = state === "recalled" || state === "expired";
  card.classList.toggle("withdrawn", withdrawn);
  if (withdrawn) card.querySelectorAll<HTMLButtonElement>(".actions button").forEach((b) => b.setAttribute("disabled", ""));
  const note = card.querySelector<HTMLElement>(".withdrawn-note");
  if (note) note.textContent = state === "recalled" ? "The sender recalled this notice: do not act on it." : state === "expired" ? "This notice has expired." : "";
}

async function noticeCard(shell: Shell, ring: AgencyKeyring, directory: Directory, item: InboxItem): Promise<HTMLElement> {
  const card = h("article", { class: "notice", "data-notice": item.notice_id, "data-expires-at": item.expires_at ?? undefined, "aria-label": `Notice ${item.notice_id}` });
  const banner = h("div", { class: `tlp-banner ${tlpClass(item.tlp)}`, role: "note" }, `${tlpText(item.tlp)} – ${label(TLP, item.tlp).split(" – ")[1] ?? ""}`);
  const head = h("p", { class: "meta" }, h("span", { class: `copy-state state state-${item.state}` }, item.state), " ", h("span", { class: `priority priority-${item.priority}` }, item.priority), ` ${label(NOTICE_TYPES, item.notice_type)} · case ${item.case_ref} · from ${item.sender} · delivered ${time(item.delivered_at)}`);
  const withdrawn = h("p", { class: "withdrawn-note", role: "status" });
  replace(card, banner, head, withdrawn, h("p", { class: "status busy" }, "Opening and checking…"));
  markState(card, item.state);
  let opened: Opened;
  try {
    opened = await openEnvelope(item.envelope, ring, directory.signingKey);
  } catch (error) {
    const code = error instanceof Refusal ? error.code : "error";
    const detail = error instanceof Refusal ? error.detail : message(error);
    replace(card, banner, head, withdrawn, h("p", { class: "verdict refused", role: "alert", "data-verdict": "refused" }, `Refused: ${code} – ${detail}. Do not act on this notice; tell the desk.`));
    markState(card, item.state);
    return card;
  }
  const notice = opened.notice as unknown as Notice;
  const ack = h("button", { type: "button", class: "primary" }, "Acknowledge");
  const ackStatus = new Status();
  ack.addEventListener("click", () => void acknowledge(shell, ring, item, opened, ack, ackStatus));
  if (["acknowledged", "replied", "recalled", "expired"].includes(item.state)) ack.setAttribute("disabled", "");
  const replyButton = h("button", { type: "button", class: "secondary" }, "Reply");
  const replySlot = h("div", { class: "reply-slot" });
  replyButton.addEventListener("click", () => {
    replace(replySlot, replyForm(shell, ring, directory, notice));
    replySlot.querySelector("textarea")?.focus();
  });
  replace(
    card,
    banner,
    head,
    withdrawn,
    h("p", { class: "verdict verified", "data-verdict": "verified" }, `signature verified: ${opened.inner.agency}`, h("span", { class: "hint" }, ` (outer and inner signatures by key ${opened.inner.kid.slice(0, 12)}…; routing header matches the signed notice)`)),
    h("h3", {}, notice.summary),
    notice.details ? h("p", { class: "details" }, notice.details) : null,
    facts(notice),
    h("div", { class: "actions" }, ack, replyButton),
    ackStatus.el,
    replySlot,
  );
  markState(card, item.state);
  return card;
}

function facts(n: Notice): HTMLElement {
  const rows: [string, Node | string][] = [
    ["Notice id", n.notice_id],
    ["Sent", time(n.sent_at)],
    ["Recipients", n.recipients.join(", ")],
  ];
  if (n.interpol_colour) rows.push(["Interpol colour", n.interpol_colour]);
  if (n.expires_at) rows.push(["Expires", time(n.expires_at)]);
  if (n.in_reply_to) rows.push(["In reply to", n.in_reply_to]);
  for (const s of n.subjects ?? []) rows.push(["Subject", [s.name_latin, s.name_hangul, s.date_of_birth && `born ${s.date_of_birth}`, s.nationality, s.passport_number && `passport ${s.passport_number}`, s.description].filter(Boolean).join(" · ")]);
  for (const l of n.locations ?? []) rows.push(["Location", [l.country, l.province, l.text, l.coordinates && `${l.coordinates.lat}, ${l.coordinates.lon}`].filter(Boolean).join(" · ")]);
  for (const a of n.attachments ?? []) rows.push(["Attachment", download(a)]);
  return h("dl", { class: "facts" }, ...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function download(a: { filename: string; media_type: string; data_b64: string }): HTMLElement {
  const link = h("a", { href: "#", download: a.filename }, a.filename);
  link.addEventListener("click", () => {
    const bytes = Uint8Array.from(atob(a.data_b64), (c) => c.charCodeAt(0));
    link.href = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
  });
  return link;
}

async function acknowledge(shell: Shell, ring: AgencyKeyring, item: InboxItem, opened: Opened, button: HTMLButtonElement, status: Status): Promise<void> {
  button.setAttribute("disabled", "");
  status.busy("Signing the receipt…");
  try {
    const receipt = await makeReceipt(ring, item.notice_id, opened.envelopeSha256);
    await shell.gateway.call("POST", `/v1/inbox/${item.notice_id}/ack`, { json: { receipt } });
    status.ok("Acknowledged with a receipt signed in this browser.");
    const card = button.closest<HTMLElement>("article");
    if (card) markState(card, "acknowledged");
  } catch (error) {
    button.removeAttribute("disabled");
    status.error(`Not acknowledged. ${message(error)}`);
  }
}

function replyForm(shell: Shell, ring: AgencyKeyring, directory: Directory, original: Notice): HTMLElement {
  const status = new Status();
  const summary = h("textarea", { rows: "2", maxlength: "2000", required: true });
  const details = h("textarea", { rows: "4", maxlength: "20000" });
  const priority = select(PRIORITIES, original.priority);
  const tlp = select(TLP.filter(([v]) => TLP.findIndex(([w]) => w === v) >= TLP.findIndex(([w]) => w === original.tlp)), original.tlp);
  const form = h("form", { class: "reply", "aria-label": `Reply to ${original.notice_id}` }, h("h4", {}, `Reply to ${original.sender} (case ${original.case_ref})`), field("Reply", summary), field("Details", details), h("div", { class: "grid" }, field("Priority", priority), field("TLP (never looser than the notice's)", tlp)), h("button", { type: "submit", class: "primary" }, "Seal and send reply"), status.el);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void (async () => {
      if (!summary.value.trim()) {
        status.error("Write the reply before sending it.");
        summary.focus();
        return;
      }
      try {
        status.busy("Fetching the recipient's public key…");
        const recipient = await directory.encryptionKey(original.sender);
        const notice: Record<string, unknown> = {
          notice_id: crypto.randomUUID(),
          type: "reply",
          priority: priority.value,
          tlp: tlp.value,
          case_ref: original.case_ref,
          recipients: [original.sender],
          summary: summary.value.trim(),
          subjects: [],
          locations: [],
          attachments: [],
          in_reply_to: original.notice_id,
          sender: ring.agency,
          sent_at: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
        };
        if (details.value.trim()) notice.details = details.value;
        status.busy("Sealing in this browser…");
        const envelope = await sealNotice(notice, ring, [recipient]);
        status.busy("Sending…");
        const accepted = await shell.gateway.call<{ notice_id: string }>("POST", "/v1/envelopes", { body: envelope });
        status.ok(`Reply ${accepted.notice_id} sealed here and accepted by the gateway.`);
        form.querySelector("button")?.setAttribute("disabled", "");
        const card = form.closest<HTMLElement>("article");
        if (card) markState(card, "replied");
      } catch (error) {
        status.error(`The reply was not sent. ${message(error)}`);
      }
    })();
  });
  return form;
}
