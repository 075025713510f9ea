"""The notifier's waits: an announcement wakes a waiter at once; a waiter that found nothing just after
its agency's announcement (ingest announces a delivery just before committing it) looks again soon
rather than after the fallback, and the sooner the younger the announcement; other agencies and
announcements long past change nothing."""

from __future__ import annotations

import asyncio
import time

from services.delivery.notify import RECENT_S, SOON_S, InboxNotifier


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


async def test_looks_after_an_announcement_follow_it_closely_then_spread_out() -> None:
    # A look just after the announcement is followed by another within a few milliseconds (the commit
    # is usually that close); each later one waits as long again as the announcement is old, so a row
    # that never comes costs a handful of looks, not one every few milliseconds until RECENT_S.
    notifier = InboxNotifier(recheck_s=5.0)
    await notifier.bump("kh-cnp")
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
