"""The desk's alerts: what is overdue or stuck, so a flash notice never waits in a queue nobody watches."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from schemas.api import Alert
from services.common.db import Agency as AgencyRow
from services.common.db import Delivery, NoticeRow
from services.common.http import Session
from services.common.webhooks import parked_alerts
from services.gateway.deps import Agency
from services.gateway.notices import ERRORS

router = APIRouter(prefix="/v1/alerts", tags=["notices"])


@router.get(
    "",
    response_model=list[Alert],
    responses=ERRORS,
    summary="Overdue notices and parked webhook deliveries (the desk's credential).",
)
async def get_alerts(principal: Agency, session: Session) -> list[Alert]:
    me = await session.get(AgencyRow, principal.agency)
    if me is None or me.kind != "desk":
        raise HTTPException(403, "alerts are the desk's")
    query = (
        select(Delivery, NoticeRow)
        .join(NoticeRow, NoticeRow.notice_id == Delivery.notice_id)
        .where(Delivery.escalated_at.is_not(None), Delivery.state != "acknowledged")
        .where(Delivery.recalled_at.is_(None), Delivery.expired_at.is_(None))
        .order_by(Delivery.ack_due_at)
        .limit(1000)
    )
    alerts = []
    for d, n in (await session.execute(query)).all():
        assert d.escalated_at is not None and d.ack_due_at is not None
        alerts.append(
            Alert(
                kind="sla_escalation",
                agency=d.recipient,
                notice_id=uuid.UUID(n.notice_id),
                case_ref=n.case_ref,
                priority=n.priority,
                since=d.escalated_at,
                detail=f"{n.priority} notice {d.state}, not acknowledged; was due {d.ack_due_at.isoformat()}",
            )
        )
    return alerts + await parked_alerts(session)
