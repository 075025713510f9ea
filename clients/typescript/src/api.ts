// The partner's side of deskbridge's HTTP API over fetch (Node 20 or a browser): bearer credential, one
// error type that keeps the server's problem code (docs/errors.md), the inbox pages and long-poll.

import { PartnerError } from "./errors.js";
import { isRecord } from "./json.js";

/** One inbox entry as `GET /v1/inbox` lists it (schemas/api.py InboxItem). */
export interface InboxItem {
  notice_id: string;
  sender: string;
  case_ref: string;
  notice_type: string;
  priority: string;
  tlp: string;
  state: string;
  delivered_at: string;
  expires_at?: string | null;
  in_reply_to?: string | null;
  cursor: string;
  /** The sealed envelope exactly as sent. */
  envelope: string;
}

export interface InboxPage {
  items: InboxItem[];
  next_cursor: string | null;
}

export interface RequestOptions {
  query?: Record<string, string | number | undefined>;
  /** Sent as JSON. */
  json?: unknown;
  /** Sent as it is, with Content-Type application/json (a sealed envelope: its bytes are what is signed). */
  body?: string;
}

export class PartnerApi {
  constructor(
    readonly server: string,
    private readonly credential: string,
  ) {}

  async call(method: string, path: string, options: RequestOptions = {}): Promise<unknown> {
    const url = new URL(path, this.server);
    for (const [name, value] of Object.entries(options.query ?? {}))
      if (value !== undefined) url.searchParams.set(name, String(value));
    const headers: Record<string, string> = { Authorization: `Bearer ${this.credential}` };
    let body: string | undefined = options.body;
    if (options.json !== undefined) body = JSON.stringify(options.json);
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response: Response;
    try {
      response = await fetch(url, { method, headers, body });
    } catch (error) {
      const cause = error instanceof Error && error.cause instanceof Error ? `: ${error.cause.message}` : "";
      throw new PartnerError(`cannot reach ${this.server}${cause}`, "unreachable");
    }
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = undefined;
    }
    if (!response.ok) {
      const problem = isRecord(parsed) ? parsed : {};
      const code = typeof problem.code === "string" ? problem.code : `http_${response.status}`;
      const detail = typeof problem.detail === "string" ? problem.detail : text.slice(0, 200);
      throw new PartnerError(`${method} ${url.pathname} failed with ${response.status}: ${detail}`, code);
    }
    if (parsed === undefined) throw new PartnerError(`${method} ${url.pathname} answered no JSON`, "bad_response");
    return parsed;
  }

  directory(): Promise<unknown> {
    return this.call("GET", "/v1/directory");
  }

  async inboxPage(after?: string, wait?: number): Promise<InboxPage> {
    const page = await this.call("GET", "/v1/inbox", { query: { after, wait } });
    if (!isRecord(page) || !Array.isArray(page.items))
      throw new PartnerError("the inbox answer is not a page of items", "bad_response");
    return page as unknown as InboxPage;
  }

  /** Every inbox item from the start; with `follow`, then long-polls `wait` seconds at a time, forever. */
  async *inbox(follow = false, wait = 30): AsyncGenerator<InboxItem> {
    let cursor: string | undefined;
    for (;;) {
      const page = await this.inboxPage(cursor, follow ? wait : undefined);
      yield* page.items;
      if (page.items.length === 0 && !follow) return;
      cursor = page.next_cursor ?? cursor;
    }
  }

  acknowledge(noticeId: string, receipt: string): Promise<unknown> {
    return this.call("POST", `/v1/inbox/${encodeURIComponent(noticeId)}/ack`, { json: { receipt } });
  }

  /** Posts a sealed envelope; the accepted notice's id. */
  async postEnvelope(envelope: string): Promise<string> {
    const answer = await this.call("POST", "/v1/envelopes", { body: envelope });
    if (!isRecord(answer) || typeof answer.notice_id !== "string")
      throw new PartnerError("the gateway's answer names no notice_id", "bad_response");
    return answer.notice_id;
  }
}
