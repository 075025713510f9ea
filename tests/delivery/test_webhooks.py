"""Webhook subscriptions: deliveries POSTed to an agency's endpoint in order, signed with the directory key;
retries with backoff that survive a restart; parking, replay and the desk's alert; a slow endpoint delaying
only itself; filters; each agency managing only its own webhooks; non-public addresses refused at
registration and when connecting, and only coarse errors shown; an escalated copy POSTed once more.

Real gateway over HTTP, real Kafka, real PostgreSQL, ingest and audit running, the dispatcher started by
each test, and a receiving server on loopback that checks every request against the pinned directory key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.kafka import free_port
from services.delivery.deadlines import parked_alerts
from services.delivery.models import Delivery
from services.delivery.service import decode_cursor
from services.delivery.webhooks import RetryPolicy, verify_webhook
from services.envelope.keys import AgencyKeys, PublicKey, SigningKey
from services.envelope.service import open_envelope, parse_envelope
from services.gateway.app import create_app as create_gateway_app
from services.ingest.main import run_webhooks
from services.platform.settings import Settings
from services.trust.errors import SignatureError
from services.trust.httpsig import RequestSigner
from services.trust.signed_directory import DIRECTORY_SIGNER, load_pin
from tests.conftest import ServiceTasks, Stack, audited, eventually
from tests.support.sealing import notice_body

DESK, KH, INTERPOL = "kr-desk", "kh-cnp", "interpol-ncb-phnom-penh"
# The receivers listen on loopback, which a webhook may reach only when private addresses are allowed.
pytestmark = pytest.mark.settings(webhook_allow_private=True)


@dataclass
class Endpoint:
    """How one receiving endpoint behaves, and what it saw (times on the event loop's clock)."""

    failures: int = 0  # answers 500 to this many first attempts
    failing: bool = False  # answers 500 while set
    delay_s: float = 0.0  # a slow endpoint: this long before answering
    attempts: list[float] = field(default_factory=list)
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # the Deskbridge-Event header of each received item
    refused: list[str] = field(default_factory=list)

    def notice_ids(self) -> list[str]:
        return [item["notice_id"] for _, item in self.received]


class Receiver:
    """Partners' webhook endpoints on loopback; each request is checked against the pinned directory key."""

    def __init__(self, pinned: PublicKey) -> None:
        self.pinned = pinned
        self.base_url = ""
        self.endpoints: dict[str, Endpoint] = {}
        self.app = Starlette(routes=[Route("/hooks/{name}", self.handle, methods=["POST"])])

    def endpoint(self, name: str, **behaviour: Any) -> tuple[str, Endpoint]:
        self.endpoints[name] = Endpoint(**behaviour)
        return f"{self.base_url}/hooks/{name}", self.endpoints[name]

    async def handle(self, request: Request) -> Response:
        endpoint = self.endpoints[request.path_params["name"]]
        clock = asyncio.get_running_loop().time
        endpoint.attempts.append(clock())
        body = await request.body()
        try:
            await verify_webhook(request.method, str(request.url), request.headers.items(), body, self.pinned)
        except SignatureError as exc:
            endpoint.refused.append(exc.detail)
            return Response(status_code=401)
        if endpoint.delay_s:
            await asyncio.sleep(endpoint.delay_s)  # the endpoint's slowness, not synchronisation
        if endpoint.failing or len(endpoint.attempts) <= endpoint.failures:
            return Response(status_code=500)
        endpoint.received.append((clock(), json.loads(body)))
        endpoint.events.append(request.headers.get("Deskbridge-Event", ""))
        return Response(status_code=204)


class _Ceiling(random.Random):
    """Draws the top of every jitter range, so the backoff schedule is exact."""

    def random(self) -> float:
        return 1.0


@pytest.fixture
async def receiver(stack: Stack) -> AsyncIterator[Receiver]:
    hooks = Receiver(load_pin(stack.home / KH))
    services = ServiceTasks()
    hooks.base_url = await services.serve(hooks.app, free_port())
    try:
        yield hooks
    finally:
        await services.close()


@asynccontextmanager
async def dispatching(settings: Settings, rng: random.Random | None = None) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_webhooks(settings, stop, rng))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _register(stack: Stack, agency: str, url: str, **filters: list[str]) -> str:
    response = await stack.client(agency).post("/v1/webhooks", json={"url": url, "filters": filters})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _send(stack: Stack, recipients: list[str], **overrides: Any) -> str:
    response = await stack.client(DESK).post("/v1/notices", json=notice_body(recipients, **overrides))
    assert response.status_code == 202, response.text
    return str(response.json()["notice_id"])


async def _received(endpoint: Endpoint, count: int) -> bool:
    return len(endpoint.received) >= count


async def _state(stack: Stack, notice_id: str, agency: str) -> str | None:
    async with stack.sessions() as session:
        query = select(Delivery.state).where(Delivery.notice_id == notice_id, Delivery.recipient == agency)
        return (await session.execute(query)).scalar_one_or_none()


async def _fetched(stack: Stack, notice_ids: list[str], agency: str) -> bool:
    return all([await _state(stack, n, agency) == "fetched" for n in notice_ids])


async def _parked(stack: Stack, agency: str) -> list[dict[str, Any]]:
    response = await stack.client(agency).get("/v1/webhooks/parked")
    assert response.status_code == 200, response.text
    return list(response.json())


async def _webhooks(stack: Stack, agency: str) -> list[dict[str, Any]]:
    response = await stack.client(agency).get("/v1/webhooks")
    assert response.status_code == 200, response.text
    return list(response.json())


async def test_deliveries_reach_the_agency_webhook_in_order_signed_and_sealed_to_it(
    stack: Stack, receiver: Receiver
) -> None:
    url, endpoint = receiver.endpoint("kh")
    hook_id = await _register(stack, KH, url)
    async with dispatching(stack.settings):
        sent = [await _send(stack, [KH], summary=f"Update {i}") for i in range(3)]
        await eventually(lambda: _received(endpoint, 3), within=60)
        await eventually(lambda: _fetched(stack, sent, KH))

    assert endpoint.refused == []
    items = [item for _, item in endpoint.received]
    assert [i["notice_id"] for i in items] == sent
    cursors = [decode_cursor(i["cursor"]) for i in items]
    assert cursors == sorted(cursors) and len(set(cursors)) == 3
    assert {i["sender"] for i in items} == {DESK} and {i["priority"] for i in items} == {"flash"}
    kh = AgencyKeys.load(stack.home / KH)
    desk = {k.kid: k for k in AgencyKeys.load(stack.home / DESK).public_keys()}
    opened = [
        open_envelope(parse_envelope(i["envelope"]), kh.decryption_keys(), desk.__getitem__) for i in items
    ]
    assert [n.summary for n in opened] == [f"Update {i}" for i in range(3)]
    [hook] = await _webhooks(stack, KH)
    assert hook["id"] == hook_id and hook["cursor"] == items[-1]["cursor"] and hook["attempts"] == 0
    for notice_id in sent:
        assert await eventually(lambda n=notice_id: audited(stack, "notice.fetched", notice_id=n, agency=KH))


async def test_a_failing_endpoint_gets_the_delivery_after_retries_with_growing_gaps(
    stack: Stack, receiver: Receiver
) -> None:
    url, endpoint = receiver.endpoint("kh", failures=2)
    await _register(stack, KH, url)
    settings = stack.settings.model_copy(
        update={"webhook_backoff_base_s": 1.0, "webhook_backoff_cap_s": 10.0, "webhook_max_attempts": 5}
    )
    async with dispatching(settings, _Ceiling()):
        notice_id = await _send(stack, [KH])
        await eventually(lambda: _received(endpoint, 1), within=60)
        await eventually(lambda: _fetched(stack, [notice_id], KH))

    assert endpoint.notice_ids() == [notice_id] and len(endpoint.attempts) == 3
    first_gap, second_gap = (b - a for a, b in zip(endpoint.attempts, endpoint.attempts[1:], strict=False))
    # Full jitter drawn at its top: the waits are base, then 2 * base.
    assert first_gap >= 0.95 and second_gap >= 1.95 and second_gap > first_gap
    assert await _parked(stack, KH) == []


async def test_retries_survive_a_restart_of_the_dispatcher(stack: Stack, receiver: Receiver) -> None:
    url, endpoint = receiver.endpoint("kh", failing=True)
    await _register(stack, KH, url)
    settings = stack.settings.model_copy(
        update={"webhook_backoff_base_s": 3.0, "webhook_backoff_cap_s": 3.0, "webhook_max_attempts": 3}
    )

    async def first_attempt_recorded() -> list[dict[str, Any]]:
        return [h for h in await _webhooks(stack, KH) if h["attempts"] == 1]

    async with dispatching(settings, _Ceiling()):
        notice_id = await _send(stack, [KH])
        [hook] = await eventually(first_attempt_recorded, within=60)
    assert hook["last_error"] == "HTTP 500" and hook["next_attempt_at"] is not None
    assert len(endpoint.attempts) == 1

    async with dispatching(settings, _Ceiling()):
        [parked] = await eventually(lambda: _parked(stack, KH), within=60)
    # The restarted dispatcher continued the count instead of starting a fresh budget.
    assert len(endpoint.attempts) == 3 and parked["attempts"] == 3 and parked["notice_id"] == notice_id


async def test_an_endpoint_that_keeps_failing_parks_the_delivery_and_the_agency_replays_it(
    stack: Stack, receiver: Receiver
) -> None:
    url, endpoint = receiver.endpoint("kh", failing=True)
    hook_id = await _register(stack, KH, url)
    kh = stack.client(KH)
    async with dispatching(stack.settings):
        first = await _send(stack, [KH], summary="first")
        [parked] = await eventually(lambda: _parked(stack, KH), within=60)
        assert parked["notice_id"] == first and parked["webhook_id"] == hook_id
        assert (
            parked["attempts"] == 3 and parked["last_error"] == "HTTP 500" and parked["replayed_at"] is None
        )
        assert len(endpoint.attempts) == 3
        async with stack.sessions() as session:
            [alert] = await parked_alerts(session)
        assert alert.kind == "webhook_parked" and alert.agency == KH and str(alert.notice_id) == first
        assert "3 attempts" in alert.detail

        # Replay while the endpoint still fails: 502, and it stays parked with the count raised.
        response = await kh.post(f"/v1/webhooks/parked/{parked['id']}/replay")
        assert response.status_code == 502 and "HTTP 500" in response.json()["detail"], response.text
        assert [p["attempts"] for p in await _parked(stack, KH)] == [4]

        # The endpoint recovers: the next notice flows at once, the parked one waits for its replay.
        endpoint.failing = False
        second = await _send(stack, [KH], summary="second")
        await eventually(lambda: _received(endpoint, 1), within=60)
        assert endpoint.notice_ids() == [second]
        assert await _state(stack, first, KH) == "delivered"

        other = await stack.client(INTERPOL).post(f"/v1/webhooks/parked/{parked['id']}/replay")
        assert other.status_code == 404, other.text
        response = await kh.post(f"/v1/webhooks/parked/{parked['id']}/replay")
        assert response.status_code == 200, response.text
        assert response.json()["replayed_at"] is not None
        assert endpoint.notice_ids() == [second, first]
        assert await _state(stack, first, KH) == "fetched"
        again = await kh.post(f"/v1/webhooks/parked/{parked['id']}/replay")
        assert again.status_code == 409, again.text

    assert [p["replayed_at"] is not None for p in await _parked(stack, KH)] == [True]
    async with stack.sessions() as session:
        assert await parked_alerts(session) == []
    [parked_event] = await eventually(lambda: audited(stack, "webhook.parked", notice_id=first))
    assert parked_event["agency"] == KH and parked_event["details"]["webhook_id"] == hook_id
    [replayed_event] = await eventually(lambda: audited(stack, "webhook.replayed", notice_id=first))
    assert replayed_event["actor"] == KH
    assert await eventually(lambda: audited(stack, "notice.fetched", notice_id=first, agency=KH))


async def test_a_slow_endpoint_does_not_delay_another_agency(stack: Stack, receiver: Receiver) -> None:
    slow_url, slow = receiver.endpoint("kh", delay_s=5)
    quick_url, quick = receiver.endpoint("interpol")
    await _register(stack, KH, slow_url)
    await _register(stack, INTERPOL, quick_url)
    clock = asyncio.get_running_loop().time
    async with dispatching(stack.settings):
        sent_at = clock()
        sent = [await _send(stack, [KH, INTERPOL], summary=f"n{i}") for i in range(2)]
        await eventually(lambda: _received(quick, 2), within=60)
        await eventually(lambda: _received(slow, 2), within=90)

    assert quick.notice_ids() == sent and slow.notice_ids() == sent
    quick_done = max(at for at, _ in quick.received) - sent_at
    slow_first = min(at for at, _ in slow.received) - sent_at
    # Both of interpol's arrived before kh's endpoint had answered even the first of the same notices.
    assert slow_first >= 5 and quick_done < slow_first, (quick_done, slow_first)


async def test_a_webhook_filtered_to_flash_receives_only_flash_notices(
    stack: Stack, receiver: Receiver
) -> None:
    url, endpoint = receiver.endpoint("kh-flash")
    await _register(stack, KH, url, priorities=["flash"])
    async with dispatching(stack.settings):
        routine = await _send(stack, [KH], priority="routine", summary="routine")
        flash = await _send(stack, [KH], priority="flash", summary="flash")
        await eventually(lambda: _received(endpoint, 1), within=60)
    # Same case, so the routine notice was delivered first and passed over.
    assert endpoint.notice_ids() == [flash]
    assert await _state(stack, routine, KH) == "delivered"
    bad = await stack.client(KH).post(
        "/v1/webhooks", json={"url": url, "filters": {"priorities": ["urgent"]}}
    )
    assert bad.status_code == 422, bad.text


async def test_an_agency_manages_only_its_own_webhooks_and_urls_are_checked(
    stack: Stack, receiver: Receiver
) -> None:
    url, _ = receiver.endpoint("kh")
    hook_id = await _register(stack, KH, url)
    kh, interpol = stack.client(KH), stack.client(INTERPOL)
    assert [h["id"] for h in await _webhooks(stack, KH)] == [hook_id]
    assert await _webhooks(stack, INTERPOL) == []
    assert (await interpol.delete(f"/v1/webhooks/{hook_id}")).status_code == 404
    assert (await stack.client(None).get("/v1/webhooks")).status_code == 401
    for bad in ("not a url", "ftp://partner.example/hook", "https://user:secret@partner.example/hook"):
        response = await kh.post("/v1/webhooks", json={"url": bad})
        assert response.status_code == 422, (bad, response.text)
    assert (await kh.delete(f"/v1/webhooks/{hook_id}")).status_code == 204
    assert await _webhooks(stack, KH) == []
    assert (await kh.delete(f"/v1/webhooks/{hook_id}")).status_code == 404

    strict = ServiceTasks()
    gateway = await strict.serve(
        create_gateway_app(stack.settings.model_copy(update={"webhook_allow_http": False})), free_port()
    )
    try:
        async with httpx.AsyncClient(base_url=gateway, headers=kh.headers, timeout=30) as client:
            refused = await client.post("/v1/webhooks", json={"url": url})
            assert refused.status_code == 422 and "https://" in refused.json()["detail"], refused.text
            accepted = await client.post("/v1/webhooks", json={"url": "https://partner.example/hook"})
            assert accepted.status_code == 201, accepted.text
    finally:
        await strict.close()


@pytest.mark.settings()  # overrides the module's mark: the settings' own default
async def test_endpoints_on_non_public_addresses_are_refused_by_default_saying_why(
    stack: Stack, receiver: Receiver
) -> None:
    assert not stack.settings.webhook_allow_private
    loopback_receiver, _ = receiver.endpoint("kh")
    kh = stack.client(KH)
    for url, kind in (
        ("http://127.0.0.1/hook", "loopback"),
        ("http://10.0.0.1/hook", "private"),
        ("http://192.168.1.20:8443/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]/hook", "loopback"),
        ("http://[fd00::1]/hook", "private"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://240.0.0.1/hook", "reserved"),
        ("http://localhost:8080/hook", "loopback"),  # a name is judged by what it resolves to
        (loopback_receiver, "loopback"),
    ):
        response = await kh.post("/v1/webhooks", json={"url": url})
        assert response.status_code == 422, (url, response.text)
        assert f"a {kind} address" in response.json()["detail"], (url, response.text)
    assert await _webhooks(stack, KH) == []
    # A name that does not resolve yet is taken: the dispatcher checks again before every POST.
    accepted = await kh.post("/v1/webhooks", json={"url": "https://partner.invalid/hook"})
    assert accepted.status_code == 201, accepted.text


async def test_the_dispatcher_checks_the_address_again_when_it_connects(
    stack: Stack, receiver: Receiver
) -> None:
    url, endpoint = receiver.endpoint("kh")
    hook_id = await _register(stack, KH, url)  # allowed at registration (as if DNS changed since)
    strict = stack.settings.model_copy(update={"webhook_allow_private": False})
    async with dispatching(strict):
        notice_id = await _send(stack, [KH])
        [parked] = await eventually(lambda: _parked(stack, KH), within=60)

    assert endpoint.attempts == []  # never connected
    assert parked["notice_id"] == notice_id and parked["webhook_id"] == hook_id and parked["attempts"] == 3
    assert parked["last_error"] == "refused: not a public address"
    async with stack.sessions() as session:
        [alert] = await parked_alerts(session)
    assert "refused: not a public address" in alert.detail


@pytest.mark.settings(webhook_allow_private=True, webhook_timeout_s=1)
async def test_the_agency_sees_coarse_errors_and_no_url_is_logged_with_its_query(
    stack: Stack, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    logging.getLogger("httpx").setLevel(logging.NOTSET)  # as a fresh process has it
    closed = await _register(stack, KH, f"http://127.0.0.1:{free_port()}/hooks/nobody")
    slow_url, _ = receiver.endpoint("kh-slow", delay_s=3)
    slow = await _register(stack, KH, slow_url)
    secret_url, secret = receiver.endpoint("kh-secret")
    await _register(stack, KH, f"{secret_url}?token=s3cret-query")
    with caplog.at_level(logging.INFO):
        async with dispatching(stack.settings):
            notice_id = await _send(stack, [KH])
            parked = await eventually(lambda: _parked_twice(stack), within=60)
            await eventually(lambda: _received(secret, 1), within=60)

    errors = {p["webhook_id"]: p["last_error"] for p in parked}
    assert errors == {closed: "connection failed", slow: "timeout"}
    assert {p["notice_id"] for p in parked} == {notice_id} and secret.notice_ids() == [notice_id]
    assert "s3cret-query" not in caplog.text


async def _parked_twice(stack: Stack) -> list[dict[str, Any]]:
    parked = await _parked(stack, KH)
    return parked if len(parked) == 2 else []


@pytest.mark.settings(webhook_allow_private=True, sla_flash_s=2)
async def test_an_escalated_notice_is_posted_once_more_as_an_escalation(
    stack: Stack, receiver: Receiver
) -> None:
    url, endpoint = receiver.endpoint("kh")
    routine_url, routine_only = receiver.endpoint("kh-routine")
    await _register(stack, KH, url)
    await _register(stack, KH, routine_url, priorities=["routine"])
    async with dispatching(stack.settings):
        notice_id = await _send(stack, [KH])  # flash: overdue 2 s after delivery
        await eventually(lambda: _received(endpoint, 2), within=60)
        # Several sweeps and looks pass: a second escalation notice would arrive by then.
        await asyncio.sleep(4 * stack.settings.expiry_sweep_s)

    assert endpoint.refused == []  # the escalation is signed like any webhook request
    assert endpoint.notice_ids() == [notice_id, notice_id]
    assert endpoint.events == ["notice", "escalation"]
    assert routine_only.received == []  # its filter does not admit a flash notice
    assert await _state(stack, notice_id, KH) == "fetched"
    [hook] = [h for h in await _webhooks(stack, KH) if h["url"] == url]
    assert hook["cursor"] == endpoint.received[0][1]["cursor"] and hook["attempts"] == 0


async def test_verify_webhook_refuses_another_key_url_body_or_event() -> None:
    key = SigningKey.generate(DIRECTORY_SIGNER)
    request = httpx.Request(
        "POST",
        "https://partner.example/hooks/a",
        content=b'{"notice_id": "x"}',
        headers={"Deskbridge-Event": "escalation"},
    )
    signer = RequestSigner(key, also_cover=("deskbridge-event",))
    next(signer.auth_flow(request))
    headers = list(request.headers.items())
    # The event header is covered: a relay cannot turn a reminder into a delivery.
    relabelled = [(k, "notice" if k.lower() == "deskbridge-event" else v) for k, v in headers]
    with pytest.raises(SignatureError):
        await verify_webhook("POST", str(request.url), relabelled, request.content, key.public())
    # A signature that does not cover the event header is refused as such.
    bare = httpx.Request(
        "POST", str(request.url), content=request.content, headers={"Deskbridge-Event": "notice"}
    )
    next(RequestSigner(key).auth_flow(bare))
    with pytest.raises(SignatureError, match="deskbridge-event"):
        await verify_webhook("POST", str(bare.url), list(bare.headers.items()), bare.content, key.public())
    pinned = key.public()
    verified = await verify_webhook("POST", str(request.url), headers, request.content, pinned)
    assert verified.agency == DIRECTORY_SIGNER and verified.kid == key.kid
    for method, url, body, pin in (
        ("POST", str(request.url), b'{"notice_id": "y"}', pinned),
        ("POST", "https://partner.example/hooks/b", request.content, pinned),
        ("PUT", str(request.url), request.content, pinned),
        ("POST", str(request.url), request.content, SigningKey.generate(DIRECTORY_SIGNER).public()),
    ):
        with pytest.raises(SignatureError):
            await verify_webhook(method, url, headers, body, pin)


def test_backoff_is_full_jitter_under_a_doubling_capped_bound() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=0.5, cap_s=8.0, rng=random.Random(7))
    for attempt in range(1, 10):
        bound = min(8.0, 0.5 * 2 ** (attempt - 1))
        draws = [policy.delay_s(attempt) for _ in range(200)]
        assert all(0 <= d <= bound for d in draws)
        assert max(draws) > 0.9 * bound and min(draws) < 0.1 * bound  # spread over the whole range
