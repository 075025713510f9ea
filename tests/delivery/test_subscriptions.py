"""Subscribing to an inbox over real HTTP against real Kafka and PostgreSQL: long-poll, Server-Sent
Events with resume, filters, signed receipts, replies, per-case order, SLA escalation, limits."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from joserfc import jws
from joserfc.jws import JWSRegistry
from jwcrypto import jwk as jwc_jwk
from jwcrypto import jws as jwc_jws
from sqlalchemy import func, select

from services.delivery.models import Delivery
from services.delivery.service import encode_cursor
from services.envelope.keys import AgencyKeys, public_jwk
from services.envelope.receipts import RECEIPT_TYP, make_receipt
from tests.conftest import Stack, eventually, receipt
from tests.support.sealing import notice_body, seal

DESK, KH, INTERPOL, ASEANAPOL = "kr-desk", "kh-cnp", "interpol-ncb-phnom-penh", "aseanapol"


async def _send(stack: Stack, recipients: list[str], **overrides: Any) -> str:
    response = await stack.client(DESK).post("/v1/notices", json=notice_body(recipients, **overrides))
    assert response.status_code == 202, response.text
    return str(response.json()["notice_id"])


async def _states(stack: Stack, notice_id: str) -> dict[str, str]:
    body = (await stack.client(DESK).get(f"/v1/notices/{notice_id}")).json()
    return {r["agency"]: r["state"] for r in body["recipients"]}


async def test_a_long_poll_wakes_when_a_notice_arrives(stack: Stack) -> None:
    kh = stack.client(KH)
    started = time.monotonic()
    empty = await kh.get("/v1/inbox", params={"wait": 1})
    assert empty.status_code == 200 and empty.json()["items"] == []
    assert time.monotonic() - started >= 0.9  # it did wait

    waiting = asyncio.create_task(kh.get("/v1/inbox", params={"wait": 30}))
    await asyncio.sleep(1)
    assert not waiting.done()
    sent_at = time.monotonic()
    notice_id = await _send(stack, [KH], priority="flash")
    page = (await waiting).json()
    assert [i["notice_id"] for i in page["items"]] == [notice_id]
    # Woken by the delivery, not by the 30 s deadline.
    assert time.monotonic() - sent_at < 15


@pytest.mark.settings(inbox_recheck_s=30)
async def test_the_wake_up_comes_from_the_delivery_not_from_rechecking(stack: Stack) -> None:
    """With rechecks 30 s apart, only the gateway's delivery follower can answer the poll in time."""
    kh = stack.client(KH)
    await asyncio.sleep(2)  # the follower is reading the deliveries topic from its end
    waiting = asyncio.create_task(kh.get("/v1/inbox", params={"wait": 45}))
    await asyncio.sleep(1)
    sent_at = time.monotonic()
    notice_id = await _send(stack, [KH], priority="flash")
    page = (await waiting).json()
    assert [i["notice_id"] for i in page["items"]] == [notice_id]
    assert time.monotonic() - sent_at < 10


def _sse_events(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if ":" in line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if "event" in fields:
            events.append(fields)
    return events


async def _read_sse(
    stack: Stack,
    agency: str,
    count: int,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> list[dict[str, str]]:
    """Reads `count` events from the stream, then drops the connection (as a flaky network would)."""
    client = stack.client(agency)
    buffer = ""
    async with asyncio.timeout(60):
        async with client.stream(
            "GET", "/v1/inbox/stream", headers=headers or {}, params=params or {}
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for chunk in stream.aiter_text():
                buffer += chunk
                if len([e for e in _sse_events(buffer) if e["event"] == "notice"]) >= count:
                    break
    return [e for e in _sse_events(buffer) if e["event"] == "notice"][:count]


async def test_sse_pushes_notices_and_resumes_after_a_dropped_connection(stack: Stack) -> None:
    ids = [await _send(stack, [KH], summary=f"notice {n}") for n in range(3)]
    first = await _read_sse(stack, KH, 2)
    assert [json.loads(e["data"])["notice_id"] for e in first] == ids[:2]

    later = [await _send(stack, [KH], summary=f"notice {n}") for n in range(3, 5)]
    # Resume from the last event seen: no gap, no repeat.
    resumed = await _read_sse(stack, KH, 3, headers={"Last-Event-ID": first[-1]["id"]})
    assert [json.loads(e["data"])["notice_id"] for e in resumed] == [ids[2], *later]
    ids_seen = [e["id"] for e in first + resumed]
    assert len(set(ids_seen)) == len(ids_seen)

    # A live subscriber gets a notice sent while it waits.
    reader = asyncio.create_task(_read_sse(stack, KH, 1, headers={"Last-Event-ID": resumed[-1]["id"]}))
    await asyncio.sleep(1)
    live = await _send(stack, [KH], priority="flash")
    [pushed] = await reader
    assert json.loads(pushed["data"])["notice_id"] == live


async def test_filters_narrow_pull_and_stream(stack: Stack) -> None:
    routine = await _send(stack, [KH], priority="routine", case_ref="KD-2025-0001")
    flash = await _send(stack, [KH], priority="flash", case_ref="KD-2025-0002")
    intel = await _send(stack, [KH], priority="routine", type="intel_report", case_ref="KD-2025-0002")
    kh = stack.client(KH)

    async def delivered() -> bool:
        return set((await _states(stack, intel)).values()) == {"delivered"}

    await eventually(delivered)
    await eventually(lambda: _all_delivered(stack, [routine, flash]))
    only_flash = (await kh.get("/v1/inbox", params={"priority": "flash"})).json()["items"]
    assert [i["notice_id"] for i in only_flash] == [flash]
    streamed = await _read_sse(stack, KH, 1, params={"type": "intel_report"})
    assert json.loads(streamed[0]["data"])["notice_id"] == intel
    by_case = (await kh.get("/v1/inbox", params={"case_ref": "KD-2025-0001"})).json()["items"]
    assert [i["notice_id"] for i in by_case] == [routine]


async def _all_delivered(stack: Stack, ids: list[str]) -> bool:
    for notice_id in ids:
        if set((await _states(stack, notice_id)).values()) != {"delivered"}:
            return False
    return True


async def test_acknowledging_takes_a_receipt_signed_by_the_recipient(stack: Stack) -> None:
    notice_id = await _send(stack, [KH, INTERPOL])
    kh = stack.client(KH)
    [item] = await eventually(lambda: _items(stack, KH))
    digest = hashlib.sha256(item["envelope"].encode()).hexdigest()
    interpol_keys = AgencyKeys.load(stack.home / INTERPOL)
    kh_keys = AgencyKeys.load(stack.home / KH)
    bad = [
        ({}, 422, "receipt"),
        ({"receipt": "not a jws"}, 422, "bad_receipt"),
        ({"receipt": make_receipt(interpol_keys.signer(), notice_id, digest)}, 422, "bad_receipt"),
        ({"receipt": make_receipt(kh_keys.signer(), notice_id, "0" * 64)}, 422, "bad_receipt"),
        ({"receipt": make_receipt(kh_keys.signer(), str(uuid.uuid4()), digest)}, 422, "bad_receipt"),
        (
            {"receipt": make_receipt(kh_keys.signer(), notice_id, digest, datetime(2020, 1, 1, tzinfo=UTC))},
            422,
            "stale",
        ),
    ]
    for body, status, reason in bad:
        response = await kh.post(f"/v1/inbox/{notice_id}/ack", json=body)
        assert response.status_code == status and reason in response.text, (body, response.text)
    assert (await _states(stack, notice_id))[KH] == "fetched"

    good = make_receipt(kh_keys.signer(), notice_id, digest)
    ack = await kh.post(f"/v1/inbox/{notice_id}/ack", json={"receipt": good})
    assert ack.status_code == 200 and ack.json()["receipt"] == good
    status = (await stack.client(DESK).get(f"/v1/notices/{notice_id}")).json()
    stored = next(r for r in status["recipients"] if r["agency"] == KH)["receipt"]
    # The desk can prove receipt with the independent JOSE library and kh-cnp's public key alone.
    checker = jwc_jws.JWS()
    checker.deserialize(stored)
    checker.verify(jwc_jwk.JWK(**public_jwk(kh_keys.signing, use="sig", alg="Ed25519")), alg="Ed25519")
    claims = json.loads(checker.payload)
    assert (claims["notice_id"], claims["envelope_sha256"], claims["agency"]) == (notice_id, digest, KH)


def _receipt_at(keys: AgencyKeys, notice_id: str, digest: str, iat: int) -> str:
    """A receipt signed by the agency's real key with any iat, even one no clock can hold."""
    payload = {"notice_id": notice_id, "envelope_sha256": digest, "agency": keys.agency, "iat": iat}
    signer = keys.signer()
    return jws.serialize_compact(
        {"alg": "Ed25519", "kid": signer.kid, "typ": RECEIPT_TYP},
        json.dumps(payload).encode(),
        signer.key,
        registry=JWSRegistry(algorithms=["Ed25519"]),
    )


async def test_a_receipt_whose_iat_is_no_time_is_refused_and_changes_nothing(stack: Stack) -> None:
    notice_id = await _send(stack, [KH])
    [item] = await eventually(lambda: _items(stack, KH))
    digest = hashlib.sha256(item["envelope"].encode()).hexdigest()
    kh_keys = AgencyKeys.load(stack.home / KH)
    kh = stack.client(KH)
    # Beyond what datetime holds (OverflowError, ValueError), and beyond the platform's time_t (OSError,
    # which must not pass for the database being out of reach).
    for iat in (10**30, -(10**30), 2**62, 2**40, -(2**40), -1):
        response = await kh.post(
            f"/v1/inbox/{notice_id}/ack", json={"receipt": _receipt_at(kh_keys, notice_id, digest, iat)}
        )
        assert response.status_code == 422, (iat, response.text)
        assert response.json()["code"] == "bad_receipt", (iat, response.text)
        assert "retry-after" not in response.headers
    assert (await _states(stack, notice_id))[KH] == "fetched"
    good = _receipt_at(kh_keys, notice_id, digest, int(time.time()))
    assert (await kh.post(f"/v1/inbox/{notice_id}/ack", json={"receipt": good})).status_code == 200


async def test_cursors_beyond_a_bigint_or_below_zero_are_refused_on_every_way_in(stack: Stack) -> None:
    kh = stack.client(KH)
    for place in (2**64, 2**63, -1):
        cursor = encode_cursor(place)
        page = await kh.get("/v1/inbox", params={"after": cursor})
        assert page.status_code == 400 and page.json()["code"] == "bad_cursor", (place, page.text)
        # The stream refuses before it answers 200, so a client sees why instead of a dropped connection.
        for way_in in ({"headers": {"Last-Event-ID": cursor}}, {"params": {"after": cursor}}):
            async with asyncio.timeout(30):
                async with kh.stream("GET", "/v1/inbox/stream", **way_in) as stream:  # type: ignore[arg-type]
                    assert stream.status_code == 400, (place, way_in)
                    assert stream.headers["content-type"] == "application/problem+json"
                    assert json.loads(await stream.aread())["code"] == "bad_cursor"
        hook = await kh.post("/v1/webhooks", json={"url": "https://partner.example/hook", "after": cursor})
        assert hook.status_code == 400 and hook.json()["code"] == "bad_cursor", (place, hook.text)
    assert (await kh.get("/v1/webhooks")).json() == []
    # A cursor this server issued still works.
    assert (await kh.get("/v1/inbox", params={"after": encode_cursor(0)})).status_code == 200


async def _items(stack: Stack, agency: str, **params: Any) -> list[dict[str, Any]]:
    return list((await stack.client(agency).get("/v1/inbox", params=params)).json()["items"])


async def test_a_reply_marks_the_original_replied_for_its_author(stack: Stack) -> None:
    original = await _send(stack, [KH, INTERPOL])
    await eventually(lambda: _items(stack, KH))
    _, envelope = seal(stack, AgencyKeys.load(stack.home / KH), [DESK], type="reply", in_reply_to=original)
    posted = await stack.client(KH).post(
        "/v1/envelopes", content=envelope, headers={"Content-Type": "application/json"}
    )
    assert posted.status_code == 202, posted.text

    async def replied() -> dict[str, str]:
        states = await _states(stack, original)
        return states if states[KH] == "replied" else {}

    assert (await eventually(replied))[INTERPOL] == "delivered"


async def test_each_case_reaches_each_recipient_in_the_order_sent(stack: Stack) -> None:
    cases = [f"KD-2025-{n:04d}" for n in range(100, 106)]

    async def send_case(case_ref: str) -> list[str]:
        return [
            await _send(stack, [KH, INTERPOL], case_ref=case_ref, summary=f"{case_ref} #{i}")
            for i in range(6)
        ]

    sent = dict(zip(cases, await asyncio.gather(*(send_case(c) for c in cases)), strict=True))
    total = sum(len(v) for v in sent.values())
    for agency in (KH, INTERPOL):
        items = await eventually(lambda a=agency: _all_items(stack, a, total))  # type: ignore[misc]
        for case_ref, ids in sent.items():
            assert [i["notice_id"] for i in items if i["case_ref"] == case_ref] == ids, (agency, case_ref)


async def _all_items(stack: Stack, agency: str, total: int) -> list[dict[str, Any]]:
    async with stack.sessions() as session:
        query = select(func.count()).select_from(Delivery).where(Delivery.recipient == agency)
        if (await session.execute(query)).scalar_one() < total:
            return []
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = (
            await stack.client(agency).get("/v1/inbox", params={"after": cursor} if cursor else {})
        ).json()
        if not page["items"]:
            return items
        items += page["items"]
        cursor = page["next_cursor"]


@pytest.mark.settings(sla_flash_s=2, sla_immediate_s=3600)
async def test_an_unacknowledged_flash_notice_escalates(stack: Stack) -> None:
    reader = asyncio.create_task(_escalation_from_stream(stack, INTERPOL))
    overdue = await _send(stack, [INTERPOL, KH], priority="flash")
    calm = await _send(stack, [INTERPOL], priority="immediate")
    # kh-cnp acknowledges in time; interpol does not.
    [item] = await eventually(lambda: _items(stack, KH))
    ack = await stack.client(KH).post(f"/v1/inbox/{overdue}/ack", json=await receipt(stack, KH, overdue))
    assert ack.status_code == 200, ack.text

    async def alerts() -> list[dict[str, Any]]:
        response = await stack.client(DESK).get("/v1/alerts")
        assert response.status_code == 200, response.text
        return list(response.json())

    [alert] = await eventually(alerts, within=30)
    assert (alert["kind"], alert["agency"], alert["notice_id"]) == ("sla_escalation", INTERPOL, overdue)
    assert calm not in {a["notice_id"] for a in await alerts()}
    status = (await stack.client(DESK).get(f"/v1/notices/{overdue}")).json()
    escalated = {r["agency"]: r["escalated_at"] for r in status["recipients"]}
    assert escalated[INTERPOL] is not None and escalated[KH] is None
    # The recipient's subscriber is re-notified, and the escalation is audited.
    reminder = await reader
    assert reminder["notice_id"] == overdue
    auditor = stack.client("auditor", audit=True)

    async def audited() -> list[dict[str, Any]]:
        page = (await auditor.get("/v1/audit/events", params={"type": "notice.escalated"})).json()
        return list(page["entries"])

    [entry] = await eventually(audited)
    assert entry["agency"] == INTERPOL and entry["notice_id"] == overdue
    assert (await stack.client(KH).get("/v1/alerts")).status_code == 403


async def _escalation_from_stream(stack: Stack, agency: str) -> dict[str, Any]:
    buffer = ""
    async with asyncio.timeout(60):
        async with stack.client(agency).stream("GET", "/v1/inbox/stream") as stream:
            async for chunk in stream.aiter_text():
                buffer += chunk
                found = [e for e in _sse_events(buffer) if e["event"] == "escalation"]
                if found:
                    return dict(json.loads(found[0]["data"]))
    raise AssertionError("no escalation event")


@pytest.mark.settings(rate_limit_per_s=1, rate_limit_burst=3, inbox_max_pending=4)
async def test_rate_and_inbox_limits_answer_429_with_retry_after(stack: Stack) -> None:
    answers = [
        (await stack.client(DESK).post("/v1/notices", json=notice_body([KH]))).status_code for _ in range(5)
    ]
    assert answers[:3] == [202, 202, 202] and 429 in answers[3:]
    limited = await stack.client(DESK).post("/v1/notices", json=notice_body([KH]))
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    # Other agencies are not slowed by the desk's burst.
    assert (await _post_partner(stack, KH, [INTERPOL])).status_code == 202

    # kh-cnp's inbox fills to its cap of 4 unacknowledged notices: the next one to it is refused.
    await asyncio.sleep(2.5)
    accepted = sum(1 for a in answers if a == 202)
    for _ in range(4 - accepted):
        await asyncio.sleep(1.1)
        assert (await stack.client(DESK).post("/v1/notices", json=notice_body([KH]))).status_code == 202

    async def full() -> bool:
        return await _pending(stack, KH) >= 4

    await eventually(full)
    await asyncio.sleep(1.1)
    refused = await stack.client(DESK).post("/v1/notices", json=notice_body([KH]))
    assert refused.status_code == 429 and "inbox of kh-cnp" in refused.json()["detail"]
    assert refused.headers["Retry-After"] == "60"


async def _pending(stack: Stack, agency: str) -> int:
    async with stack.sessions() as session:
        query = select(func.count()).select_from(Delivery).where(Delivery.recipient == agency)
        return int((await session.execute(query)).scalar_one())


async def _post_partner(stack: Stack, sender: str, recipients: list[str]) -> httpx.Response:
    _, envelope = seal(stack, AgencyKeys.load(stack.home / sender), recipients)
    return await stack.client(sender).post(
        "/v1/envelopes", content=envelope, headers={"Content-Type": "application/json"}
    )


@pytest.mark.settings(inbox_page_bytes=4000)
async def test_a_page_stops_at_its_byte_budget_and_the_rest_follows(stack: Stack) -> None:
    """Envelopes of a few KB each against a 4,000-byte budget: one per page, none lost or skipped, and
    only what a page handed out is marked fetched."""
    sent = [await _send(stack, [KH], case_ref="KD-2025-0007") for _ in range(3)]
    await eventually(lambda: _all_delivered(stack, sent))
    kh = stack.client(KH)
    first = (await kh.get("/v1/inbox", params={"limit": 100})).json()
    assert [i["notice_id"] for i in first["items"]] == sent[:1]
    assert (await _states(stack, sent[1])) == {KH: "delivered"}  # not handed out, not fetched
    pages, after = [first["items"]], first["next_cursor"]
    while True:
        page = (await kh.get("/v1/inbox", params={"after": after, "limit": 100})).json()
        if not page["items"]:
            break
        pages.append(page["items"])
        after = page["next_cursor"]
    assert [len(p) for p in pages] == [1, 1, 1]
    assert [i["notice_id"] for p in pages for i in p] == sent
    streamed = await _read_sse(stack, KH, 3)
    assert [json.loads(e["data"])["notice_id"] for e in streamed] == sent
