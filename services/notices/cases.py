"""A case as a thread: its notices with their replies beneath them, as far as the viewer may see."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.api import CaseNotice, CaseThread
from services.delivery.models import Delivery, NoticeRow
from services.delivery.service import recipient_status
from services.trust.models import Agency


async def case_thread(session: AsyncSession, case_ref: str, viewer: str) -> CaseThread | None:
    """The desk sees the whole case; a partner the notices it sent or received, and of the others'
    deliveries only its own. None when the viewer may see nothing of the case."""
    agency = await session.get(Agency, viewer)
    is_desk = agency is not None and agency.kind == "desk"
    notices = list((await session.execute(select(NoticeRow).where(NoticeRow.case_ref == case_ref))).scalars())
    deliveries: dict[str, list[Delivery]] = defaultdict(list)
    ids = [n.notice_id for n in notices]
    for d in (await session.execute(select(Delivery).where(Delivery.notice_id.in_(ids)))).scalars():
        deliveries[d.notice_id].append(d)
    visible = [
        n
        for n in notices
        if is_desk or n.sender == viewer or any(d.recipient == viewer for d in deliveries[n.notice_id])
    ]
    if not visible:
        return None
    known = {n.notice_id for n in visible}
    children: dict[str | None, list[NoticeRow]] = defaultdict(list)
    for n in sorted(visible, key=lambda n: (n.sent_at, n.notice_id)):
        # A reply to something the viewer cannot see is shown at the top level, not hidden.
        parent = n.in_reply_to if n.in_reply_to in known else None
        children[parent].append(n)
    out: list[CaseNotice] = []

    def walk(parent: str | None, depth: int) -> None:
        for n in children[parent]:
            rows = sorted(deliveries[n.notice_id], key=lambda d: d.recipient)
            if not (is_desk or n.sender == viewer):
                rows = [d for d in rows if d.recipient == viewer]
            out.append(
                CaseNotice(
                    notice_id=uuid.UUID(n.notice_id),
                    sender=n.sender,
                    notice_type=n.notice_type,
                    priority=n.priority,
                    tlp=n.tlp,
                    sent_at=n.sent_at,
                    expires_at=n.expires_at,
                    in_reply_to=uuid.UUID(n.in_reply_to) if n.in_reply_to else None,
                    forwarded_from=uuid.UUID(n.forwarded_from) if n.forwarded_from else None,
                    recalled_at=n.recalled_at,
                    envelope_sha256=n.envelope_sha256,
                    depth=depth,
                    recipients=[recipient_status(d) for d in rows],
                )
            )
            walk(n.notice_id, depth + 1)

    walk(None, 0)
    return CaseThread(case_ref=case_ref, notices=out)
