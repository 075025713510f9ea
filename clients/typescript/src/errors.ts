// What the partner client throws: a sentence for a person (PartnerError), or the reason an envelope or
// receipt is refused, with the codes of docs/envelope.md §7 (Refusal).

/** A problem the person at the console or the command line can act on; `message` is that sentence.
 * `code` is the server's problem code when it answered one (docs/errors.md), else the client's own. */
export class PartnerError extends Error {
  override name = "PartnerError";

  constructor(
    message: string,
    readonly code: string = "client_error",
  ) {
    super(message);
  }
}

/** The reason codes of docs/envelope.md §7 a reader can meet (the admission ones are the gateway's). */
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
