// An identity's folder, `<home>/<agency>/`, laid out as deskbridge's Python CLI writes it
// (services/cli/profiles.py, services/envelope/keys.py, services/trust/signed_directory.py).

import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { PartnerError } from "./errors.js";
import { importKeyFile, type AgencyKeyring } from "./keys.js";

export const CREDENTIAL_FILE = "credential";
export const KEYS_FILE = "keys.jwks.json";
export const PIN_FILE = "directory.pin.jwk.json";

export function defaultHome(): string {
  return process.env.DESKBRIDGE_HOME || "var/demo";
}

async function read(path: string, missing: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") throw new PartnerError(missing, "key_file");
    throw new PartnerError(`cannot read ${path}: ${(error as Error).message}`, "key_file");
  }
}

export class Identity {
  readonly folder: string;

  constructor(
    home: string,
    readonly agency: string,
  ) {
    this.folder = join(home, agency);
  }

  /** The bearer credential (never printed). */
  async credential(): Promise<string> {
    const path = join(this.folder, CREDENTIAL_FILE);
    const token = (await read(path, `no credential for ${this.agency} at ${path}`)).trim();
    if (!token) throw new PartnerError(`the credential file ${path} is empty`, "key_file");
    return token;
  }

  /** The agency's private keys, imported non-extractable; refused if the file is another agency's. */
  async keyring(): Promise<AgencyKeyring> {
    const path = join(this.folder, KEYS_FILE);
    let ring: AgencyKeyring;
    try {
      ring = await importKeyFile(await read(path, `no key file for ${this.agency} at ${path}`));
    } catch (error) {
      if (error instanceof PartnerError && error.code === "key_file") throw error;
      throw new PartnerError(`${path}: ${(error as Error).message}`, "key_file");
    }
    if (ring.agency !== this.agency)
      throw new PartnerError(`the keys in ${path} are ${ring.agency}'s, not ${this.agency}'s`, "key_file");
    return ring;
  }

  /** The pinned directory key (a public JWK). */
  async pin(): Promise<unknown> {
    const path = join(this.folder, PIN_FILE);
    const text = await read(path, `no pinned directory key at ${path}; pin the desk's directory key first`);
    try {
      return JSON.parse(text);
    } catch {
      throw new PartnerError(`${path} is not a public JWK`, "key_file");
    }
  }
}
