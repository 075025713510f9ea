"""Retry loops for work that runs until its service stops, driven by tenacity.

`until_stopped` retries the given exceptions with the given backoff and logs a warning before each wait;
a wait ends the moment the stop event is set, so a service told to stop never sits out a backoff. It never
gives up by itself: tenacity asks its stop strategies only after a failed attempt, before the wait, while
what matters here is whether `stop` was set by the end of the wait. So each caller looks at `stop` at the
top of its attempts and decides there what stopping means for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from tenacity import RetryCallState, retry_if_exception_type
from tenacity.asyncio import AsyncRetrying
from tenacity.wait import wait_base

Sleep = Callable[[float], Awaitable[None]]


def sleep_until(stop: asyncio.Event) -> Sleep:
    """tenacity's `sleep`: waits the backoff out, or until `stop` is set."""

    async def sleep(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    return sleep


def until_stopped(
    stop: asyncio.Event,
    retry_on: type[Exception] | tuple[type[Exception], ...],
    wait: wait_base,
    log: structlog.typing.FilteringBoundLogger,
    say: str,
    describe: Callable[[BaseException], str] = lambda exc: type(exc).__name__,
    sleep: Sleep | None = None,
) -> AsyncRetrying:
    """Attempts (`async for attempt in ...: with attempt: ...`) until one succeeds; an exception that is
    not a `retry_on` ends the loop and propagates. Before each wait, `log` warns `say` with the error
    (`describe`d) and the wait in seconds. `sleep` replaces the wait on `stop` (tests record it)."""

    def warn(state: RetryCallState) -> None:
        assert state.outcome is not None  # a failed attempt's, before its wait
        error = state.outcome.exception()
        assert error is not None
        log.warning(say, error=describe(error), retry_in_s=state.upcoming_sleep)

    return AsyncRetrying(
        retry=retry_if_exception_type(retry_on),
        wait=wait,
        sleep=sleep or sleep_until(stop),
        before_sleep=warn,
    )
