"""Every error code a client of deskbridge can meet, with the HTTP status and title it is answered with
(RFC 9457 problem details), and what it means. The HTTP handlers (services/platform/views.py), the CLI
and docs/errors.md all read this one table; a test keeps the docs and every raised code in step with it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProblemType:
    code: str
    status: int
    title: str
    means: str  # what it means for the caller's software, one line
    dead_letter: bool = False  # also a reason ingest dead-letters a record with


# fmt: off
_TYPES = [
    # The request itself
    ProblemType("invalid_json", 400, "Body is not JSON",
                "The body does not parse as JSON; fix the client."),
    ProblemType("invalid_request", 422, "Request does not fit the API",
                "A field is missing, mistyped or out of range; the detail names it."),
    ProblemType("too_large", 413, "Body too large",
                "The body exceeds the route's limit; send less."),
    ProblemType("not_found", 404, "No such resource",
                "The path names no route of this API."),
    ProblemType("method_not_allowed", 405, "Method not allowed",
                "The route exists but not with this method."),
    ProblemType("internal_error", 500, "Internal error",
                "A fault of deskbridge's; the operator's logs say more. A dead-lettered"
                " record with this reason was not understood at all.", dead_letter=True),
    # A part out of reach: nothing was done, send it again after Retry-After
    ProblemType("unavailable", 503, "Service unavailable",
                "A part deskbridge needs is missing or out of reach; retry after Retry-After."),
    ProblemType("database_unavailable", 503, "Database unavailable",
                "The database is out of reach; nothing was done, retry after Retry-After."),
    ProblemType("kafka_unavailable", 503, "Kafka unavailable",
                "Kafka did not acknowledge; nothing was done, retry after Retry-After."),
    ProblemType("console_unavailable", 503, "Console not built",
                "The gateway has no built browser console to serve; its operator must run `make setup`."),
    # Who is calling
    ProblemType("unauthenticated", 401, "Not authenticated",
                "No valid bearer credential (or request signature where the route takes one); the detail "
                "says what is missing."),
    ProblemType("bad_request_signature", 401, "Request signature refused",
                "The RFC 9421 signature is missing a part, stale, replayed, or does not verify with a "
                "current directory key."),
    ProblemType("forbidden", 403, "Not allowed",
                "Authenticated, but the role or agency may not do this."),
    # The directory (trust)
    ProblemType("invalid_agency", 422, "Invalid agency",
                "The agency id or kind is not acceptable."),
    ProblemType("agency_exists", 409, "Agency already registered",
                "Choose another id; the agency exists."),
    ProblemType("unknown_agency", 404, "Unknown agency",
                "No agency with this id is registered."),
    ProblemType("invalid_key", 422, "Invalid key",
                "The JWK is not a usable public key of the stated use, or its kid or validity is wrong."),
    ProblemType("key_exists", 409, "Key already registered",
                "This key (its thumbprint) is in the directory already."),
    ProblemType("key_not_found", 404, "No such key",
                "No key with this kid is registered (for this agency)."),
    ProblemType("key_already_revoked", 409, "Key already revoked",
                "Nothing to do: the key was revoked before."),
    ProblemType("invalid_credential_request", 422, "Invalid credential request",
                "Role, agency or grace period do not fit together."),
    ProblemType("credential_already_rotated", 409, "Credential already rotated",
                "Use the successor credential; a credential is rotated once."),
    ProblemType("unknown_recipient", 422, "Unknown recipient",
                "A recipient agency is not in the directory."),
    ProblemType("no_encryption_key", 422, "No encryption key",
                "A recipient has no usable X25519 key to seal to."),
    ProblemType("directory_key_unavailable", 503, "Directory key unavailable",
                "This gateway has no directory signing key; the operator must install it."),
    ProblemType("directory_untrusted", 422, "Directory not trusted",
                "The signed directory does not verify with the pinned key, or is too old (clients)."),
    ProblemType("key_file", 422, "Key file unusable",
                "A local key or pin file is missing or not a deskbridge key file (CLI)."),
    # Envelopes: answered at the gateway, and the reasons ingest dead-letters a record with
    ProblemType("malformed", 422, "Malformed envelope",
                "The envelope is not the documented JOSE structure (docs/envelope.md).", dead_letter=True),
    ProblemType("oversize", 413, "Envelope too large",
                "The envelope exceeds 2 MiB.", dead_letter=True),
    ProblemType("bad_algorithm", 422, "Algorithm not accepted",
                "Only Ed25519, ECDH-ES+A256KW and A256GCM are accepted.", dead_letter=True),
    ProblemType("bad_signature", 422, "Signature does not verify",
                "The outer or inner signature is not the sender's.", dead_letter=True),
    ProblemType("signer_mismatch", 422, "Signer is not the sender",
                "The signing key belongs to another agency than the named sender.", dead_letter=True),
    ProblemType("recipient_mismatch", 422, "Recipients do not match",
                "The wrapped keys do not match the addressed agencies, or an agency "
                "addressed itself.", dead_letter=True),
    ProblemType("header_mismatch", 422, "Routing header differs",
                "The routing header says something else than the signed notice.", dead_letter=True),
    ProblemType("unknown_key", 422, "Unknown key",
                "A signing or recipient key is not in the directory.", dead_letter=True),
    ProblemType("key_revoked", 422, "Key revoked",
                "The signing key was revoked; re-seal with a current key.", dead_letter=True),
    ProblemType("key_not_valid", 422, "Key not valid then",
                "The signing key was not valid at the claimed time.", dead_letter=True),
    ProblemType("stale", 422, "Too old",
                "sent_at (or a receipt's iat) is older than the freshness window; re-"
                "seal.", dead_letter=True),
    ProblemType("from_the_future", 422, "From the future",
                "sent_at is ahead of deskbridge's clock beyond the allowed skew; check "
                "the sender's clock.", dead_letter=True),
    ProblemType("expired", 422, "Already expired",
                "The notice's expires_at has passed.", dead_letter=True),
    ProblemType("duplicate_notice", 409, "Notice id already used",
                "Another envelope used this notice id; choose a new one. The very same "
                "bytes again get the first answer.", dead_letter=True),
    ProblemType("not_the_sender", 403, "Not the sender",
                "The envelope names another sender than the caller."),
    ProblemType("unknown_reference", 422, "Unknown reference",
                "in_reply_to or forwarded_from names a notice deskbridge has not seen, "
                "or one of another case.", dead_letter=True),
    ProblemType("tlp_violation", 422, "TLP violation",
                "The reply or forward would share beyond what the original's TLP "
                "allows.", dead_letter=True),
    ProblemType("bad_receipt", 422, "Receipt refused",
                "The acknowledgement's receipt is not the recipient's fresh signature over this copy."),
    ProblemType("not_a_recipient", 422, "Not a recipient",
                "None of the envelope's keys is the reader's (client)."),
    ProblemType("undecryptable", 422, "Does not decrypt",
                "The envelope does not decrypt with the reader's key (client)."),
    ProblemType("recall_refused", 422, "Recall refused",
                "A recall record names an unknown notice or another agency's.", dead_letter=True),
    # Notices
    ProblemType("desk_keys_unavailable", 503, "Desk keys unavailable",
                "The gateway cannot read the desk's signing keys; the operator must install them."),
    ProblemType("not_the_desk", 403, "Only the desk",
                "Only the desk may do this (seal at the gateway, see alerts)."),
    ProblemType("notice_not_found", 404, "No such notice",
                "No notice with this id sent by the caller (another agency's looks the same)."),
    ProblemType("case_not_found", 404, "No such case",
                "No notice of this case that the caller sent or received."),
    ProblemType("already_recalled", 409, "Already recalled",
                "The notice was recalled before."),
    ProblemType("erase_refused", 409, "Erasure refused",
                "No such notice, or it was erased already."),
    ProblemType("rate_limited", 429, "Too many submissions",
                "The agency sends faster than its rate; retry after Retry-After."),
    ProblemType("inbox_full", 429, "Recipient inbox full",
                "A recipient holds too many unacknowledged notices; retry once it reads them."),
    # Delivery
    ProblemType("bad_cursor", 400, "Bad cursor",
                "The cursor (after, Last-Event-ID) is not one this server issued."),
    ProblemType("not_in_inbox", 404, "Not in the inbox",
                "The caller's inbox holds no such notice."),
    ProblemType("recalled", 410, "Recalled",
                "The sender recalled the notice."),
    ProblemType("notice_expired", 410, "Expired",
                "The notice expired; it is no longer served."),
    ProblemType("invalid_webhook", 422, "Webhook refused",
                "The URL or filters are not acceptable (https, public address, no credentials)."),
    ProblemType("too_many_webhooks", 409, "Too many webhooks",
                "Delete a webhook first."),
    ProblemType("webhook_not_found", 404, "No such webhook",
                "The caller has no such webhook."),
    ProblemType("parked_not_found", 404, "No such parked delivery",
                "The caller has no such parked delivery."),
    ProblemType("already_replayed", 409, "Already replayed",
                "The parked delivery was replayed before."),
    ProblemType("no_longer_served", 410, "No longer served",
                "The parked notice expired or was recalled."),
    ProblemType("webhook_endpoint_failed", 502, "Webhook endpoint failed",
                "The agency's endpoint did not take the replayed delivery; it stays parked."),
    # The audit log
    ProblemType("tree_range", 422, "Outside the tree",
                "A size, index or range is outside the log or too long."),
    ProblemType("checkpoint_not_found", 404, "No such checkpoint",
                "No checkpoint (of this size) was published."),
    ProblemType("tile_not_found", 404, "No such tile",
                "No tile or entry bundle at this tlog-tiles path: misspelt, or beyond the log."),
    ProblemType("checkpoint_refused", 503, "Checkpoint refused",
                "The audit service will not sign: no log key, or the stored tree disagrees with its "
                "entries (the detail names what)."),
    ProblemType("checkpoint_standby", 503, "Standby audit replica",
                "This audit replica does not hold the checkpoint lease, so it signs nothing; the active "
                "replica signs on its interval (retry, or ask the active one)."),
    ProblemType("cosignature_refused", 422, "Cosignature refused",
                "The line is not a cosignature by one of the witness agency's active keys over that "
                "checkpoint."),
    ProblemType("note_malformed", 422, "Malformed note",
                "A signed note (C2SP signed-note) does not parse."),
    ProblemType("checkpoint_malformed", 422, "Malformed checkpoint",
                "A checkpoint body does not parse."),
    ProblemType("vkey_malformed", 422, "Malformed verifier key",
                "A vkey line does not parse (CLI)."),
    ProblemType("note_unverified", 422, "Note not verified",
                "No known key verifies the note's signature."),
    ProblemType("note_bad_signature", 422, "Note signature invalid",
                "A signature line does not verify."),
    ProblemType("note_ambiguous_key", 422, "Ambiguous verifier keys",
                "Two verifier keys share a name and key id."),
    ProblemType("note_wrong_origin", 422, "Wrong origin",
                "The checkpoint's origin is not the log's."),
    ProblemType("audit_findings", 422, "Audit log not intact",
                "The verifier found problems; each is printed (CLI)."),
    ProblemType("unknown_notice", 404, "Unknown notice",
                "The audit log holds no event of this notice id, so there is no evidence of it."),
    ProblemType("evidence_findings", 422, "Evidence does not verify",
                "An evidence bundle failed checks; each failed check is printed (CLI)."),
    # The CLI's own
    ProblemType("client_error", 400, "Command failed",
                "The CLI could not do what was asked; the line says why."),
]
# fmt: on
PROBLEM_TYPES: dict[str, ProblemType] = {p.code: p for p in _TYPES}
assert len(PROBLEM_TYPES) == len(_TYPES), "a code is listed twice"


def problem_type(code: str) -> ProblemType:
    """The code's entry; an unlisted code is answered as an internal error (and a test forbids one)."""
    return PROBLEM_TYPES.get(code, PROBLEM_TYPES["internal_error"])


def one_line(code: str, detail: str) -> str:
    """The CLI's line for a failure: what failed, then the code docs/errors.md explains."""
    return f"error: {detail} [{code}]"
