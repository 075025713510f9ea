"""What a new envelope must pass before deskbridge carries it: the same checks at the gateway, in ingest
and in the audit service, so no stage trusts the one before it.

Order matters only for the reason given: the cheap, key-free checks come first.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.envelopes import RoutingHeader
from schemas.notices import Tlp
from services.delivery.models import Delivery, NoticeRow
from services.envelope.errors import EnvelopeError
from services.envelope.service import Freshness, ParsedEnvelope, recipient_kids, verify_outer
from services.trust.keyring import DirectoryView

# TLP 2.0 from least to most restricted; a forward may tighten the label, never loosen it.
TLP_ORDER = [Tlp.clear, Tlp.green, Tlp.amber, Tlp.amber_strict, Tlp.red]
CLOSED_TLP = {Tlp.amber_strict, Tlp.red}  # may not go beyond the original sender and recipients


async def admit(
    reader: AsyncSession,
    directory: DirectoryView,
    envelope: ParsedEnvelope,
    received_at: datetime,
    freshness: Freshness,
) -> None:
    """Raises EnvelopeError with a reason unless the envelope may be carried.

    `received_at` is when deskbridge took the envelope in: the gateway's clock at POST, the broker's
    append time in ingest and audit, so a backlog after an outage is not mistaken for staleness.
    Keys come from `directory` (current as of the caller's read); only replies and forwards query the
    database, for the notice they refer to.
    """
    routing = envelope.routing
    freshness.check(routing.sent_at, received_at)
    if routing.expires_at is not None and routing.expires_at <= received_at:
        raise EnvelopeError("expired", f"notice expired at {routing.expires_at.isoformat()}")
    verify_outer(envelope, directory.verification_key(envelope.kid, signed_at=routing.sent_at))
    kids = recipient_kids(envelope)
    owners = directory.enc_key_owners(kids)
    unknown = [k for k in kids if k not in owners]
    if unknown:
        raise EnvelopeError("unknown_key", f"recipient key {unknown[0]} is not in the directory")
    if sorted(owners[k] for k in kids) != sorted(routing.recipients):
        raise EnvelopeError("recipient_mismatch", "the wrapped keys do not match the addressed agencies")
    if routing.sender in routing.recipients:
        raise EnvelopeError("recipient_mismatch", "an agency cannot address a notice to itself")
    await check_thread(reader, routing)


async def audience(reader: AsyncSession, notice_id: str, sender: str) -> set[str]:
    """Who a notice was shared with: its sender and its recipients (one inbox row each)."""
    query = select(Delivery.recipient).where(Delivery.notice_id == notice_id)
    return {sender, *(await reader.execute(query)).scalars()}


async def check_thread(reader: AsyncSession, routing: RoutingHeader) -> None:
    """A reply or forward refers to a notice its sender was shared, in the same case, and TLP holds:
    an amber+strict or red notice goes to nobody outside its audience, and no label is loosened."""
    for field, ref in (("in_reply_to", routing.in_reply_to), ("forwarded_from", routing.forwarded_from)):
        if ref is None:
            continue
        referred = select(NoticeRow.notice_id, NoticeRow.sender, NoticeRow.case_ref, NoticeRow.tlp)
        original = (await reader.execute(referred.where(NoticeRow.notice_id == str(ref)))).first()
        if original is None:
            raise EnvelopeError(
                "unknown_reference", f"{field} names notice {ref}, which deskbridge has not seen"
            )
        shared = await audience(reader, original.notice_id, original.sender)
        if routing.sender not in shared:
            raise EnvelopeError("tlp_violation", f"{routing.sender} was never shared notice {ref}")
        if original.case_ref != routing.case_ref:
            raise EnvelopeError(
                "unknown_reference",
                f"{field} names a notice of case {original.case_ref}, not {routing.case_ref}",
            )
        label = Tlp(original.tlp)
        beyond = sorted(set(routing.recipients) - shared)
        if label in CLOSED_TLP and beyond:
            raise EnvelopeError(
                "tlp_violation",
                f"notice {ref} is TLP:{label.value.upper()} and may not go beyond its recipients "
                f"(not to {', '.join(beyond)})",
            )
        if field == "forwarded_from" and TLP_ORDER.index(routing.tlp) < TLP_ORDER.index(label):
            raise EnvelopeError(
                "tlp_violation",
                f"a forward of a TLP:{label.value.upper()} notice cannot be TLP:{routing.tlp.value.upper()}",
            )
