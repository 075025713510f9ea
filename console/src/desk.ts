// The desk officer: compose and send notices (the gateway seals them with the desk's keys), watch every
// recipient's state change live, act on alerts, read a case's thread, recall.
import { ApiError, message } from "./api";
import { Status, field, fieldError, h, replace, select, time } from "./dom";
import { INTERPOL_COLOURS, NOTICE_TYPES, PRIORITIES, STATES, TLP, label, tlpClass, tlpText } from "./labels";
import type { Shell } from "./main";
import { noticeProblems } from "@deskbridge/partner";

interface RecipientStatus {
  agency: string;
  state: string;
  acknowledged_at?: string | null;
  replied_at?: string | null;
  ack_due_at?: string | null;
  escalated_at?: string | null;
}

interface SentNotice {
  notice_id: string;
  sender: string;
  case_ref: string;
  notice_type?: string;
  priority?: string;
  tlp?: string;
  submitted_at: string | null;
  recipients: RecipientStatus[];
}

interface Alert {
  kind: string;
  agency: string;
  notice_id?: string | null;
  case_ref?: string | null;
  priority?: string | null;
  since: string;
  detail: string;
}

interface Agency {
  id: string;
  name: string;
  kind: string;
}

const BOARD_POLL_MS = 1000;
const CASE_REF = /^[A-Z]{2,8}-[0-9]{4}-[0-9A-Z]{1,12}$/;

export async function deskView(shell: Shell): Promise<void> {
  const agencies = (await shell.gateway.call<Agency[]>("GET", "/v1/directory/agencies")).filter((a) => a.id !== shell.session.agency);
  const alerts = h("section", { class: "alerts", "aria-label": "Alerts", "aria-live": "polite", "data-testid": "alerts" });
  const board = h("section", { class: "card board", "aria-labelledby": "board-title" });
  const caseView = h("section", { class: "card case", "aria-labelledby": "case-title", hidden: true });
  const compose = composeForm(shell, agencies);
  const tabs = tabBar([
    ["Compose", compose],
    ["Board", board],
    ["Case", caseView],
  ]);
  replace(shell.body, alerts, tabs.bar, compose, board, caseView);
  tabs.show(0);
  const openCase = async (caseRef: string) => {
    tabs.show(2);
    await showCase(shell, caseView, caseRef);
  };
  await liveBoard(shell, board, alerts, openCase);
}

function tabBar(tabs: [string, HTMLElement][]): { bar: HTMLElement; show: (i: number) => void } {
  const buttons = tabs.map(([name], i) => h("button", { type: "button", role: "tab", id: `tab-${i}`, "aria-selected": "false" }, name));
  const show = (index: number) => {
    tabs.forEach(([, panel], i) => {
      panel.hidden = i !== index;
      panel.setAttribute("role", "tabpanel");
      panel.setAttribute("aria-labelledby", `tab-${i}`);
      buttons[i].setAttribute("aria-selected", String(i === index));
      buttons[i].tabIndex = i === index ? 0 : -1;
    });
  };
  buttons.forEach((b, i) => {
    b.addEventListener("click", () => show(i));
    b.addEventListener("keydown", (e) => {
      const step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
      if (!step) return;
      const next = (i + step + buttons.length) % buttons.length;
      show(next);
      buttons[next].focus();
    });
  });
  return { bar: h("nav", { class: "tabs", role: "tablist", "aria-label": "Desk views" }, ...buttons), show };
}

// ---- compose ----------------------------------------------------------------------------------------

interface Repeated {
  box: HTMLElement;
  rows: () => Record<string, HTMLInputElement | HTMLTextAreaElement>[];
}

function repeated(title: string, make: (index: number) => [HTMLElement, Record<string, HTMLInputElement | HTMLTextAreaElement>], max: number): Repeated {
  const list = h("div", { class: "repeat-list" });
  const rows: { el: HTMLElement; controls: Record<string, HTMLInputElement | HTMLTextAreaElement> }[] = [];
  const add = h("button", { type: "button", class: "secondary" }, `Add ${title.toLowerCase()}`);
  add.addEventListener("click", () => {
    if (rows.length >= max) return;
    const [el, controls] = make(rows.length);
    const remove = h("button", { type: "button", class: "link" }, `Remove this ${title.toLowerCase()}`);
    const row = { el: h("fieldset", { class: "repeat" }, h("legend", {}, `${title} ${rows.length + 1}`), el, remove), controls };
    remove.addEventListener("click", () => {
      rows.splice(rows.indexOf(row), 1);
      row.el.remove();
    });
    rows.push(row);
    list.appendChild(row.el);
    Object.values(controls)[0]?.focus();
  });
  return { box: h("div", { class: "repeat-box" }, list, add), rows: () => rows.map((r) => r.controls) };
}

function input(attrs: Record<string, string | boolean> = {}): HTMLInputElement {
  return h("input", { type: "text", ...attrs });
}

function composeForm(shell: Shell, agencies: Agency[]): HTMLElement {
  const status = new Status();
  const controls = new Map<string, HTMLElement>();
  const reg = <T extends HTMLElement>(path: string, el: T): T => {
    controls.set(path, el);
    return el;
  };
  const type = reg("type", select(NOTICE_TYPES, "kidnapping_confinement", { name: "type" }));
  const priority = reg("priority", select(PRIORITIES, "immediate", { name: "priority" }));
  const tlp = reg("tlp", select(TLP, "amber", { name: "tlp" }));
  const tlpSwatch = h("span", { class: tlpClass("amber"), "aria-hidden": "true" }, tlpText("amber"));
  tlp.addEventListener("change", () => {
    tlpSwatch.className = tlpClass(tlp.value);
    tlpSwatch.textContent = tlpText(tlp.value);
  });
  const colour = reg("interpol_colour", select(INTERPOL_COLOURS, "", { name: "interpol_colour" }));
  const caseRef = reg("case_ref", input({ name: "case_ref", placeholder: "KRD-2026-0001", required: true, pattern: CASE_REF.source }));
  const recipientBoxes = agencies.map((a) => h("input", { type: "checkbox", name: "recipients", value: a.id, id: `rcpt-${a.id}` }));
  for (const box of recipientBoxes) box.addEventListener("change", () => showError(controls, "recipients", ""));
  const recipients = reg(
    "recipients",
    h("fieldset", { class: "recipients", id: "recipients", tabindex: "-1" }, h("legend", {}, "Recipients"), ...agencies.map((a, i) => h("label", { class: "check", for: `rcpt-${a.id}` }, recipientBoxes[i], ` ${a.name} (${a.id})`)), h("p", { class: "field-error", id: "recipients-error", role: "alert" })),
  );
  const summary = reg("summary", h("textarea", { name: "summary", rows: "2", maxlength: "2000", required: true }));
  const details = reg("details", h("textarea", { name: "details", rows: "5", maxlength: "20000" }));
  const inReplyTo = reg("in_reply_to", input({ name: "in_reply_to", placeholder: "notice id (for a reply)" }));
  const forwardedFrom = reg("forwarded_from", input({ name: "forwarded_from", placeholder: "notice id (for a forward)" }));
  const expires = reg("expires_at", h("input", { type: "datetime-local", name: "expires_at" }));
  const subjects = repeated("Subject", (i) => {
    const c = {
      name_latin: reg(`subjects.${i}.name_latin`, input({ placeholder: "KIM Minjun" })),
      name_hangul: reg(`subjects.${i}.name_hangul`, input({ lang: "ko", placeholder: "김민준" })),
      date_of_birth: reg(`subjects.${i}.date_of_birth`, h("input", { type: "date" })),
      passport_number: reg(`subjects.${i}.passport_number`, input({ maxlength: "32" })),
      nationality: reg(`subjects.${i}.nationality`, input({ placeholder: "KR", pattern: "[A-Z]{2,3}", maxlength: "3" })),
      description: reg(`subjects.${i}.description`, h("textarea", { rows: "2" })),
    };
    return [h("div", { class: "grid" }, field("Name (Latin)", c.name_latin), field("Name (Hangul)", c.name_hangul), field("Date of birth", c.date_of_birth), field("Passport number", c.passport_number), field("Nationality (ISO code)", c.nationality), field("Description", c.description)), c];
  }, 50);
  const locations = repeated("Location", (i) => {
    const c = {
      country: reg(`locations.${i}.country`, input({ placeholder: "KH", pattern: "[A-Z]{2}", maxlength: "2", required: true })),
      province: reg(`locations.${i}.province`, input({ placeholder: "Preah Sihanouk" })),
      text: reg(`locations.${i}.text`, h("textarea", { rows: "2" })),
      lat: reg(`locations.${i}.coordinates.lat`, h("input", { type: "number", step: "any", min: "-90", max: "90" })),
      lon: reg(`locations.${i}.coordinates.lon`, h("input", { type: "number", step: "any", min: "-180", max: "180" })),
    };
    return [h("div", { class: "grid" }, field("Country (ISO code)", c.country), field("Province", c.province), field("Description", c.text), field("Latitude", c.lat), field("Longitude", c.lon)), c];
  }, 50);
  const attachments = reg("attachments", h("input", { type: "file", multiple: true, name: "attachments" }));

  const form = h(
    "form",
    { class: "card compose", "aria-labelledby": "compose-title", novalidate: true },
    h("h2", { id: "compose-title" }, "New notice"),
    h("div", { class: "grid" }, field("Notice type", type), field("Priority", priority), field("TLP", tlp), field("Interpol notice colour", colour), field("Case reference", caseRef, "Like KRD-2026-0001: 2–8 capitals, the year, a number")),
    h("div", { class: "tlp-preview" }, "Label: ", tlpSwatch),
    recipients,
    field("Summary", summary),
    field("Details", details),
    h("h3", {}, "Subjects"),
    subjects.box,
    h("h3", {}, "Locations"),
    locations.box,
    h("h3", {}, "Attachments and expiry"),
    h("div", { class: "grid" }, field("Attachments (at most 5, under 600 KB together)", attachments), field("Expires at (your local time)", expires), field("In reply to", inReplyTo), field("Forwarded from", forwardedFrom)),
    h("button", { type: "submit", class: "primary" }, "Send notice"),
    status.el,
  );

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void (async () => {
      for (const el of controls.values()) fieldError(el, null);
      const problems: [string, string][] = [];
      const need = (ok: boolean, path: string, text: string) => ok || problems.push([path, text]);
      need(CASE_REF.test(caseRef.value.trim()), "case_ref", "Write the case reference like KRD-2026-0001 (capitals, year, number).");
      const chosen = recipientBoxes.filter((b) => b.checked).map((b) => b.value);
      need(chosen.length > 0, "recipients", "Pick at least one recipient agency.");
      need(summary.value.trim().length > 0, "summary", "Write a summary: recipients see it first.");
      need(type.value !== "reply" || inReplyTo.value.trim() !== "", "in_reply_to", "A reply needs the id of the notice it answers.");
      const files = Array.from(attachments.files ?? []);
      need(files.length <= 5, "attachments", "At most 5 attachments.");
      need(files.every((f) => f.size <= 500_000), "attachments", "Each attachment must be under 500 KB.");
      // Base64 inside a sealed envelope of at most 2 MiB: together they must leave room for the rest.
      need(files.reduce((sum, f) => sum + f.size, 0) <= 600_000, "attachments", "Together the attachments must stay under 600 KB; send the rest in a second notice.");
      const draft: Record<string, unknown> = {
        notice_id: crypto.randomUUID(),
        type: type.value,
        priority: priority.value,
        tlp: tlp.value,
        case_ref: caseRef.value.trim(),
        recipients: chosen,
        summary: summary.value.trim(),
        subjects: subjects.rows().map((c) => compact({ name_latin: c.name_latin.value.trim(), name_hangul: c.name_hangul.value.trim(), date_of_birth: c.date_of_birth.value, passport_number: c.passport_number.value.trim(), nationality: c.nationality.value.trim(), description: c.description.value.trim() })),
        locations: locations.rows().map((c) => compact({ country: c.country.value.trim(), province: c.province.value.trim(), text: c.text.value.trim(), coordinates: c.lat.value && c.lon.value ? { lat: Number(c.lat.value), lon: Number(c.lon.value) } : undefined })),
      };
      subjects.rows().forEach((c, i) => need(Boolean(c.name_latin.value.trim() || c.name_hangul.value.trim() || c.description.value.trim()), `subjects.${i}.name_latin`, "A subject needs a name (Latin or Hangul) or a description."));
      locations.rows().forEach((c, i) => need(/^[A-Z]{2}$/.test(c.country.value.trim()), `locations.${i}.country`, "Write the country as its two-letter ISO code, e.g. KH."));
      if (details.value.trim()) draft.details = details.value;
      if (colour.value) draft.interpol_colour = colour.value;
      if (inReplyTo.value.trim()) draft.in_reply_to = inReplyTo.value.trim();
      if (forwardedFrom.value.trim()) draft.forwarded_from = forwardedFrom.value.trim();
      if (expires.value) draft.expires_at = new Date(expires.value).toISOString();
      // The same closed schema the gateway applies, checked here first so each error sits beside its field.
      const said = new Set(problems.map(([path]) => path));
      for (const p of noticeProblems({ ...draft, attachments: [], sender: shell.session.agency, sent_at: new Date().toISOString() })) {
        if (!said.has(p.path)) problems.push([p.path, sentenceFor(p.message)]);
      }
      if (problems.length) {
        for (const [path, text] of problems) showError(controls, path, text);
        status.error(`The notice was not sent: ${problems.length} field${problems.length > 1 ? "s need" : " needs"} attention.`);
        return;
      }
      try {
        status.busy(files.length ? "Reading attachments…" : "Sealing and sending…");
        draft.attachments = await Promise.all(files.map(async (f) => ({ filename: f.name, media_type: f.type || "application/octet-stream", data_b64: await base64(f) })));
        status.busy("Sealing and sending…");
        const accepted = await shell.gateway.call<{ notice_id: string }>("POST", "/v1/notices", { json: draft });
        status.ok(`Sent: notice ${accepted.notice_id} is durable and on its way to ${chosen.join(", ")}.`);
        form.dataset.lastNotice = accepted.notice_id;
      } catch (error) {
        if (error instanceof ApiError && error.code === "invalid_request") {
          const shown = error.detail.split("; ").map((part) => {
            const at = part.indexOf(": ");
            return at > 0 && showError(controls, part.slice(0, at), part.slice(at + 2));
          });
          if (shown.some(Boolean)) {
            status.error("The notice was not sent: the server refused the fields marked below.");
            return;
          }
        }
        status.error(`The notice was not sent. ${message(error)}`);
      }
    })();
  });
  return form;
}

function sentenceFor(problem: string): string {
  return problem.charAt(0).toUpperCase() + problem.slice(1) + (problem.endsWith(".") ? "" : ".");
}

function showError(controls: Map<string, HTMLElement>, path: string, text: string): boolean {
  const el = controls.get(path) ?? controls.get(path.split(".").slice(0, -1).join(".")) ?? controls.get(path.split(".")[0]);
  if (!el) return false;
  if (el.tagName === "FIELDSET") {
    const error = document.getElementById(`${el.id}-error`);
    if (error) error.textContent = text;
  } else fieldError(el, text);
  return true;
}

function compact(value: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== "" && v !== undefined));
}

async function base64(file: File): Promise<string> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

// ---- the live board ---------------------------------------------------------------------------------

async function liveBoard(shell: Shell, board: HTMLElement, alerts: HTMLElement, openCase: (caseRef: string) => Promise<void>): Promise<void> {
  const table = h("tbody");
  const status = new Status();
  replace(
    board,
    h("h2", { id: "board-title" }, "Sent notices"),
    h("p", { class: "hint" }, "Each recipient's state, updated as it changes: ", ...STATES.map((s) => h("span", { class: `state state-${s}` }, s)), "."),
    h("table", { "data-testid": "board" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Notice"), h("th", { scope: "col" }, "Case"), h("th", { scope: "col" }, "Sent"), h("th", { scope: "col" }, "Recipients"), h("th", { scope: "col" }, "Actions"))), table),
    status.el,
  );
  let etag: string | null = null;
  let alertsShown = "";
  let tick = 0;
  for (;;) {
    try {
      // The gateway answers 304 while nothing changed, so polling every second costs no body.
      const page: { body: { items: SentNotice[] }; etag: string | null } | null = await shell.gateway.poll<{ items: SentNotice[] }>("/v1/notices", etag, { limit: 50 });
      if (page) {
        etag = page.etag;
        replace(table, ...page.body.items.map((n: SentNotice) => boardRow(shell, n, openCase, status)));
      }
      if (tick++ % 5 === 0) {
        const current = await shell.gateway.call<Alert[]>("GET", "/v1/alerts");
        const text = JSON.stringify(current);
        if (text !== alertsShown) {
          alertsShown = text;
          replace(alerts, ...current.map((a) => h("p", { class: `alert alert-${a.kind}`, role: "alert" }, a.kind === "sla_escalation" ? `Overdue: ${a.agency} has not acknowledged ${a.priority ?? ""} notice ${a.notice_id} (${a.case_ref}) since ${time(a.since)}. ${a.detail}` : `Webhook delivery parked for ${a.agency} since ${time(a.since)}: ${a.detail}`)));
        }
      }
      if (status.el.classList.contains("error")) status.clear();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) throw error;
      status.error(`The board is not up to date. ${message(error)} Retrying…`);
    }
    await new Promise((r) => setTimeout(r, BOARD_POLL_MS));
  }
}

function boardRow(shell: Shell, notice: SentNotice, openCase: (caseRef: string) => Promise<void>, status: Status): HTMLElement {
  const caseButton = h("button", { type: "button", class: "link" }, notice.case_ref);
  caseButton.addEventListener("click", () => void openCase(notice.case_ref));
  const recall = h("button", { type: "button", class: "secondary danger" }, "Recall");
  recall.addEventListener("click", () => void recallNotice(shell, notice, status));
  const everyoneDone = notice.recipients.every((r) => ["recalled", "expired"].includes(r.state));
  recall.toggleAttribute("disabled", everyoneDone);
  return h(
    "tr",
    { "data-notice": notice.notice_id },
    h("td", {}, h("code", { title: notice.notice_id }, notice.notice_id), h("br"), notice.notice_type ? label(NOTICE_TYPES, notice.notice_type) : "", " ", notice.priority ? h("span", { class: `priority priority-${notice.priority}` }, notice.priority) : null, " ", notice.tlp ? h("span", { class: tlpClass(notice.tlp) }, tlpText(notice.tlp)) : null),
    h("td", {}, caseButton),
    h("td", {}, time(notice.submitted_at)),
    h("td", {}, h("ul", { class: "recipient-states" }, ...notice.recipients.map((r) => h("li", { "data-agency": r.agency }, `${r.agency} `, h("span", { class: `state state-${r.state}`, "data-state": r.state }, r.state), r.escalated_at ? h("span", { class: "state state-overdue" }, "overdue") : null)))),
    h("td", {}, recall),
  );
}

async function recallNotice(shell: Shell, notice: SentNotice, status: Status): Promise<void> {
  const reason = window.prompt(`Recall notice ${notice.notice_id}? Unread copies vanish; read ones are marked recalled. Reason (optional):`);
  if (reason === null) return;
  try {
    status.busy("Recalling…");
    await shell.gateway.call("POST", `/v1/notices/${notice.notice_id}/recall`, { json: reason ? { reason } : {} });
    status.ok(`Recall of ${notice.notice_id} requested; the board shows each copy as it is withdrawn.`);
  } catch (error) {
    status.error(`The recall failed. ${message(error)}`);
  }
}

// ---- the case thread --------------------------------------------------------------------------------

interface CaseNotice {
  notice_id: string;
  sender: string;
  notice_type: string;
  priority: string;
  tlp: string;
  sent_at: string;
  recalled_at?: string | null;
  depth: number;
  recipients: RecipientStatus[];
}

async function showCase(shell: Shell, panel: HTMLElement, caseRef: string): Promise<void> {
  const status = new Status();
  replace(panel, h("h2", { id: "case-title" }, `Case ${caseRef}`), status.el);
  status.busy("Loading the case…");
  try {
    const thread = await shell.gateway.call<{ notices: CaseNotice[] }>("GET", `/v1/cases/${encodeURIComponent(caseRef)}`);
    status.clear();
    panel.appendChild(
      h(
        "ol",
        { class: "thread", "data-testid": "thread" },
        ...thread.notices.map((n) =>
          h(
            "li",
            { class: `depth-${Math.min(n.depth, 6)}`, "data-notice": n.notice_id },
            h("strong", {}, label(NOTICE_TYPES, n.notice_type)),
            ` from ${n.sender}, ${time(n.sent_at)} `,
            h("span", { class: tlpClass(n.tlp) }, tlpText(n.tlp)),
            n.recalled_at ? h("span", { class: "state state-recalled" }, "recalled") : null,
            h("ul", { class: "recipient-states" }, ...n.recipients.map((r) => h("li", {}, `${r.agency} `, h("span", { class: `state state-${r.state}` }, r.state)))),
          ),
        ),
      ),
    );
  } catch (error) {
    status.error(message(error));
  }
}
