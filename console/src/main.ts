// The console's entry: sign in as one role, then that role's view. Each role sees what the API lets its
// credential see, no more: the console holds no authority of its own.
import "./console.css";
import { Api, ApiError, message } from "./api";
import { Status, field, h, replace, select } from "./dom";
import { deskView } from "./desk";
import { auditorView } from "./auditor";
import { partnerView, partnerSignIn } from "./partner";
import { forgetKeyring } from "./keystore";
import { type ConsoleConfig, type Role, type Session, endSession, loadConfig, loadSession, saveSession } from "./session";

const app = document.getElementById("app")!;

export interface Shell {
  config: ConsoleConfig;
  session: Session;
  gateway: Api;
  audit: Api;
  body: HTMLElement;
}

interface Caller {
  role: string;
  agency: string | null;
}

async function start(): Promise<void> {
  let config: ConsoleConfig;
  try {
    config = await loadConfig();
  } catch (error) {
    replace(app, h("p", { class: "status error", role: "alert" }, message(error)));
    return;
  }
  const session = loadSession();
  if (session) await open(config, session);
  else signIn(config);
}

function signIn(config: ConsoleConfig, notice?: string): void {
  document.title = "Sign in – deskbridge console";
  const status = new Status();
  if (notice) status.error(notice);
  const role = select(
    [
      ["desk", "Desk officer (Korean Desk)"],
      ["partner", "Partner agency"],
      ["auditor", "Auditor"],
    ],
    "desk",
    { name: "role", required: true },
  );
  const credential = h("input", { type: "password", name: "credential", autocomplete: "off", required: true, spellcheck: "false" });
  const keyFile = h("input", { type: "file", name: "keyfile", accept: ".json,application/json" });
  const logKey = h("input", { type: "file", name: "logkey", accept: ".vkey,text/plain" });
  const partnerOnly = h("div", { class: "role-extra", hidden: true }, field("Your agency's key file (keys.jwks.json)", keyFile, "Read once into this browser as keys that cannot be exported; the file itself is not uploaded. Needed the first time only."));
  const auditorOnly = h("div", { class: "role-extra", hidden: true }, field("The audit log's key (audit-log.vkey)", logKey, "The pinned public key every checkpoint is checked against."));
  const showExtras = () => {
    partnerOnly.hidden = role.value !== "partner";
    auditorOnly.hidden = role.value !== "auditor";
  };
  role.addEventListener("change", showExtras);
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "deskbridge console"),
    h("p", {}, "Sign in with the credential your desk administrator issued. It stays in this tab only and is forgotten when you close it."),
    field("I work as", role),
    field("Credential", credential, "Starts with dbk_"),
    partnerOnly,
    auditorOnly,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    status.el,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void (async () => {
      status.busy("Checking your credential…");
      try {
        const session = await establish(config, role.value as Role, credential.value.trim(), keyFile.files?.[0], logKey.files?.[0], status);
        saveSession(session);
        await open(config, session);
      } catch (error) {
        status.error(message(error));
      }
    })();
  });
  replace(app, h("div", { class: "signin-page" }, form));
  role.focus();
}

async function establish(config: ConsoleConfig, role: Role, credential: string, keyFile: File | undefined, logKeyFile: File | undefined, status: Status): Promise<Session> {
  if (!credential) throw new Error("Enter your credential.");
  let caller: Caller;
  try {
    caller = await new Api(config.gateway, credential).call<Caller>("GET", "/v1/credentials/current");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) throw new Error("This credential was not accepted: it is mistyped, revoked or expired. Ask your administrator for a current one.");
    throw error;
  }
  const expected = role === "auditor" ? "auditor" : "agency";
  if (caller.role !== expected) throw new Error(`This is a credential for the role "${caller.role}", not for ${role === "auditor" ? "an auditor" : "an agency"}. Choose the role it was issued for.`);
  if (role === "desk" && caller.agency !== config.desk_agency) throw new Error(`This credential belongs to ${caller.agency}, not to the desk (${config.desk_agency}). Sign in as a partner agency instead.`);
  if (role === "partner" && caller.agency === config.desk_agency) throw new Error("This is the desk's credential. Sign in as desk officer.");
  const session: Session = { role, credential, agency: caller.agency };
  if (role === "partner") await partnerSignIn(caller.agency!, keyFile, status);
  if (role === "auditor") {
    if (!logKeyFile) throw new Error("Choose the audit log's key file (audit-log.vkey): without it no checkpoint can be checked.");
    session.logKey = (await logKeyFile.text()).trim();
    if (!/^[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+$/.test(session.logKey)) throw new Error("That file is not a log verifier key: it should read origin+keyid+key on one line.");
  }
  return session;
}

async function open(config: ConsoleConfig, session: Session): Promise<void> {
  const gateway = new Api(config.gateway, session.credential);
  const audit = new Api(config.audit, session.credential);
  const body = h("div", { class: "role-body" });
  const who = session.role === "auditor" ? "Auditor" : `${session.role === "desk" ? "Desk" : "Partner"}: ${session.agency}`;
  const signOut = h("button", { type: "button", class: "link" }, "Sign out");
  signOut.addEventListener("click", () => {
    endSession();
    window.location.reload();
  });
  // On a shared machine a partner takes its keys with it: they leave this browser's storage for good.
  const forget = session.role === "partner" ? h("button", { type: "button", class: "link" }, "Sign out and remove our keys from this browser") : null;
  forget?.addEventListener("click", () => {
    void forgetKeyring(session.agency!).then(() => {
      endSession();
      window.location.reload();
    });
  });
  replace(app, h("header", { class: "topbar" }, h("span", { class: "brand" }, "deskbridge"), h("span", { class: "who", "data-testid": "who" }, who), signOut, forget), body);
  document.title = `${who} – deskbridge console`;
  const shell: Shell = { config, session, gateway, audit, body };
  try {
    if (session.role === "desk") await deskView(shell);
    else if (session.role === "partner") await partnerView(shell);
    else await auditorView(shell);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      endSession();
      signIn(config, "Your credential is no longer accepted (revoked or rotated). Sign in again.");
      return;
    }
    replace(body, h("p", { class: "status error", role: "alert" }, message(error)));
  }
}

void start();
