// The partner's side of deskbridge's HTTP API over fetch (Node 20 or a browser): a bearer credential or
// RFC 9421 request signatures, one error type that keeps the server's problem code (docs/errors.md), the
// inbox pages, long-poll and event stream.

import { PartnerError } from "./errors.js";
import { signatureHeaders } from "./httpsig.js";
import { isRecord } from "./json.js";
import type { AgencyKeyring } from "./keys.js";

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

/** How calls authenticate: the agency's bearer credential, or each request signed with its own key. */
export type Authentication = { credential: string } | { keyring: AgencyKeyring };

export class PartnerApi {
  constructor(
    readonly server: string,
    private readonly auth: Authentication,
  ) {}

  private async headers(method: string, url: URL, body?: string): Promise<Record<string, string>> {
    if ("credential" in this.auth) return { Authorization: `Bearer ${this.auth.credential}` };
    return signatureHeaders(this.auth.keyring, method, url, body);
  }

  async call(method: string, path: string, options: RequestOptions = {}): Promise<unknown> {
    const url = new URL(path, this.server);
    for (const [name, value] of Object.entries(options.query ?? {}))
      if (value !== undefined) url.searchParams.set(name, String(value));
    let body: string | undefined = options.body;
    if (options.json !== undefined) body = JSON.stringify(options.json);
    const headers = await this.headers(method, url, body);
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await this.send(method, url, { method, headers, body });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      throw new PartnerError(`${method} ${url.pathname} answered no JSON`, "bad_response");
    }
    return parsed;
  }

  /** fetch, with a network failure or an error status turned into a PartnerError with the problem code. */
  private async send(method: string, url: URL, init: RequestInit): Promise<Response> {
    let response: Response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      const cause = error instanceof Error && error.cause instanceof Error ? `: ${error.cause.message}` : "";
      throw new PartnerError(`cannot reach ${this.server}${cause}`, "unreachable");
    }
    if (response.ok) return response;
    const text = await response.text();
    let problem: unknown;
    try {
      problem = JSON.parse(text);
    } catch {
      problem = undefined;
    }
    const code = isRecord(problem) && typeof problem.code === "string" ? problem.code : `http_${response.status}`;
    const detail = isRecord(problem) && typeof problem.detail === "string" ? problem.detail : text.slice(0, 200);
    throw new PartnerError(`${method} ${url.pathname} failed with ${response.status}: ${detail}`, code);
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

  /** The inbox as a Server-Sent Events stream (`GET /v1/inbox/stream`): each `notice` event's item, for
   * ever; a dropped connection is resumed with Last-Event-ID, so nothing is missed or repeated. */
  async *stream(): AsyncGenerator<InboxItem> {
    let lastId: string | undefined;
    for (;;) {
      const url = new URL("/v1/inbox/stream", this.server);
      const headers = await this.headers("GET", url);
      headers.Accept = "text/event-stream";
      if (lastId !== undefined) headers["Last-Event-ID"] = lastId;
      let response: Response;
      try {
        response = await this.send("GET", url, { headers });
      } catch (error) {
        if (!(error instanceof PartnerError) || error.code !== "unreachable" || lastId === undefined) throw error;
        await new Promise((resolve) => setTimeout(resolve, 1000));
        continue;
      }
      try {
        for await (const event of serverSentEvents(response)) {
          if (event.id !== undefined) lastId = event.id;
          if (event.type === "notice") yield JSON.parse(event.data) as InboxItem;
        }
      } catch (error) {
        if (!(error instanceof TypeError)) throw error; // a network failure mid-stream: reconnect
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
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

interface ServerSentEvent {
  type: string;
  data: string;
  id?: string;
}

/** The events of a text/event-stream body (the HTML standard's parsing, without `retry`). */
async function* serverSentEvents(response: Response): AsyncGenerator<ServerSentEvent> {
  if (response.body === null) return;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let type = "";
  let data: string[] = [];
  let id: string | undefined;
  let skipLineFeed = false; // a CR ended the last chunk: a LF starting this one ends the same line
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const text: string = skipLineFeed && value.startsWith("\n") ? value.slice(1) : value;
    skipLineFeed = text.endsWith("\r");
    buffer += text;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop() ?? "";
    for (const line of lines) {
      if (line === "") {
        if (data.length) yield { type: type || "message", data: data.join("\n"), ...(id !== undefined && { id }) };
        type = "";
        data = [];
        id = undefined;
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "id" && !value.includes("\0")) id = value;
    }
  }
}
