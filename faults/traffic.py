"""A bounded load that behaves like a careful client: each notice is sealed once, posted, and posted again
with the very same bytes after a 503, a 429 or a lost answer, until the gateway answers 2xx, refuses it
for good, or the envelope would go stale. Every attempt is kept, with its time, status and Retry-After."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from bench.load import Keyring, Sealed
from bench.stack import READERS, SENDERS, Stack

RETRYABLE = {"429", "503"}
GIVE_UP_AFTER_S = 200.0  # well inside the 300 s freshness window the envelope was sealed for
TRANSPORT_BACKOFF_S = 0.5
LONGEST_WAIT_S = 3.0  # a Retry-After longer than this is cut short: the run has a time budget


@dataclass(frozen=True)
class Answer:
    """One HTTP attempt, timed in seconds since the load began."""

    path: str
    began: float
    ended: float
    status: str  # the status code, or the transport error's name
    retry_after: str | None
    detail: str  # the start of the body of anything but a 2xx


@dataclass
class Traffic:
    """What the client saw: which notices were acknowledged with a 2xx, and every answer on the way."""

    started: float = field(default_factory=time.monotonic)
    addressed: dict[str, tuple[str, ...]] = field(default_factory=dict)  # every notice sealed: its recipients
    acked: dict[str, Sealed] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # notice id -> the final answer
    attempts: Counter[str] = field(default_factory=Counter)  # notice id -> posts made
    answers: list[Answer] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started

    def seal(self, keyring: Keyring, sender: str, recipients: Sequence[str]) -> Sealed:
        sealed = keyring.seal(sender, recipients)
        self.addressed[sealed.notice_id] = tuple(recipients)
        return sealed

    def statuses(self) -> Counter[str]:
        return Counter(a.status for a in self.answers if a.path == "POST /v1/envelopes")

    def resent(self) -> int:
        """Notices that took more than one post (their first answer was lost or a 503)."""
        return sum(1 for n in self.acked if self.attempts[n] > 1)


def _detail(response: httpx.Response) -> str:
    return "" if response.is_success else response.text[:300]


async def timed(
    traffic: Traffic, client: httpx.AsyncClient, method: str, path: str, **kwargs: object
) -> Answer:
    """One request, recorded; a transport error is an answer too (named by its class)."""
    began = traffic.now()
    try:
        response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        answer = Answer(f"{method} {path}", began, traffic.now(), type(exc).__name__, None, str(exc)[:300])
    else:
        answer = Answer(
            f"{method} {path}",
            began,
            traffic.now(),
            str(response.status_code),
            response.headers.get("retry-after"),
            _detail(response),
        )
    traffic.answers.append(answer)
    return answer


async def _deliver(traffic: Traffic, gateways: Sequence[httpx.AsyncClient], sealed: Sealed) -> None:
    """Posts until an answer is final; with several gateways, each retry goes to the next one."""
    first = time.monotonic()
    while True:
        client = gateways[traffic.attempts[sealed.notice_id] % len(gateways)]
        traffic.attempts[sealed.notice_id] += 1
        answer = await timed(traffic, client, "POST", "/v1/envelopes", content=sealed.raw)
        if answer.status.startswith("2"):
            traffic.acked[sealed.notice_id] = sealed
            return
        retryable = answer.status in RETRYABLE or not answer.status.isdigit()
        if not retryable or time.monotonic() - first > GIVE_UP_AFTER_S:
            traffic.refused[sealed.notice_id] = f"{answer.status} {answer.detail[:120]}".strip()
            return
        wait = TRANSPORT_BACKOFF_S
        if answer.retry_after is not None and answer.retry_after.isdigit():
            wait = min(float(answer.retry_after), LONGEST_WAIT_S)
        await asyncio.sleep(wait)


async def drive(
    stack: Stack,
    keyring: Keyring,
    traffic: Traffic,
    count: int,
    recipients: int,
    connections: int,
    rate: float,
) -> None:
    """Posts `count` notices, each to the first `recipients` readers, over `connections` at a time and
    starting at most `rate` a second, so faults planned at shares of the load strike while it runs. Each
    is sealed just before its first post, so a long outage cannot make it stale before it is sent. With
    several gateways, notices are spread over them and a retry goes to another one."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    gateways = [stack.url(name) for name in stack.instances("gateway")] or [stack.gateway_url]
    headers = {
        agency: {"Authorization": f"Bearer {stack.token(agency)}", "Content-Type": "application/json"}
        for agency in SENDERS
    }
    clients = {
        agency: [
            httpx.AsyncClient(base_url=url, headers=headers[agency], limits=limits, timeout=120)
            for url in gateways
        ]
        for agency in SENDERS
    }
    readers: Sequence[str] = READERS[:recipients]
    order = itertools.cycle(SENDERS)
    remaining = iter(range(count))
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def sender() -> None:
        for index in remaining:
            await asyncio.sleep(max(0.0, began + index / rate - loop.time()))
            sealed = traffic.seal(keyring, next(order), readers)
            spread = clients[sealed.sender]
            shift = index % len(spread)
            await _deliver(traffic, [*spread[shift:], *spread[:shift]], sealed)

    try:
        await asyncio.gather(*(sender() for _ in range(connections)))
    finally:
        for pool in clients.values():
            for client in pool:
                await client.aclose()
