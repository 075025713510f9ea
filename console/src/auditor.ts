// The auditor: the log as a timeline, the checkpoints with their witnesses, and per notice the evidence,
// every proof and signature of it checked here against the log key the auditor pinned, not the server's word.
import { message } from "./api";
import { Status, field, h, replace, time } from "./dom";
import type { Shell } from "./main";
import type { AuditRecord, EvidenceBundle } from "./evidence/bundle";
import { verifyEvidence } from "./evidence/verify";
import { cosignatureTime, openLogCheckpoint, parseNote, parseVkey } from "./evidence/tlog";

export async function auditorView(shell: Shell): Promise<void> {
  const timeline = h("section", { class: "card", "aria-labelledby": "timeline-title" });
  const checkpoints = h("section", { class: "card", "aria-labelledby": "checkpoints-title" });
  const evidence = h("section", { class: "card", "aria-labelledby": "evidence-title" });
  replace(shell.body, evidence, timeline, checkpoints);
  const showEvidence = evidencePanel(shell, evidence);
  timelinePanel(shell, timeline, showEvidence);
  await checkpointPanel(shell, checkpoints);
}

function timelinePanel(shell: Shell, panel: HTMLElement, showEvidence: (noticeId: string) => Promise<void>): void {
  const status = new Status();
  const filters = {
    agency: h("input", { type: "text", name: "agency", placeholder: "kh-cnp" }),
    notice_id: h("input", { type: "text", name: "notice_id" }),
    case_ref: h("input", { type: "text", name: "case_ref", placeholder: "KRD-2026-0001" }),
    type: h("input", { type: "text", name: "type", placeholder: "notice.acknowledged" }),
    since: h("input", { type: "datetime-local", name: "since" }),
    until: h("input", { type: "datetime-local", name: "until" }),
  };
  const rows = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  let after = 0;
  const load = async (fresh: boolean) => {
    if (fresh) {
      after = 0;
      rows.replaceChildren();
    }
    status.busy("Reading the log…");
    try {
      const query: Record<string, string | number | undefined> = { after, limit: 200 };
      for (const [name, input] of Object.entries(filters)) {
        const value = input.value.trim();
        if (value) query[name] = input.type === "datetime-local" ? new Date(value).toISOString() : value;
      }
      const page = await shell.audit.call<{ entries: AuditRecord[]; next_after: number | null; head_seq: number }>("GET", "/v1/audit/events", { query });
      for (const entry of page.entries) rows.appendChild(eventRow(entry, showEvidence));
      after = page.next_after ?? after;
      more.hidden = page.next_after === null;
      status.ok(`${rows.childElementCount} event${rows.childElementCount === 1 ? "" : "s"} shown; the log holds ${page.head_seq}.`);
    } catch (error) {
      status.error(message(error));
    }
  };
  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter the log" },
    h("div", { class: "grid" }, field("Agency", filters.agency), field("Notice id", filters.notice_id), field("Case reference", filters.case_ref), field("Event type", filters.type), field("Occurred since (local time)", filters.since), field("Occurred before (local time)", filters.until)),
    h("button", { type: "submit", class: "primary" }, "Show events"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void load(true);
  });
  more.addEventListener("click", () => void load(false));
  replace(panel, h("h2", { id: "timeline-title" }, "Audit log"), form, status.el, h("table", { "data-testid": "timeline" }, h("thead", {}, h("tr", {}, ...["#", "Occurred", "Event", "Actor", "Agency", "Notice / case", "Details"].map((t) => h("th", { scope: "col" }, t)))), rows), more);
  void load(true);
}

function eventRow(entry: AuditRecord, showEvidence: (noticeId: string) => Promise<void>): HTMLElement {
  let notice: Node | string = entry.case_ref ?? "";
  if (entry.notice_id) {
    const button = h("button", { type: "button", class: "link", title: "Check this notice's evidence" }, entry.notice_id);
    button.addEventListener("click", () => void showEvidence(entry.notice_id!));
    notice = h("span", {}, button, entry.case_ref ? ` (${entry.case_ref})` : "");
  }
  const details = Object.entries(entry.details).map(([k, v]) => `${k}=${v}`).join(" ");
  return h("tr", {}, h("td", {}, String(entry.seq)), h("td", {}, time(entry.occurred_at)), h("td", {}, h("code", {}, entry.event_type)), h("td", {}, entry.actor), h("td", {}, entry.agency ?? ""), h("td", {}, notice), h("td", { class: "details" }, details));
}

interface NoteCheck {
  ok: boolean;
  detail: string;
  cosigners: string[];
}

/** The log's signature checked with the pinned key; the other lines are witnesses' cosignatures, whose
 * keys are checked as part of a notice's evidence. */
async function checkNote(note: string, vkey: string): Promise<NoteCheck> {
  let cosigners: string[] = [];
  try {
    const log = await parseVkey(vkey);
    cosigners = parseNote(note)
      .signatures.filter((s) => s.name !== log.name)
      .map((s) => `${s.name}${s.signature.length === 72 ? ` at ${new Date(Number(cosignatureTime(s.signature)) * 1000).toISOString()}` : ""}`);
    await openLogCheckpoint(note, log);
    return { ok: true, detail: "", cosigners };
  } catch (error) {
    return { ok: false, detail: message(error), cosigners };
  }
}

async function checkpointPanel(shell: Shell, panel: HTMLElement): Promise<void> {
  const status = new Status();
  const list = h("ol", { class: "checkpoints", reversed: true, "data-testid": "checkpoints" });
  const reload = h("button", { type: "button", class: "secondary" }, "Reload checkpoints");
  reload.addEventListener("click", () => void checkpointPanel(shell, panel));
  replace(panel, h("h2", { id: "checkpoints-title" }, "Checkpoints"), h("p", { class: "hint" }, "Each signed tree head, its signature checked here with the pinned log key, and the witnesses that cosigned it."), reload, status.el, list);
  status.busy("Reading checkpoints…");
  try {
    let after: number | null = 0;
    let items: { size: number }[] = [];
    while (after !== null) {
      const page: { checkpoints: { size: number }[]; next_after: number | null } = await shell.audit.call("GET", "/v1/audit/checkpoints", { query: { after } });
      items = items.concat(page.checkpoints);
      after = page.next_after;
    }
    const latest = items.slice(-20).reverse();
    for (const item of latest) {
      const note = await shell.audit.text(`/v1/audit/checkpoints/${item.size}`);
      const check = await checkNote(note, shell.session.logKey ?? "");
      list.appendChild(
        h(
          "li",
          { class: check.ok ? "ok" : "failed", "data-ok": String(check.ok) },
          h("strong", {}, `size ${item.size}`),
          ` ${check.ok ? "✔ signature verified" : `✘ ${check.detail}`}`,
          h("ul", { class: "witnesses" }, ...(check.cosigners.length ? check.cosigners.map((w) => h("li", {}, `cosigned by ${w}`)) : [h("li", { class: "hint" }, "no witness cosignature yet")])),
        ),
      );
    }
    status.ok(`${items.length} checkpoint${items.length === 1 ? "" : "s"} published${items.length > 20 ? "; the latest 20 shown" : ""}.`);
  } catch (error) {
    status.error(message(error));
  }
}

function evidencePanel(shell: Shell, panel: HTMLElement): (noticeId: string) => Promise<void> {
  const status = new Status();
  const noticeId = h("input", { type: "text", name: "evidence_notice", required: true, spellcheck: "false" });
  const result = h("div", { class: "evidence", "data-testid": "evidence" });
  const show = async (id: string) => {
    noticeId.value = id;
    result.replaceChildren();
    status.busy("Fetching the evidence bundle…");
    try {
      const bundle = await shell.audit.call<EvidenceBundle>("GET", `/v1/audit/evidence/${encodeURIComponent(id)}`);
      status.busy(`Checking ${bundle.events.length} events and their proofs…`);
      const report = await verifyEvidence(bundle, shell.session.logKey ?? "");
      const failed = report.checks.filter((c) => !c.ok);
      replace(
        result,
        h("p", { class: `verdict ${report.ok ? "verified" : "refused"}`, "data-verdict": report.ok ? "verified" : "refused", role: report.ok ? "status" : "alert" }, report.ok ? `Every check passed: ${report.checks.length} checks against checkpoint ${bundle.tree_size}.` : `${failed.length} check${failed.length > 1 ? "s" : ""} FAILED: ${failed.map((c) => c.check).join("; ")}.`),
        h("ul", { class: "checks" }, ...report.checks.map((c) => h("li", { class: c.ok ? "ok" : "failed", "data-ok": String(c.ok) }, `${c.ok ? "✔" : "✘"} ${c.check}`, c.detail ? h("span", { class: "hint" }, ` – ${c.detail}`) : null))),
        h("h3", {}, "Events"),
        h("ol", { class: "events" }, ...bundle.events.map((e) => h("li", {}, `${time(e.record.occurred_at)} `, h("code", {}, e.record.event_type), ` ${e.record.agency ?? ""} (leaf ${e.index})`))),
      );
      status.clear();
    } catch (error) {
      status.error(message(error));
    }
  };
  const form = h("form", { "aria-label": "Check a notice's evidence" }, field("Notice id", noticeId), h("button", { type: "submit", class: "primary" }, "Check evidence"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (noticeId.value.trim()) void show(noticeId.value.trim());
  });
  replace(panel, h("h2", { id: "evidence-title" }, "Evidence of a notice"), h("p", { class: "hint" }, "Every event of one notice, each leaf's inclusion proof, the recipients' signed receipts and the checkpoint, all checked in this browser."), form, status.el, result);
  return show;
}
