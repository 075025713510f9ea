// What the console's cryptography throws: a sentence for a person (ConsoleError), or the reason an envelope
// or receipt is refused, with the codes of docs/envelope.md §7 (Refusal).

/** A problem the person at the console can act on; `message` is that sentence. */
export class ConsoleError extends Error {
  override name = "ConsoleError";
}

/** The reason codes of docs/envelope.md §7 a browser can meet (the admission ones are the gateway's). */
export type ReasonCode =
  | "malformed"
  | "oversize"
  | "bad_algorithm"
  | "unknown_key"
  | "key_revoked"
  | "key_not_valid"
  | "signer_mismatch"
  | "bad_signature"
  | "recipient_mismatch"
  | "header_mismatch"
  | "undecryptable"
  | "not_a_recipient";

/** An envelope refused (or, when sealing, one that must not be made): `code` says which check failed,
 * `detail` what exactly. */
export class Refusal extends Error {
  override name = "Refusal";

  constructor(
    readonly code: ReasonCode,
    readonly detail: string,
  ) {
    super(`${code}: ${detail}`);
  }
}
