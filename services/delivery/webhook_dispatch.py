"""Webhook dispatch: one task per active webhook, so a slow or failing endpoint delays only itself.

The database holds each webhook's position, retry schedule and lease; these tasks only drive it, so a
restart resumes the schedule, and with several ingest instances one at a time drives each webhook.
Delivery is at least once: a crash between the endpoint's 2xx and the commit sends that item again, and
receivers drop repeats by notice_id.

When one of the agency's copies escalates (ingest's sweep, services/delivery/deadlines.py), each of its
webhooks whose filters admit it gets the item once more, marked `Deskbridge-Event: escalation`: one
attempt, never retried, never holding up the webhook's own position. Which escalations were sent is kept
in memory from the dispatcher's start, so those that happen while no dispatcher runs are not sent (the
inbox stream, the desk's alerts and the audit log still have them), and a lease moving to another
dispatcher may send one twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.delivery.models import Webhook
from services.delivery.service import inbox_item
from services.delivery.webhooks import (
    EscalationMark,
    RetryPolicy,
    WebhookEvent,
    WebhookSender,
    claim,
    head_of,
    next_escalation,
    record_delivered,
    record_failure,
    release,
)
from services.envelope.keys import SigningKey
from services.metrics.registry import Metrics
from services.platform.database import utcnow
from services.platform.kafka import EventPublisher
from services.platform.outage import TRANSIENT
from services.platform.settings import Settings

log = structlog.get_logger("webhooks")
SOURCE = "deskbridge/webhooks"
LEASE_MARGIN_S = 30.0  # a lease outlives one attempt by this much; renewed once less than that is left
TROUBLE_PAUSE_S = 5.0  # after a database or broker failure: a delivered item is not re-sent in a tight loop


@dataclass
class _Escalations:
    """One webhook's escalation notices: the last copy handled, and when to look for the next."""

    after: EscalationMark
    look_at: datetime


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(seconds, 0))


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publisher: EventPublisher,
        key: SigningKey,
        settings: Settings,
        policy: RetryPolicy,
        metrics: Metrics,
    ) -> None:
        self.sessions = sessions
        self.metrics = metrics
        self.publisher = publisher
        self.key = key
        self.policy = policy
        self.poll_s = settings.webhook_poll_s
        self.timeout_s = settings.webhook_timeout_s
        self.allow_private = settings.webhook_allow_private
        self.started = utcnow()
        # Copies escalate only at ingest's sweeps: looking more often would find nothing new.
        self.escalation_look = timedelta(seconds=max(settings.expiry_sweep_s, settings.webhook_poll_s))
        self.escalations: dict[str, _Escalations] = {}
        self.owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        # A dispatcher that died lets another take over this long after its last renewal.
        self.lease = timedelta(seconds=settings.webhook_timeout_s + 2 * LEASE_MARGIN_S)
        self.renew_before = timedelta(seconds=settings.webhook_timeout_s + LEASE_MARGIN_S)
        self.held: dict[str, datetime] = {}  # lease ends of the webhooks this dispatcher drives

    async def run(self, stop: asyncio.Event) -> None:
        """Starts a task for each webhook that becomes active; a stopped webhook's task ends by itself."""
        workers: dict[str, asyncio.Task[None]] = {}
        try:
            while not stop.is_set():
                try:
                    async with self.sessions() as session:
                        active = set(
                            (await session.execute(select(Webhook.id).where(Webhook.active))).scalars()
                        )
                except TRANSIENT as exc:
                    log.warning("webhooks not listed; retrying", error=type(exc).__name__)
                    active = set()
                for hook_id in [h for h, task in workers.items() if task.done()]:
                    del workers[hook_id]
                for hook_id in active - workers.keys():
                    workers[hook_id] = asyncio.create_task(
                        self._drive(hook_id, stop), name=f"webhook {hook_id}"
                    )
                await _pause(stop, self.poll_s)
        finally:
            for task in workers.values():
                task.cancel()
            await asyncio.gather(*workers.values(), return_exceptions=True)
            with contextlib.suppress(*TRANSIENT):
                async with self.sessions() as session:
                    await release(session, self.owner)

    async def _drive(self, hook_id: str, stop: asyncio.Event) -> None:
        try:
            async with WebhookSender(self.key, self.timeout_s, self.allow_private) as sender:
                while not stop.is_set():
                    try:
                        wait = await self._step(hook_id, sender)
                    except TRANSIENT as exc:
                        log.warning(
                            "webhook step failed; retrying", webhook=hook_id, error=type(exc).__name__
                        )
                        wait = TROUBLE_PAUSE_S
                    except Exception:  # one webhook's fault must not stop the others
                        log.exception("webhook step failed", webhook=hook_id)
                        wait = TROUBLE_PAUSE_S
                    if wait is None:
                        return
                    await _pause(stop, wait)
        finally:
            self.held.pop(hook_id, None)
            self.escalations.pop(hook_id, None)

    async def _step(self, hook_id: str, sender: WebhookSender) -> float | None:
        """One POST at most: an escalation notice if one is due, else an attempt at the webhook's next
        delivery; returns the seconds until the next step, or None once the webhook is stopped."""
        async with self.sessions() as session:
            now = utcnow()
            if not await self._hold(session, hook_id, now):
                hook = await session.get(Webhook, hook_id)
                return self.poll_s if hook is not None and hook.active else None
            hook = await session.get(Webhook, hook_id)
            if hook is None or not hook.active:
                return None
            if await self._escalate(session, hook, sender, now):
                return 0
            if hook.next_attempt_at is not None and hook.next_attempt_at > now:
                return self._until(hook.next_attempt_at, now)
            head = await head_of(session, hook)
            if head is None:
                return self.poll_s
            await session.commit()  # no transaction stays open while the endpoint answers
            error = await sender.deliver(hook.url, inbox_item(*head), trace=head[1].traceparent)
            notice_id = head[1].notice_id
            if error is None:
                await record_delivered(session, self.publisher, hook, head, SOURCE)
                await session.commit()
                self.metrics.webhook_attempt("delivery", "delivered")
                log.info("webhook delivered", webhook=hook_id, agency=hook.agency_id, notice_id=notice_id)
                return 0
            parked = await record_failure(session, self.publisher, hook, head, error, self.policy, SOURCE)
            await session.commit()
            self.metrics.webhook_attempt("delivery", "failed" if parked is None else "parked")
            if parked is not None:
                log.warning("webhook delivery parked", webhook=hook_id, notice_id=notice_id, error=error)
                return 0
            log.info("webhook attempt failed", webhook=hook_id, attempts=hook.attempts, error=error)
            assert hook.next_attempt_at is not None
            return self._until(hook.next_attempt_at, utcnow())

    def _until(self, attempt_at: datetime, now: datetime) -> float:
        """Seconds to wait for the next attempt, waking meanwhile to look for escalations: a failing
        delivery's backoff does not hold up its agency's escalation notices."""
        return min((attempt_at - now).total_seconds(), self.escalation_look.total_seconds())

    async def _escalate(
        self, session: AsyncSession, hook: Webhook, sender: WebhookSender, now: datetime
    ) -> bool:
        """POSTs the next copy that escalated since the last one handled, if any (True then): best effort,
        so a failure is logged and the webhook moves on, its own position untouched."""
        watch = self.escalations.get(hook.id)
        if watch is None:
            # Nothing that escalated before this dispatcher started, or before the webhook existed.
            watch = _Escalations(EscalationMark(max(self.started, hook.created_at)), now)
            self.escalations[hook.id] = watch
        if watch.look_at > now:
            return False
        found = await next_escalation(session, hook, watch.after)
        if found is None:
            watch.look_at = now + self.escalation_look
            return False
        delivery, notice = found
        assert delivery.escalated_at is not None  # next_escalation compares it with the mark
        watch.after = EscalationMark(delivery.escalated_at, delivery.seq)
        await session.commit()  # no transaction stays open while the endpoint answers
        item = inbox_item(delivery, notice)
        error = await sender.deliver(hook.url, item, WebhookEvent.escalation, notice.traceparent)
        self.metrics.webhook_attempt("escalation", "delivered" if error is None else "failed")
        if error is None:
            log.info("webhook escalation sent", webhook=hook.id, notice_id=notice.notice_id)
        else:
            log.warning(
                "webhook escalation not taken; not retried",
                webhook=hook.id,
                notice_id=notice.notice_id,
                error=error,
            )
        return True

    async def _hold(self, session: AsyncSession, hook_id: str, now: datetime) -> bool:
        """Whether this dispatcher holds the webhook's lease for at least one more attempt, renewing it
        (one write) only when it runs short rather than at every poll."""
        held = self.held.get(hook_id)
        if held is not None and held - now > self.renew_before:
            return True
        if not await claim(session, hook_id, self.owner, now, self.lease):
            self.held.pop(hook_id, None)
            return False
        self.held[hook_id] = now + self.lease
        return True
