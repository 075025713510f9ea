// Who is signed in. The credential lives in this tab's sessionStorage only (never localStorage or a
// cookie): closing the tab signs out, and another site can never send it on the user's behalf.

export type Role = "desk" | "partner" | "auditor";

export interface Session {
  role: Role;
  credential: string;
  agency: string | null;
  logKey?: string; // the auditor's pinned log verifier key (public), as `<name>+<hex id>+<base64>`
}

export interface ConsoleConfig {
  gateway: string;
  audit: string;
  desk_agency: string;
  log_origin: string;
}

const KEY = "deskbridge.session";

export function loadSession(): Session | null {
  const raw = sessionStorage.getItem(KEY);
  if (!raw) return null;
  try {
    return JSON.parse(raw) as Session;
  } catch {
    sessionStorage.removeItem(KEY);
    return null;
  }
}

export function saveSession(session: Session): void {
  sessionStorage.setItem(KEY, JSON.stringify(session));
}

export function endSession(): void {
  sessionStorage.removeItem(KEY);
}

export async function loadConfig(): Promise<ConsoleConfig> {
  const response = await fetch(new URL(`${import.meta.env.BASE_URL}config.json`, window.location.href), { credentials: "omit", cache: "no-store" });
  if (!response.ok) throw new Error("The console's configuration could not be read; reload the page.");
  return (await response.json()) as ConsoleConfig;
}
