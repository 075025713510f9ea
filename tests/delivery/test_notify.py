"""The notifier's waits: an announcement wakes a waiter at once. A delivery is committed before ingest
announces it, so a waiter that found nothing after one waits for the next announcement or the fallback;
an escalation is announced before it is committed, so a waiter that found nothing just after one looks
again soon, the sooner the younger the announcement. Other agencies and announcements long past change
nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

from schemas.events import Event, EventType
from services.delivery.notify import RECENT_S, SOON_S, InboxNotifier


async def _waited(notifier: InboxNotifier, agency: str, at_most: float) -> float:
    began = time.monotonic()
    await notifier.wait(agency, notifier.version(agency), at_most)
    return time.monotonic() - began


def _event(kind: EventType, agency: str) -> bytes:
    return (
        Event(
            event_id=f"{kind.value}:{uuid.uuid4()}",
            type=kind,
            occurred_at=datetime.now(UTC),
            actor="deskbridge/ingest",
            agency=agency,
            notice_id=uuid.uuid4(),
            case_ref="KD-2025-0001",
            envelope_sha256="0" * 64,
        )
        .model_dump_json()
        .encode()
    )


async def test_a_look_just_after_an_escalation_is_followed_by_another_soon_but_not_after_a_delivery() -> None:
    notifier = InboxNotifier(recheck_s=1.0)
    await notifier._see(_event(EventType.notice_escalated, "kh-cnp"))
    assert await _waited(notifier, "kh-cnp", 5) < 0.5
    assert await _waited(notifier, "aseanapol", 0.6) >= 0.55
    await notifier._see(_event(EventType.notice_delivered, "aseanapol"))  # its row is committed already
    assert await _waited(notifier, "aseanapol", 0.6) >= 0.55
    await asyncio.sleep(RECENT_S)
    assert await _waited(notifier, "kh-cnp", 0.6) >= 0.55


async def test_looks_after_an_escalation_follow_it_closely_then_spread_out() -> None:
    # A look just after the announcement is followed by another within a few milliseconds (the commit
    # is usually that close); each later one waits as long again as the announcement is old, so a row
    # that never comes costs a handful of looks, not one every few milliseconds until RECENT_S.
    notifier = InboxNotifier(recheck_s=5.0)
    await notifier.bump("kh-cnp", before_commit=True)
    announced = time.monotonic()
    first = await _waited(notifier, "kh-cnp", 5)
    assert SOON_S * 0.9 <= first < 0.5  # not the fallback (5 s)
    await asyncio.sleep(0.06 - first)
    later = await _waited(notifier, "kh-cnp", 5)  # the announcement is some 60 ms old
    assert 0.05 <= later < 1  # as long again as its age, not SOON_S
    looks = 0
    while time.monotonic() - announced < RECENT_S:
        await _waited(notifier, "kh-cnp", 5)
        looks += 1
    assert 1 <= looks <= 2  # from some 120 ms on, each wait doubles the age past RECENT_S
    assert await _waited(notifier, "kh-cnp", 0.3) >= 0.29  # no longer recent: the fallback


async def test_an_announcement_wakes_a_waiter_at_once() -> None:
    notifier = InboxNotifier(recheck_s=5.0)
    waiting = asyncio.create_task(_waited(notifier, "kh-cnp", 5))
    await asyncio.sleep(0.1)
    await notifier._see(_event(EventType.notice_delivered, "kh-cnp"))
    assert await asyncio.wait_for(waiting, 1) < 0.5
