"""The notifier's waits: an announcement wakes a waiter at once; a waiter that found nothing just after
its agency's announcement (ingest announces a delivery just before committing it) looks again soon
rather than after the fallback; other agencies and announcements long past change nothing."""

from __future__ import annotations

import asyncio
import time

from services.delivery.notify import RECENT_S, InboxNotifier


async def _waited(notifier: InboxNotifier, agency: str, at_most: float) -> float:
    began = time.monotonic()
    await notifier.wait(agency, notifier.version(agency), at_most)
    return time.monotonic() - began


async def test_a_look_just_after_an_announcement_is_followed_by_another_soon() -> None:
    notifier = InboxNotifier(recheck_s=1.0)
    await notifier.bump("kh-cnp")
    assert await _waited(notifier, "kh-cnp", 5) < 0.5
    assert await _waited(notifier, "aseanapol", 0.6) >= 0.55
    await asyncio.sleep(RECENT_S)
    assert await _waited(notifier, "kh-cnp", 0.6) >= 0.55


async def test_an_announcement_wakes_a_waiter_at_once() -> None:
    notifier = InboxNotifier(recheck_s=5.0)
    waiting = asyncio.create_task(_waited(notifier, "kh-cnp", 5))
    await asyncio.sleep(0.1)
    await notifier.bump("kh-cnp")
    assert await asyncio.wait_for(waiting, 1) < 0.5
