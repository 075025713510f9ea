// One way to call deskbridge: the bearer credential goes in a header on each request (never a cookie),
// and every failure becomes a sentence a person can act on, with the API's reason code beside it.

export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  code?: string;
  errors?: { loc?: (string | number)[]; msg?: string }[];
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
    readonly problem: Problem = {},
    readonly retryAfterS?: number,
  ) {
    super(sentence(status, code, detail, retryAfterS));
  }
}

function sentence(status: number, code: string, detail: string, retryAfterS?: number): string {
  const why = detail ? ` (${detail})` : "";
  if (status === 0) return `The server cannot be reached${why}. Check your network connection and try again.`;
  if (status === 401) return "Your credential was not accepted. Sign out and sign in again with a current credential.";
  if (status === 403) return `Your credential does not allow this${why}.`;
  if (status === 404) return `Not found${why}. Check the identifier and try again.`;
  if (status === 413) return `That is too large to send${why}. Remove attachments or shorten the text.`;
  if (status === 429 || status === 503) {
    const wait = retryAfterS ? ` in ${retryAfterS} s` : " in a moment";
    return `The service is busy or partly unavailable${why}. Nothing was lost; try again${wait}.`;
  }
  if (status >= 500) return `The server failed${why}. Try again; if it keeps failing, tell the desk's operator [${code}].`;
  return `Refused: ${detail || code} [${code}].`;
}

type Query = Record<string, string | number | undefined>;

interface RequestOptions {
  json?: unknown;
  body?: string;
  query?: Query;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

export class Api {
  constructor(
    readonly base: string,
    private readonly credential: string,
  ) {}

  async call<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const response = await this.raw(method, path, options);
    if (response.status === 204) return undefined as T;
    return (await response.json()) as T;
  }

  /** A GET that answers null while the resource is unchanged since `etag` (304), at no body's cost. */
  async poll<T>(path: string, etag: string | null, query: Query = {}): Promise<{ body: T; etag: string | null } | null> {
    const response = await this.raw("GET", path, { query, headers: etag ? { "If-None-Match": etag } : {} });
    if (response.status === 304) return null;
    return { body: (await response.json()) as T, etag: response.headers.get("ETag") };
  }

  async text(path: string): Promise<string> {
    return (await this.raw("GET", path)).text();
  }

  async raw(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const url = new URL(this.base + path, window.location.href);
    for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined && v !== "") url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { ...options.headers, Authorization: `Bearer ${this.credential}` };
    let body = options.body;
    if (options.json !== undefined) body = JSON.stringify(options.json);
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response: Response;
    try {
      response = await fetch(url, { method, headers, body, signal: options.signal, credentials: "omit", cache: "no-store" });
    } catch (error) {
      if (options.signal?.aborted) throw error;
      throw new ApiError(0, "unreachable", url.origin);
    }
    if (!response.ok && response.status !== 304) throw await toError(response);
    return response;
  }
}

async function toError(response: Response): Promise<ApiError> {
  let problem: Problem = {};
  try {
    problem = (await response.json()) as Problem;
  } catch {
    // not a problem document: the status alone has to do
  }
  const retry = Number(response.headers.get("Retry-After"));
  return new ApiError(response.status, problem.code ?? `http_${response.status}`, problem.detail ?? problem.title ?? response.statusText, problem, Number.isFinite(retry) && retry > 0 ? retry : undefined);
}

export function message(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}
