// Builds the page from elements and text nodes only: notice contents never pass through innerHTML.

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | boolean | number | EventListener | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(name.replace(/^on/, ""), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, ...children);
  return el;
}

export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
}

export function replace(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, ...children);
}

let fieldIds = 0;

/** A labelled form field; `control` gets an id the label points at. */
export function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  const id = control.id || `f${++fieldIds}`;
  control.id = id;
  const error = h("p", { class: "field-error", id: `${id}-error`, role: "alert" });
  control.setAttribute("aria-describedby", `${id}-error`);
  // An error says what to fix; once the person edits the field it has done its work.
  const clear = () => fieldError(control, null);
  control.addEventListener("input", clear);
  control.addEventListener("change", clear);
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("p", { class: "hint" }, hint) : null, error);
}

/** Shows `message` beside the field whose control has this id (or clears it). */
export function fieldError(control: HTMLElement, message: string | null): void {
  const error = document.getElementById(`${control.id}-error`);
  if (error) error.textContent = message ?? "";
  control.toggleAttribute("aria-invalid", message !== null);
}

export function select(options: [string, string][], value?: string, attrs: Attrs = {}): HTMLSelectElement {
  const el = h("select", attrs);
  for (const [v, label] of options) el.appendChild(h("option", { value: v, selected: v === value }, label));
  return el;
}

export function time(iso: string | null | undefined): string {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

/** A status line for long operations and for errors, read out by screen readers. */
export class Status {
  readonly el = h("p", { class: "status", role: "status", "aria-live": "polite" });
  busy(message: string): void {
    this.el.className = "status busy";
    this.el.textContent = message;
  }
  ok(message: string): void {
    this.el.className = "status ok";
    this.el.textContent = message;
  }
  error(message: string): void {
    this.el.className = "status error";
    this.el.textContent = message;
  }
  clear(): void {
    this.el.className = "status";
    this.el.textContent = "";
  }
}
