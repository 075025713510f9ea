// The commands of `deskbridge-partner`, a partner agency's command line on Node 20 (README.md has the
// contract). Every command first checks the signed directory against the pinned key and uses only keys
// from it. cli.ts is the executable.

import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";

import { PartnerApi, type InboxItem } from "./api.js";
import { Refusal, PartnerError } from "./errors.js";
import { Identity, defaultHome } from "./home.js";
import { openInboxItem, replyTo, sealFor } from "./inbox.js";
import type { AgencyKeyring } from "./keys.js";
import { uuidOf } from "./notice.js";
import { makeReceipt } from "./receipt.js";
import { verifyDirectory, type TrustedDirectory } from "./signed-directory.js";

const USAGE = `usage: deskbridge-partner [--server URL] [--home DIR] [--sign] --as AGENCY COMMAND ...

commands:
  directory show
  inbox pull [--follow | --stream] [--no-ack] [--json]
  reply --to NOTICE_ID --summary TEXT [--details TEXT]
  notice send --file DRAFT.json

--server defaults to $DESKBRIDGE_SERVER, else http://127.0.0.1:8080;
--home to $DESKBRIDGE_HOME, else var/demo (as the deskbridge CLI);
--sign signs each request with the agency's key (RFC 9421) instead of sending its credential.`;

/** Exit statuses: 1 an error, 2 a usage error, 3 some inbox item refused. */
const ERROR = 1;
const USAGE_ERROR = 2;
const REFUSED = 3;
/** Seconds each long-poll of `inbox pull --follow` waits (the gateway allows at most 60). */
const FOLLOW_WAIT_S = 30;

class UsageError extends Error {}

interface Globals {
  server: string;
  home: string;
  as: string;
  sign: boolean;
}

interface Context {
  identity: Identity;
  api: PartnerApi;
  directory: TrustedDirectory;
}

function parseGlobals(argv: string[]): { globals: Globals; rest: string[] } {
  const values: Partial<Record<"server" | "home" | "as", string>> = {};
  let sign = false;
  let i = 0;
  while (i < argv.length && argv[i]!.startsWith("--")) {
    const [flag, inline] = argv[i]!.split(/=(.*)/s, 2) as [string, string | undefined];
    const name = flag.slice(2);
    if (name === "help") throw new UsageError("");
    if (name === "sign" && inline === undefined) {
      sign = true;
      i++;
      continue;
    }
    if (name !== "server" && name !== "home" && name !== "as") throw new UsageError(`unknown option ${flag}`);
    const value = inline ?? argv[++i];
    if (value === undefined || value === "") throw new UsageError(`${flag} needs a value`);
    values[name] = value;
    i++;
  }
  if (!values.as) throw new UsageError("--as AGENCY is required");
  const server = values.server ?? (process.env.DESKBRIDGE_SERVER || "http://127.0.0.1:8080");
  const globals = { server, home: values.home ?? defaultHome(), as: values.as, sign };
  return { globals, rest: argv.slice(i) };
}

function options<T extends Record<string, { type: "string" | "boolean" }>>(args: string[], spec: T) {
  try {
    return parseArgs({ args, options: spec, allowPositionals: false, strict: true }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

async function connect(globals: Globals): Promise<Context> {
  const identity = new Identity(globals.home, globals.as);
  const auth = globals.sign ? { keyring: await identity.keyring() } : { credential: await identity.credential() };
  const api = new PartnerApi(globals.server, auth);
  const directory = await verifyDirectory(await api.directory(), await identity.pin());
  return { identity, api, directory };
}

/** Where a command's lines go: process.stdout and process.stderr unless main is given others (tests). */
export interface Output {
  out(line: string): void;
  err(line: string): void;
}

const STDIO: Output = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};
let io = STDIO;

function say(line: string): void {
  io.out(line);
}

function describe(error: unknown): { code: string; detail: string } {
  if (error instanceof Refusal) return { code: error.code, detail: error.detail };
  if (error instanceof PartnerError) return { code: error.code, detail: error.message };
  return { code: "client_error", detail: error instanceof Error ? error.message : String(error) };
}

// ---- commands ------------------------------------------------------------------------------------------

/** A command with its options read (a usage error before anything is fetched), ready to run. */
type Command = (ctx: Context) => Promise<number>;

function directoryShow(args: string[]): Command {
  options(args, {});
  return async (ctx) => showDirectory(ctx);
}

async function showDirectory(ctx: Context): Promise<number> {
  const signedAt = new Date(ctx.directory.iat * 1000).toISOString();
  say(`directory signed at ${signedAt} by the pinned key ${ctx.directory.signedBy}`);
  for (const agency of ctx.directory.agencies) {
    say(`${agency.id} ${agency.kind} ${agency.name}`);
    for (const key of agency.keys) say(`  ${key.use} ${key.kid} ${key.status}`);
  }
  return 0;
}

function inboxPull(args: string[]): Command {
  const opts = options(args, {
    follow: { type: "boolean" },
    stream: { type: "boolean" },
    "no-ack": { type: "boolean" },
    json: { type: "boolean" },
  });
  if (opts.follow && opts.stream) throw new UsageError("--follow and --stream are two ways of the same");
  const read = opts.stream ? "stream" : opts.follow ? "follow" : "once";
  return (ctx) => pull(ctx, read, opts["no-ack"] !== true, opts.json === true);
}

/** Each item of the inbox from the start: pages once, then (follow) long-polls or (stream) the SSE stream. */
function items(api: PartnerApi, read: "once" | "follow" | "stream"): AsyncGenerator<InboxItem> {
  return read === "stream" ? api.stream() : api.inbox(read === "follow", FOLLOW_WAIT_S);
}

async function pull(
  ctx: Context,
  read: "once" | "follow" | "stream",
  ack: boolean,
  json: boolean,
): Promise<number> {
  const ring = await ctx.identity.keyring();
  let opened = 0;
  let refused = 0;
  for await (const item of items(ctx.api, read)) {
    if (item.state === "acknowledged" || item.state === "recalled") continue;
    let result;
    try {
      result = await openInboxItem(item, ring, ctx.directory);
    } catch (error) {
      if (!(error instanceof Refusal || error instanceof PartnerError)) throw error;
      const { code, detail } = describe(error);
      io.err(`refused ${item.notice_id}: ${detail} [${code}]`);
      refused++;
      continue;
    }
    opened++;
    const { notice } = result;
    if (!json)
      say(
        `[${notice.priority.toUpperCase()}] ${notice.type} ${notice.case_ref} from ${notice.sender} ` +
          `(TLP:${notice.tlp.toUpperCase()}) id ${notice.notice_id}\n  ${notice.summary}\n` +
          `  signature verified: ${result.outer.agency}`,
      );
    let acknowledged = false;
    if (ack) {
      // Signed here, with this agency's key, over the envelope exactly as the inbox served it.
      await ctx.api.acknowledge(item.notice_id, await makeReceipt(ring, item.notice_id, result.envelopeSha256));
      acknowledged = true;
      if (!json) say("  acknowledged");
    }
    if (json)
      say(JSON.stringify({ cursor: item.cursor, notice, verified_by: result.outer.agency, acknowledged }));
  }
  if (!json) say(`${opened} notice(s) opened${refused ? `, ${refused} refused` : ""}`);
  return refused ? REFUSED : 0;
}

async function findInInbox(ctx: Context, noticeId: string): Promise<InboxItem> {
  for await (const item of ctx.api.inbox()) if (uuidOf(item.notice_id) === noticeId) return item;
  throw new PartnerError(`notice ${noticeId} is not in ${ctx.identity.agency}'s inbox`, "not_in_inbox");
}

function reply(args: string[]): Command {
  const opts = options(args, {
    to: { type: "string" },
    summary: { type: "string" },
    details: { type: "string" },
  });
  if (opts.to === undefined || opts.summary === undefined) throw new UsageError("reply needs --to and --summary");
  const to = uuidOf(opts.to);
  if (to === undefined) throw new UsageError(`--to ${opts.to} is not a notice id`);
  const { summary, details } = opts;
  return async (ctx) => {
    const ring = await ctx.identity.keyring();
    const { notice: original } = await openInboxItem(await findInInbox(ctx, to), ring, ctx.directory);
    return post(ctx, ring, replyTo(original, ring, summary, details));
  };
}

function noticeSend(args: string[]): Command {
  const { file } = options(args, { file: { type: "string" } });
  if (file === undefined) throw new UsageError("notice send needs --file DRAFT.json");
  return (ctx) => send(ctx, file);
}

async function send(ctx: Context, file: string): Promise<number> {
  let draft: unknown;
  try {
    draft = JSON.parse(await readFile(file, "utf8"));
  } catch (error) {
    throw new PartnerError(`${file} is not a readable JSON file: ${(error as Error).message}`, "malformed");
  }
  if (typeof draft !== "object" || draft === null || Array.isArray(draft))
    throw new PartnerError(`${file} is not a JSON object`, "malformed");
  const ring = await ctx.identity.keyring();
  const sentAt = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
  return post(ctx, ring, { ...draft, sender: ring.agency, sent_at: sentAt });
}

async function post(ctx: Context, ring: AgencyKeyring, notice: Record<string, unknown>): Promise<number> {
  const envelope = await sealFor(notice, ring, ctx.directory);
  say(JSON.stringify({ notice_id: await ctx.api.postEnvelope(envelope) }));
  return 0;
}

// ---- main ----------------------------------------------------------------------------------------------

const COMMANDS: Record<string, (args: string[]) => Command> = {
  "directory show": directoryShow,
  "inbox pull": inboxPull,
  "notice send": noticeSend,
  reply,
};

function usageError(message: string): number {
  if (message) io.err(`error: usage: ${message}\n${USAGE}`);
  else io.out(USAGE);
  return message ? USAGE_ERROR : 0;
}

/** Runs the command line `argv` (without node and the script); the exit status. */
export async function main(argv: string[], output: Output = STDIO): Promise<number> {
  io = output;
  let globals: Globals;
  let command: Command;
  try {
    let rest: string[];
    ({ globals, rest } = parseGlobals(argv));
    const words = rest[0] === "reply" ? 1 : 2;
    const name = rest.slice(0, words).join(" ");
    const parse = COMMANDS[name];
    if (parse === undefined) throw new UsageError(`unknown command ${name || "(none)"}`);
    command = parse(rest.slice(words));
  } catch (error) {
    if (error instanceof UsageError) return usageError(error.message);
    throw error;
  }
  try {
    return await command(await connect(globals));
  } catch (error) {
    const { code, detail } = describe(error);
    io.err(`error: ${detail} [${code}]`);
    return ERROR;
  }
}

