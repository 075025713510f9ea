"""Signed receipts: the recipient signs what it received (notice id, envelope hash, time) with its own
key, so the desk can prove who received what and when without trusting deskbridge's word for it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.envelope.compact import ED25519_OR_LEGACY, read_compact, sign_compact, verify_compact
from services.envelope.errors import EnvelopeError
from services.envelope.keys import PublicKey, SigningKey
from services.envelope.service import Freshness

RECEIPT_TYP = "deskbridge-receipt+jws"
# The last second of year 9999 (UTC): every iat up to it is a time datetime can hold on every platform.
LAST_UNIX_SECOND = 253_402_300_799


class Receipt(BaseModel):
    """The signed payload of a receipt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notice_id: uuid.UUID
    envelope_sha256: str
    agency: str
    iat: int = Field(ge=0, le=LAST_UNIX_SECOND)  # Unix seconds


def make_receipt(signer: SigningKey, notice_id: str, envelope_sha256: str, at: datetime | None = None) -> str:
    """What a recipient sends with its acknowledgement (made on the recipient's machine)."""
    payload = Receipt(
        notice_id=uuid.UUID(notice_id),
        envelope_sha256=envelope_sha256,
        agency=signer.agency,
        iat=int((at or datetime.now(UTC)).timestamp()),
    )
    return sign_compact(payload.model_dump_json().encode(), signer, RECEIPT_TYP)


def check_receipt(
    token: str,
    key_of: Callable[[str, datetime], PublicKey],
    recipient: str,
    notice_id: str,
    envelope_sha256: str,
    now: datetime,
    freshness: Freshness,
) -> Receipt:
    """Raises EnvelopeError("bad_receipt" or a freshness reason) unless `token` is the recipient's fresh
    signature over this copy. `key_of(kid, signed_at)` is the directory's signing key (or EnvelopeError)."""
    try:
        header, payload = read_compact(token)
    except EnvelopeError as exc:
        raise EnvelopeError("bad_receipt", "the receipt is not a compact JWS over a receipt") from exc
    try:
        unverified = Receipt.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise EnvelopeError(
            "bad_receipt", f"the receipt's {where} is not acceptable: {first['msg']}"
        ) from exc
    kid = header.get("kid")
    if not isinstance(kid, str) or header.get("typ") != RECEIPT_TYP:
        raise EnvelopeError("bad_receipt", f"the receipt needs a kid and typ {RECEIPT_TYP}")
    signed_at = datetime.fromtimestamp(unverified.iat, UTC)
    freshness.check(signed_at, now)
    # iat has whole seconds: judge the key at the end of that second, or a key registered earlier in
    # the same second would look not yet valid.
    key = key_of(kid, signed_at + timedelta(microseconds=999_999))
    if key.agency != recipient:
        raise EnvelopeError("bad_receipt", f"the receipt is signed by {key.agency}, not by {recipient}")
    try:
        verify_compact(token, key, RECEIPT_TYP, ED25519_OR_LEGACY)
    except EnvelopeError as exc:
        raise EnvelopeError("bad_receipt", "the receipt's signature does not verify") from exc
    expected = (uuid.UUID(notice_id), envelope_sha256, recipient)
    if (unverified.notice_id, unverified.envelope_sha256, unverified.agency) != expected:
        raise EnvelopeError("bad_receipt", "the receipt names another notice, envelope or agency")
    return unverified
