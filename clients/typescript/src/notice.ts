// The notice (schemas/notices.py) and the routing header (schemas/envelopes.py) as a partner reads them,
// and the binding check between the two (docs/envelope.md §6). The checks follow the pydantic models:
// closed objects, the same patterns, lengths and enums, a null member the same as an absent one.
// Stricter than pydantic's lax parsing: times and dates only as RFC 3339 text, numbers only as JSON numbers.

import { isRecord } from "./json.js";

export const NOTICE_TYPES = [
  "missing_person",
  "kidnapping_confinement",
  "wanted_person",
  "scam_compound",
  "victim_rescue_request",
  "death_report",
  "intel_report",
  "reply",
] as const;
export const PRIORITIES = ["flash", "immediate", "routine"] as const;
export const TLPS = ["clear", "green", "amber", "amber+strict", "red"] as const;
export const INTERPOL_COLOURS = ["yellow", "red", "blue", "green", "black", "orange", "purple"] as const;

export type NoticeType = (typeof NOTICE_TYPES)[number];
export type Priority = (typeof PRIORITIES)[number];
export type Tlp = (typeof TLPS)[number];
export type InterpolColour = (typeof INTERPOL_COLOURS)[number];

export interface Person {
  name_latin?: string | null;
  name_hangul?: string | null;
  date_of_birth?: string | null;
  passport_number?: string | null;
  nationality?: string | null;
  description?: string | null;
}

export interface Location {
  country: string;
  province?: string | null;
  text?: string | null;
  coordinates?: { lat: number; lon: number } | null;
}

export interface Attachment {
  filename: string;
  media_type: string;
  /** Standard base64 (RFC 4648 §4), not base64url. */
  data_b64: string;
}

export interface Notice {
  notice_id: string;
  type: NoticeType;
  priority: Priority;
  tlp: Tlp;
  case_ref: string;
  recipients: string[];
  summary: string;
  details?: string | null;
  interpol_colour?: InterpolColour | null;
  subjects?: Person[];
  locations?: Location[];
  attachments?: Attachment[];
  in_reply_to?: string | null;
  forwarded_from?: string | null;
  expires_at?: string | null;
  sender: string;
  sent_at: string;
}

/** The routing members of the JWE protected header (docs/envelope.md §4.2), values as sent. */
export interface RoutingHeader {
  sender: string;
  notice_id: string;
  notice_type: NoticeType;
  priority: Priority;
  tlp: Tlp;
  case_ref: string;
  recipients: string[];
  sent_at: string;
  expires_at?: string | null;
  in_reply_to?: string | null;
  forwarded_from?: string | null;
}

/** A member that fails the schema: `path` like `subjects.0.name_latin`, and what is wrong with it. */
export interface Problem {
  path: string;
  message: string;
}

export const AGENCY_ID = /^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$/;
const CASE_REF = /^[A-Z]{2,8}-[0-9]{4}-[0-9A-Z]{1,12}$/;

// ---- values --------------------------------------------------------------------------------------------

const HYPHENATED = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A UUID in the forms pydantic reads (hyphenated, 32 hex digits, `{...}`, `urn:uuid:`), lowercase
 * hyphenated; undefined if it is none. */
export function uuidOf(text: string): string | undefined {
  const bare = text.replace(/^urn:uuid:/i, "").replace(/^\{(.*)\}$/, "$1");
  if (bare !== text) return HYPHENATED.test(bare) ? bare.toLowerCase() : undefined;
  if (HYPHENATED.test(text)) return text.toLowerCase();
  if (/^[0-9a-f]{32}$/i.test(text)) {
    const h = text.toLowerCase();
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  return undefined;
}

const TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;
const FIRST_INSTANT = -62135596800_000000n; // 0001-01-01T00:00:00Z in microseconds
const LAST_INSTANT = 253402300799_999999n; // 9999-12-31T23:59:59.999999Z

function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  return era * 146097 + yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy - 719468;
}

function validDate(year: number, month: number, day: number): boolean {
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
  return year >= 1 && days !== undefined && day >= 1 && day <= days;
}

/** The instant an RFC 3339 time with offset names, in microseconds since the Unix epoch (Python keeps
 * microseconds; further digits are cut as pydantic cuts them); undefined for a time without offset, an
 * impossible one, or one outside the years 1 to 9999 in UTC. */
export function instantOf(text: string): bigint | undefined {
  const m = TIMESTAMP.exec(text);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number, number, number, number, number, number,
  ];
  const [, , , , , , , fraction = "", sign, offH = "0", offM = "0"] = m;
  if (!validDate(year, month, day) || hour > 23 || minute > 59 || second > 59) return undefined;
  if (Number(offH) > 23 || Number(offM) > 59) return undefined;
  const offset = (sign === "-" ? -1 : 1) * (Number(offH) * 3600 + Number(offM) * 60);
  const seconds = daysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset;
  const instant = BigInt(seconds) * 1_000_000n + BigInt(fraction.slice(0, 6).padEnd(6, "0"));
  return instant >= FIRST_INSTANT && instant <= LAST_INSTANT ? instant : undefined;
}

// ---- checks: each appends what is wrong with `value` at `path` ----------------------------------------

type Check = (value: unknown, path: string, out: Problem[]) => void;
// An optional member may be null (pydantic's `X | None`) unless `nullable: false` (its lists).
type Fields = Record<string, { check: Check; required?: boolean; nullable?: boolean }>;

function codePoints(text: string): number {
  return text.length - (text.match(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g)?.length ?? 0);
}

interface TextRule {
  nonEmpty?: boolean;
  max?: number;
  /** Leading and trailing white space does not count (pydantic's strip_whitespace). */
  strip?: boolean;
  /** With what it must be, in words: "must be <hint>". */
  pattern?: [RegExp, string];
}

function text(rule: TextRule = {}): Check {
  return (value, path, out) => {
    if (typeof value !== "string") return void out.push({ path, message: "must be text" });
    const length = codePoints(rule.strip ? value.trim() : value);
    if (rule.nonEmpty && length === 0) out.push({ path, message: "must not be empty" });
    else if (rule.max !== undefined && length > rule.max)
      out.push({ path, message: `must be at most ${rule.max} characters` });
    else if (rule.pattern && !rule.pattern[0].test(value))
      out.push({ path, message: `must be ${rule.pattern[1]}` });
  };
}

const shortText = text({ nonEmpty: true, max: 500, strip: true });
const longText = text({ max: 20_000 });
const agencyId = text({ pattern: [AGENCY_ID, "an agency id (a-z, 0-9 and hyphens), e.g. kh-cnp"] });
const caseRef = text({ pattern: [CASE_REF, "a case reference like KD-2025-0331"] });

function oneOf(values: readonly string[]): Check {
  return (value, path, out) => {
    if (typeof value !== "string" || !values.includes(value))
      out.push({ path, message: `must be one of ${values.join(", ")}` });
  };
}

const uuid: Check = (value, path, out) => {
  if (typeof value !== "string" || uuidOf(value) === undefined) out.push({ path, message: "must be a UUID" });
};

const timestamp: Check = (value, path, out) => {
  if (typeof value !== "string" || instantOf(value) === undefined)
    out.push({
      path,
      message: "must be a time with a UTC offset, e.g. 2025-03-31T09:00:00Z, within the years 1 to 9999",
    });
};

const date: Check = (value, path, out) => {
  const m = typeof value === "string" ? /^(\d{4})-(\d{2})-(\d{2})$/.exec(value) : null;
  if (!m || !validDate(Number(m[1]), Number(m[2]), Number(m[3])))
    out.push({ path, message: "must be a date, e.g. 1990-05-17" });
};

function number(min: number, max: number): Check {
  return (value, path, out) => {
    if (typeof value !== "number" || value < min || value > max)
      out.push({ path, message: `must be a number from ${min} to ${max}` });
  };
}

function list(item: Check, options: { min?: number; max: number; distinct?: boolean }): Check {
  return (value, path, out) => {
    if (!Array.isArray(value)) return void out.push({ path, message: "must be a list" });
    if (value.length < (options.min ?? 0)) return void out.push({ path, message: "must not be empty" });
    if (value.length > options.max)
      return void out.push({ path, message: `must have at most ${options.max} entries` });
    value.forEach((entry, i) => item(entry, `${path}.${i}`, out));
    if (options.distinct && new Set(value).size !== value.length)
      out.push({ path, message: "must not repeat an agency" });
  };
}

function at(path: string, name: string): string {
  return path ? `${path}.${name}` : name;
}

/** A closed object; `after` runs only once every member passed, like a pydantic model validator. */
function object(fields: Fields, after?: (value: Record<string, unknown>) => Problem | undefined): Check {
  return (value, path, out) => {
    if (!isRecord(value)) return void out.push({ path: path || "notice", message: "must be a JSON object" });
    const before = out.length;
    for (const name of Object.keys(value))
      if (!Object.hasOwn(fields, name))
        out.push({ path: at(path, name), message: "is not a member of this object" });
    for (const [name, { check, required, nullable = !required }] of Object.entries(fields)) {
      const member = value[name];
      if (member === undefined || (member === null && nullable)) {
        if (required) out.push({ path: at(path, name), message: "is required" });
      } else check(member, at(path, name), out);
    }
    const problem = out.length === before ? after?.(value) : undefined;
    if (problem) out.push({ path: problem.path ? at(path, problem.path) : path, message: problem.message });
  };
}

const person = object(
  {
    name_latin: { check: shortText },
    name_hangul: { check: shortText },
    date_of_birth: { check: date },
    passport_number: { check: text({ max: 32 }) },
    nationality: { check: text({ pattern: [/^[A-Z]{2,3}$/, "a code of 2 or 3 capitals, e.g. KOR"] }) },
    description: { check: longText },
  },
  (p) =>
    p.name_latin || p.name_hangul || p.description
      ? undefined
      : { path: "", message: "a subject needs a name (Latin or Hangul) or a description" },
);

const location = object({
  country: { check: text({ pattern: [/^[A-Z]{2}$/, "a country code, e.g. KH"] }), required: true },
  province: { check: shortText },
  text: { check: longText },
  coordinates: {
    check: object({
      lat: { check: number(-90, 90), required: true },
      lon: { check: number(-180, 180), required: true },
    }),
  },
});

const attachment = object({
  filename: { check: shortText, required: true },
  media_type: {
    check: text({ pattern: [/^[a-z]+\/[a-zA-Z0-9.+-]+$/, "a media type, e.g. application/pdf"] }),
    required: true,
  },
  data_b64: {
    check: text({ max: 700_000, pattern: [/^[A-Za-z0-9+/=]*$/, "standard base64 (A-Z a-z 0-9 + / =)"] }),
    required: true,
  },
});

const recipients = list(agencyId, { min: 1, max: 50, distinct: true });

const notice = object(
  {
    notice_id: { check: uuid, required: true },
    type: { check: oneOf(NOTICE_TYPES), required: true },
    priority: { check: oneOf(PRIORITIES), required: true },
    tlp: { check: oneOf(TLPS), required: true },
    case_ref: { check: caseRef, required: true },
    recipients: { check: recipients, required: true },
    summary: { check: text({ nonEmpty: true, max: 2_000 }), required: true },
    details: { check: longText },
    interpol_colour: { check: oneOf(INTERPOL_COLOURS) },
    subjects: { check: list(person, { max: 50 }), nullable: false },
    locations: { check: list(location, { max: 50 }), nullable: false },
    attachments: { check: list(attachment, { max: 5 }), nullable: false },
    in_reply_to: { check: uuid },
    forwarded_from: { check: uuid },
    expires_at: { check: timestamp },
    sender: { check: agencyId, required: true },
    sent_at: { check: timestamp, required: true },
  },
  (n) =>
    n.type === "reply" && n.in_reply_to == null
      ? { path: "in_reply_to", message: "a reply must name the notice it answers" }
      : undefined,
);

const ROUTING_FIELDS: Fields = {
  sender: { check: agencyId, required: true },
  notice_id: { check: uuid, required: true },
  notice_type: { check: oneOf(NOTICE_TYPES), required: true },
  priority: { check: oneOf(PRIORITIES), required: true },
  tlp: { check: oneOf(TLPS), required: true },
  case_ref: { check: caseRef, required: true },
  recipients: { check: recipients, required: true },
  sent_at: { check: timestamp, required: true },
  expires_at: { check: timestamp },
  in_reply_to: { check: uuid },
  forwarded_from: { check: uuid },
};

/** Everything wrong with `value` as a notice (empty when it is one), for showing beside each field. */
export function noticeProblems(value: unknown): Problem[] {
  const out: Problem[] = [];
  notice(value, "", out);
  return out;
}

export const ROUTING_MEMBERS = Object.keys(ROUTING_FIELDS);

function pick(header: Record<string, unknown>, keep: (name: string) => boolean): Record<string, unknown> {
  return Object.fromEntries(ROUTING_MEMBERS.filter(keep).map((k) => [k, header[k]]));
}

/** The routing members of a JWE protected header (other members are the JOSE ones: not checked here). */
export function routingProblems(header: Record<string, unknown>): Problem[] {
  const out: Problem[] = [];
  object(ROUTING_FIELDS)(pick(header, (k) => k in header), "", out);
  return out;
}

export function routingOf(header: Record<string, unknown>): RoutingHeader {
  return pick(header, (k) => header[k] != null) as unknown as RoutingHeader;
}

/** The routing header a notice is sealed under (docs/envelope.md §4.2): its strings copied, absent members
 * left out. */
export function routingFor(n: Notice): RoutingHeader {
  const { type, ...rest } = n;
  return routingOf({ ...rest, notice_type: type });
}

// ---- binding (docs/envelope.md §6) --------------------------------------------------------------------

function sameTime(a: string | null | undefined, b: string | null | undefined): boolean {
  return a == null || b == null ? (a == null) === (b == null) : instantOf(a) === instantOf(b);
}

function sameUuid(a: string | null | undefined, b: string | null | undefined): boolean {
  return a == null || b == null ? (a == null) === (b == null) : uuidOf(a) === uuidOf(b);
}

/** The routing members that say something else than the signed notice: values compared parsed (times as
 * instants, UUIDs as UUIDs, recipients as an ordered list). Empty when they agree. */
export function bindingDifferences(routing: RoutingHeader, n: Notice): string[] {
  const expected = routingFor(n);
  const same: Record<keyof RoutingHeader, boolean> = {
    sender: routing.sender === expected.sender,
    notice_id: sameUuid(routing.notice_id, expected.notice_id),
    notice_type: routing.notice_type === expected.notice_type,
    priority: routing.priority === expected.priority,
    tlp: routing.tlp === expected.tlp,
    case_ref: routing.case_ref === expected.case_ref,
    recipients: routing.recipients.join("\n") === expected.recipients.join("\n"),
    sent_at: sameTime(routing.sent_at, expected.sent_at),
    expires_at: sameTime(routing.expires_at, expected.expires_at),
    in_reply_to: sameUuid(routing.in_reply_to, expected.in_reply_to),
    forwarded_from: sameUuid(routing.forwarded_from, expected.forwarded_from),
  };
  return Object.entries(same)
    .filter(([, ok]) => !ok)
    .map(([name]) => name);
}
