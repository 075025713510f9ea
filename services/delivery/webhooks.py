"""Webhook subscriptions: each delivery to an agency is POSTed to the agency's endpoint, in delivery order,
retried with backoff, and parked (for the agency to replay, and for the desk to see) once the budget is spent.

The POST is signed with RFC 9421 (services/trust/httpsig.py) by the desk's directory key, the key every
partner pins already: a receiver checks a request with `verify_webhook` and trusts nothing else. Position
and retry state live in the database (`webhooks`), so a restart resumes where the last attempt left off.

An agency chooses the URL, so deskbridge must not become its way into the desk's own network: endpoints on
loopback, private, link-local and other non-public addresses are refused at registration and again when
connecting (DNS may have changed since), and what an agency is told of a failure is coarse ("timeout",
"connection failed", "HTTP 503"), never what answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import TracebackType
from typing import Annotated, Any, Self, cast
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import AnyUrl, BaseModel, ConfigDict, Field, UrlConstraints
from sqlalchemy import CursorResult, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.api import InboxItem
from schemas.events import Event, EventType, fact_id
from schemas.notices import CaseRef, NoticeType, Priority
from services.delivery.errors import AddressRefused, DeliveryError
from services.delivery.events import fetched_events
from services.delivery.models import Delivery, NoticeRow, Webhook, WebhookParked
from services.delivery.service import (
    InboxFilter,
    decode_cursor,
    encode_cursor,
    inbox,
    inbox_item,
    mark_fetched,
)
from services.envelope.errors import EnvelopeError
from services.envelope.keys import PublicKey, SigningKey
from services.platform import tracing
from services.platform.database import utcnow
from services.platform.kafka import EventPublisher
from services.trust.httpsig import (
    COVERED,
    Headers,
    RequestSigner,
    SignaturePolicy,
    VerifiedRequest,
    verify_request,
)

log = structlog.get_logger("webhooks")
MAX_WEBHOOKS = 10  # active webhooks per agency
ERROR_CHARS = 500
RESOLVE_TIMEOUT_S = 5.0  # registration's look-up of the endpoint's host
EVENT_HEADER = "Deskbridge-Event"
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: the IPv4 address is its last 32 bits

# What an agency is told of a failed attempt: coarse on purpose, so that a webhook is no probe of what
# answers where. The cause goes to the operator's log.
TIMED_OUT = "timeout"
CONNECTION_FAILED = "connection failed"
NOT_PUBLIC = "refused: not a public address"

WebhookUrl = Annotated[AnyUrl, UrlConstraints(max_length=2048, allowed_schemes=["https", "http"])]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookEvent(StrEnum):
    """What a webhook POST is about, named in its `Deskbridge-Event` header; the inbox stream's events
    have the same names."""

    notice = "notice"  # a delivery, in inbox order
    escalation = "escalation"  # a copy that passed its acknowledgement deadline, sent once more


class WebhookFilters(BaseModel):
    """Which deliveries the webhook receives; an empty list admits every value."""

    model_config = ConfigDict(extra="forbid")

    types: list[NoticeType] = Field(default_factory=list, max_length=len(NoticeType))
    priorities: list[Priority] = Field(default_factory=list, max_length=len(Priority))
    case_refs: list[CaseRef] = Field(default_factory=list, max_length=100)

    def inbox_filter(self) -> InboxFilter:
        return InboxFilter(
            tuple(t.value for t in self.types), tuple(p.value for p in self.priorities), tuple(self.case_refs)
        )


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl = Field(description="https:// endpoint that receives each delivery as a signed POST.")
    filters: WebhookFilters = Field(default_factory=WebhookFilters)
    after: str | None = Field(
        default=None,
        description="An inbox cursor: deliver everything after it. Default: only what is delivered from now.",
    )


class WebhookOut(BaseModel):
    id: str
    url: str
    filters: WebhookFilters
    cursor: str = Field(description="The inbox cursor of the last delivery the webhook handled.")
    attempts: int = Field(description="Failed attempts at the delivery after `cursor` so far.")
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    created_at: datetime


class ParkedDelivery(BaseModel):
    id: str
    webhook_id: str
    notice_id: uuid.UUID
    cursor: str
    attempts: int
    last_error: str | None = None
    parked_at: datetime
    replayed_at: datetime | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits uniformly up to min(cap, base * 2^(n-1))."""

    max_attempts: int
    base_s: float
    cap_s: float
    rng: random.Random

    def delay_s(self, attempt: int) -> float:
        return self.rng.uniform(0, min(self.cap_s, self.base_s * 2 ** min(attempt - 1, 62)))


def check_url(url: str, allow_http: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        raise DeliveryError("invalid_webhook", "url: a webhook endpoint must be https://")
    if parts.username or parts.password:
        raise DeliveryError(
            "invalid_webhook", "url: credentials in the URL are refused; the request signature authenticates"
        )
    if parts.fragment:
        raise DeliveryError("invalid_webhook", "url: a fragment is never sent; leave it out")


def address_refusal(address: IpAddress) -> str | None:
    """Why a webhook may not connect to `address` ("loopback", "private", ...); None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv6 form of an IPv4 address is judged by the IPv4 address it reaches.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_refusal(embedded)
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
        (not address.is_global, "non-global"),
    )
    return next((why for refused, why in checks if refused), None)


async def resolve(host: str) -> list[IpAddress]:
    """The addresses `host` stands for: itself if it is an IP literal, else what DNS answers now."""
    with contextlib.suppress(ValueError):
        return [ipaddress.ip_address(host)]
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def refuse_non_public(host: str, addresses: Sequence[IpAddress]) -> None:
    """Raises AddressRefused if any of the host's addresses is not public: one is enough to reach inside."""
    for address in addresses:
        why = address_refusal(address)
        if why is not None:
            raise AddressRefused(host, address, why)


async def check_target(url: str, allow_private: bool) -> None:
    """Refuses an endpoint on a non-public address, saying which kind. A name that does not resolve (yet)
    is let through: the dispatcher checks the addresses again before every POST."""
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            addresses = await resolve(host)
    except (OSError, UnicodeError, TimeoutError):
        return
    try:
        refuse_non_public(host, addresses)
    except AddressRefused as exc:
        raise DeliveryError(
            "invalid_webhook",
            f"url: {host} is or resolves to a {exc.why} address; webhook endpoints must be on public "
            "addresses",
        ) from exc


def webhook_out(hook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=hook.id,
        url=hook.url,
        filters=filters_of(hook),
        cursor=encode_cursor(hook.cursor_seq),
        attempts=hook.attempts,
        next_attempt_at=hook.next_attempt_at,
        last_error=hook.last_error,
        created_at=hook.created_at,
    )


def parked_out(parked: WebhookParked) -> ParkedDelivery:
    return ParkedDelivery(
        id=parked.id,
        webhook_id=parked.webhook_id,
        notice_id=uuid.UUID(parked.notice_id),
        cursor=encode_cursor(parked.delivery_seq),
        attempts=parked.attempts,
        last_error=parked.last_error,
        parked_at=parked.parked_at,
        replayed_at=parked.replayed_at,
    )


def filters_of(hook: Webhook) -> WebhookFilters:
    return WebhookFilters.model_validate_json(hook.filters)


async def create_webhook(
    session: AsyncSession, agency: str, spec: WebhookIn, allow_http: bool, allow_private: bool
) -> Webhook:
    """Registers the endpoint (caller commits); it starts after `spec.after`, or after the latest delivery."""
    url = str(spec.url)
    check_url(url, allow_http)
    await check_target(url, allow_private)
    count = select(func.count()).select_from(Webhook).where(Webhook.agency_id == agency, Webhook.active)
    if int((await session.execute(count)).scalar_one()) >= MAX_WEBHOOKS:
        raise DeliveryError(
            "too_many_webhooks", f"{agency} has {MAX_WEBHOOKS} webhooks already; delete one first"
        )
    if spec.after is not None:
        try:
            start = decode_cursor(spec.after)
        except DeliveryError as exc:
            raise DeliveryError("bad_cursor", f"after: {exc.detail}") from exc
    else:
        latest = select(func.max(Delivery.seq)).where(Delivery.recipient == agency)
        start = (await session.execute(latest)).scalar_one() or 0
    hook = Webhook(
        id=uuid.uuid4().hex,
        agency_id=agency,
        url=url,
        filters=spec.filters.model_dump_json(),
        cursor_seq=start,
        attempts=0,
        active=True,
        created_at=utcnow(),
    )
    session.add(hook)
    await session.flush()
    return hook


async def agency_webhooks(session: AsyncSession, agency: str) -> list[Webhook]:
    query = select(Webhook).where(Webhook.agency_id == agency, Webhook.active).order_by(Webhook.created_at)
    return list((await session.execute(query)).scalars())


async def own_webhook(session: AsyncSession, agency: str, webhook_id: str) -> Webhook | None:
    """The agency's own active webhook; another agency's is indistinguishable from a missing one."""
    hook = await session.get(Webhook, webhook_id)
    return hook if hook is not None and hook.active and hook.agency_id == agency else None


async def stop_webhook(session: AsyncSession, agency: str, webhook_id: str) -> bool:
    """Deactivates the agency's webhook (caller commits); its deliveries stay in the inbox. False if the
    agency has no such webhook."""
    hook = await own_webhook(session, agency, webhook_id)
    if hook is None:
        return False
    hook.active = False
    return True


async def agency_parked(session: AsyncSession, agency: str) -> list[WebhookParked]:
    query = (
        select(WebhookParked)
        .join(Webhook, Webhook.id == WebhookParked.webhook_id)
        .where(Webhook.agency_id == agency, Webhook.active)
        .order_by(WebhookParked.parked_at)
        .limit(1000)
    )
    return list((await session.execute(query)).scalars())


async def own_parked(
    session: AsyncSession, agency: str, parked_id: str
) -> tuple[WebhookParked, Webhook] | None:
    parked = await session.get(WebhookParked, parked_id)
    hook = await own_webhook(session, agency, parked.webhook_id) if parked is not None else None
    return (parked, hook) if parked is not None and hook is not None else None


async def claim(session: AsyncSession, webhook_id: str, owner: str, now: datetime, hold: timedelta) -> bool:
    """Takes or renews the webhook's lease (and commits): one dispatcher at a time drives a webhook."""
    result = await session.execute(
        update(Webhook)
        .where(Webhook.id == webhook_id, Webhook.active)
        .where(or_(Webhook.lease_owner.is_(None), Webhook.lease_owner == owner, Webhook.lease_until < now))
        .values(lease_owner=owner, lease_until=now + hold)
    )
    await session.commit()
    return cast(CursorResult[Any], result).rowcount == 1


async def release(session: AsyncSession, owner: str) -> None:
    """Gives up every lease `owner` holds (and commits), so another dispatcher need not wait them out."""
    await session.execute(
        update(Webhook).where(Webhook.lease_owner == owner).values(lease_owner=None, lease_until=None)
    )
    await session.commit()


async def head_of(session: AsyncSession, hook: Webhook) -> tuple[Delivery, NoticeRow] | None:
    """The next delivery the webhook owes, by the inbox's rules: filtered, expired and recalled-unfetched
    copies are passed over."""
    rows = await inbox(session, hook.agency_id, hook.cursor_seq, 1, filters_of(hook).inbox_filter())
    return rows[0] if rows else None


@dataclass(frozen=True)
class EscalationMark:
    """How far a webhook's escalation notices got: the (escalated_at, seq) of the last copy handled."""

    at: datetime
    seq: int = 0


async def next_escalation(
    session: AsyncSession, hook: Webhook, after: EscalationMark
) -> tuple[Delivery, NoticeRow] | None:
    """The first copy after `after`, in escalation order, that the webhook's filters admit and that still
    waits for the agency's acknowledgement (not recalled, not expired)."""
    only = filters_of(hook).inbox_filter()
    query = (
        select(Delivery, NoticeRow)
        .join(NoticeRow, NoticeRow.notice_id == Delivery.notice_id)
        .where(Delivery.recipient == hook.agency_id)
        .where(
            or_(
                Delivery.escalated_at > after.at,
                and_(Delivery.escalated_at == after.at, Delivery.seq > after.seq),
            )
        )
        .where(
            Delivery.state != "acknowledged", Delivery.recalled_at.is_(None), Delivery.expired_at.is_(None)
        )
        .where(or_(NoticeRow.expires_at.is_(None), NoticeRow.expires_at > utcnow()))
        .order_by(Delivery.escalated_at, Delivery.seq)
        .limit(1)
    )
    row = (await session.execute(only.narrow(query))).first()
    return (row[0], row[1]) if row is not None else None


def _event(kind: EventType, hook: Webhook, notice: NoticeRow, seq: int, actor: str, attempts: int) -> Event:
    return Event(
        # One fact per (webhook, delivery): a re-sent event is recorded once.
        event_id=fact_id(kind, hook.id, str(seq)),
        type=kind,
        occurred_at=utcnow(),
        actor=actor,
        agency=hook.agency_id,
        notice_id=uuid.UUID(notice.notice_id),
        case_ref=notice.case_ref,
        envelope_sha256=notice.envelope_sha256,
        details={"webhook_id": hook.id, "attempts": attempts},
    )


async def _taken(
    session: AsyncSession, publisher: EventPublisher, rows: Sequence[tuple[Delivery, NoticeRow]], source: str
) -> None:
    """The endpoint took the copy: it counts as fetched, audited before the state changes."""
    agency = rows[0][0].recipient
    for event in fetched_events(rows, agency):
        await publisher.publish(event, source)
    await mark_fetched(session, rows)


def _move_past(hook: Webhook, seq: int) -> None:
    hook.cursor_seq, hook.head_seq, hook.attempts = seq, None, 0
    hook.next_attempt_at, hook.last_error = None, None


async def record_delivered(
    session: AsyncSession,
    publisher: EventPublisher,
    hook: Webhook,
    head: tuple[Delivery, NoticeRow],
    source: str,
) -> None:
    """The endpoint answered 2xx (caller commits)."""
    await _taken(session, publisher, [head], source)
    _move_past(hook, head[0].seq)


async def record_failure(
    session: AsyncSession,
    publisher: EventPublisher,
    hook: Webhook,
    head: tuple[Delivery, NoticeRow],
    error: str,
    policy: RetryPolicy,
    source: str,
) -> WebhookParked | None:
    """Counts a failed attempt and schedules the next (caller commits); once the budget is spent the
    delivery is parked, audited, and the webhook moves on to the next one."""
    delivery, notice = head
    attempts = (hook.attempts if hook.head_seq == delivery.seq else 0) + 1
    now = utcnow()
    if attempts < policy.max_attempts:
        hook.head_seq, hook.attempts, hook.last_error = delivery.seq, attempts, error[:ERROR_CHARS]
        hook.next_attempt_at = now + timedelta(seconds=policy.delay_s(attempts))
        return None
    event = _event(EventType.webhook_parked, hook, notice, delivery.seq, source, attempts)
    await publisher.publish(event.model_copy(update={"details": {**event.details, "error": error}}), source)
    parked = WebhookParked(
        id=uuid.uuid4().hex,
        webhook_id=hook.id,
        delivery_seq=delivery.seq,
        notice_id=notice.notice_id,
        attempts=attempts,
        last_error=error[:ERROR_CHARS],
        parked_at=now,
    )
    session.add(parked)
    _move_past(hook, delivery.seq)
    return parked


async def replay(
    session: AsyncSession,
    publisher: EventPublisher,
    sender: WebhookSender,
    parked: WebhookParked,
    hook: Webhook,
    actor: str,
    source: str,
) -> WebhookParked:
    """POSTs a parked delivery again now; commits, and keeps the transaction closed while the endpoint
    answers. A failure leaves it parked with the new error."""
    if parked.replayed_at is not None:
        raise DeliveryError(
            "already_replayed",
            f"parked delivery {parked.id} was replayed at {parked.replayed_at.isoformat()}",
        )
    rows = await inbox(session, hook.agency_id, parked.delivery_seq - 1, 1)
    if not rows or rows[0][0].seq != parked.delivery_seq:
        raise DeliveryError(
            "no_longer_served", f"notice {parked.notice_id} is no longer served: it expired or was recalled"
        )
    await session.commit()
    error = await sender.deliver(hook.url, inbox_item(*rows[0]))
    if error is not None:
        parked.attempts, parked.last_error = parked.attempts + 1, error[:ERROR_CHARS]
        await session.commit()
        raise DeliveryError("webhook_endpoint_failed", f"the webhook endpoint did not take it: {error}")
    notice = rows[0][1]
    await publisher.publish(
        _event(EventType.webhook_replayed, hook, notice, parked.delivery_seq, actor, parked.attempts + 1),
        source,
    )
    await _taken(session, publisher, rows, source)
    parked.replayed_at = utcnow()
    await session.commit()
    return parked


class PinnedTransport(httpx.AsyncBaseTransport):
    """Resolves each request's host itself, refuses it if any address is not public (unless allowed), and
    connects to the address it checked: DNS changing between the check and the connection cannot send the
    POST elsewhere. The signed URL, the Host header and the TLS server name (SNI and certificate check)
    keep the host name. A custom transport also keeps httpx off environment proxies, which would connect
    on our behalf to whatever the name resolves to there."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._transport = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.raw_host.decode("ascii")  # an international name as DNS and TLS spell it
        try:
            addresses = await resolve(host)
        except (OSError, UnicodeError) as exc:
            raise httpx.ConnectError(f"{host} does not resolve: {exc}", request=request) from exc
        if not addresses:
            raise httpx.ConnectError(f"{host} has no address", request=request)
        if not self._allow_private:
            refuse_non_public(host, addresses)
        address = str(addresses[0])
        extensions = dict(request.extensions)
        if address != host:
            extensions["sni_hostname"] = host
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=address),
            headers=request.headers,  # Host still names the host, not the address
            stream=request.stream,
            extensions=extensions,
        )
        return await self._transport.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self._transport.aclose()


class WebhookSender:
    """POSTs inbox items signed by the directory key. One per webhook, so a slow endpoint ties up only its
    own connections; `timeout_s` bounds the whole exchange (look-up included), not each read."""

    def __init__(self, directory_key: SigningKey, timeout_s: float, allow_private: bool) -> None:
        # The event header is signed too: a relay cannot turn a reminder into a delivery or back.
        signer = RequestSigner(directory_key, also_cover=(EVENT_HEADER.lower(),))
        self._timeout_s = timeout_s
        # httpx logs each request's URL at INFO, and a webhook URL's query may hold the partner's secret.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._client = httpx.AsyncClient(
            auth=signer,
            timeout=timeout_s,
            headers={"User-Agent": "deskbridge-webhooks/1"},
            transport=PinnedTransport(allow_private),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.aclose()

    async def deliver(
        self, url: str, item: InboxItem, event: WebhookEvent = WebhookEvent.notice, trace: str | None = None
    ) -> str | None:
        """None once the endpoint answered 2xx; otherwise a coarse reason, fit for the agency to see (the
        cause is logged). Redirects are not followed. `trace`: the notice's traceparent, which the POST
        continues and carries to the endpoint (default: the current trace)."""
        with tracing.calling("POST", url, trace) as (call, trace_headers):
            answer = await self._post(url, item, event, trace_headers)
            if isinstance(answer, str):
                call.failed(answer)
                return answer
            call.answered(answer.status_code)
        return None if answer.is_success else f"HTTP {answer.status_code}"

    async def _post(
        self, url: str, item: InboxItem, event: WebhookEvent, trace_headers: dict[str, str]
    ) -> httpx.Response | str:
        """The endpoint's answer (its body unread), or why there is none."""
        body = item.model_dump_json().encode()
        host = urlsplit(url).hostname
        try:
            async with asyncio.timeout(self._timeout_s):
                request = self._client.build_request(
                    "POST",
                    url,
                    content=body,
                    headers={"Content-Type": "application/json", EVENT_HEADER: event, **trace_headers},
                )
                response = await self._client.send(request, stream=True)
                await response.aclose()  # the status is the answer; the body is not read
        except AddressRefused as exc:
            log.warning("webhook endpoint refused", host=host, address=str(exc.address), kind=exc.why)
            return NOT_PUBLIC
        except (TimeoutError, httpx.TimeoutException):
            return TIMED_OUT
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            log.info("webhook request failed", host=host, cause=f"{type(exc).__name__}: {exc}")
            return CONNECTION_FAILED
        return response


async def verify_webhook(
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    pinned: PublicKey,
    freshness_s: int = 300,
    skew_s: int = 30,
    now: datetime | None = None,
) -> VerifiedRequest:
    """For a receiver: checks that deskbridge's directory key (the one pinned) signed this request for this
    URL and body, within the freshness window; raises httpsig.SignatureError otherwise. To refuse a replayed
    request, keep the returned nonce (or the notice_id) for the freshness window."""

    async def lookup(kid: str, _: datetime) -> PublicKey:
        if kid != pinned.kid:
            raise EnvelopeError("unknown_key", f"key {kid} is not the pinned directory key {pinned.kid}")
        return pinned

    policy = SignaturePolicy(covered=(*COVERED, EVENT_HEADER.lower()), freshness_s=freshness_s, skew_s=skew_s)
    return await verify_request(method, url, headers, body, lookup, policy, now or utcnow())
