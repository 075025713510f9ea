"""The notice journey and the gateway's answers to bad input, over real HTTP, Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from devstack.kafka import KafkaBroker, free_port
from schemas.notices import Attachment, Notice
from services.delivery.models import Delivery, NoticeRow
from services.envelope.keys import AgencyKeys
from services.envelope.service import MAX_ENVELOPE_BYTES, open_envelope, parse_envelope, seal_notice
from services.gateway.app import create_app
from services.ingest.main import run as run_ingest
from services.notices.models import Submission
from services.platform.database import make_engine, make_sessionmaker, upgrade
from services.platform.kafka import EventPublisher, KafkaAccess, Topics, create_topics
from services.platform.settings import Settings
from tests.conftest import (
    ServiceTasks,
    Stack,
    as_service,
    enrol_demo,
    eventually,
    receipt,
    records_on,
    stack_settings,
)
from tests.support.fixtures import REPO_ROOT
from tests.support.postgres import PostgresCluster
from tests.support.sealing import (
    LARGEST_ATTACHMENT,
    attachment,
    encryption_keys_of,
    largest_fitting,
    notice_body,
    seal,
)

PARTNERS = ["kh-cnp", "interpol-ncb-phnom-penh"]


async def _send(stack: Stack, **overrides: Any) -> str:
    desk = stack.client("kr-desk")
    response = await desk.post("/v1/notices", json=notice_body(PARTNERS, **overrides))
    assert response.status_code == 202, response.text
    return str(response.json()["notice_id"])


async def _status(stack: Stack, notice_id: str) -> dict[str, str]:
    response = await stack.client("kr-desk").get(f"/v1/notices/{notice_id}")
    assert response.status_code == 200, response.text
    return {r["agency"]: r["state"] for r in response.json()["recipients"]}


async def _count(stack: Stack, model: Any) -> int:
    async with stack.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_notice_journey_from_desk_to_partner_and_back(stack: Stack) -> None:
    notice_id = await _send(stack)
    # 202 means durable in Kafka: the submission carries the record's coordinates.
    async with stack.sessions() as session:
        submission = await session.get(Submission, notice_id)
        assert submission is not None and submission.kafka_offset >= 0

    delivered = await eventually(lambda: _all_in(stack, notice_id, "delivered"), within=30)
    assert delivered

    partner = stack.client("kh-cnp")
    page = (await partner.get("/v1/inbox")).json()
    [item] = page["items"]
    assert item["notice_id"] == notice_id and item["sender"] == "kr-desk"
    keys = AgencyKeys.load(stack.home / "kh-cnp")
    desk_public = {k.kid: k for k in AgencyKeys.load(stack.home / "kr-desk").public_keys()}
    notice = open_envelope(parse_envelope(item["envelope"]), keys.decryption_keys(), desk_public.__getitem__)
    assert notice.sender == "kr-desk" and str(notice.notice_id) == notice_id
    assert notice.subjects[0].name_hangul == "김민준"

    assert (await _status(stack, notice_id))["kh-cnp"] == "fetched"
    ack = await partner.post(f"/v1/inbox/{notice_id}/ack", json=await receipt(stack, "kh-cnp", notice_id))
    assert ack.status_code == 200 and ack.json()["state"] == "acknowledged"
    again = await partner.post(f"/v1/inbox/{notice_id}/ack", json=await receipt(stack, "kh-cnp", notice_id))
    assert again.status_code == 200 and again.json()["acknowledged_at"] == ack.json()["acknowledged_at"]
    assert await _status(stack, notice_id) == {
        "kh-cnp": "acknowledged",
        "interpol-ncb-phnom-penh": "delivered",
    }

    # The cursor moves past what was read; nothing is served twice on the next page.
    later = (await partner.get("/v1/inbox", params={"after": page["next_cursor"]})).json()
    assert later["items"] == []


async def test_the_largest_notices_travel_end_to_end(stack: Stack) -> None:
    """docs/envelope.md 4.4: notices with the largest attachment and a second one grown until the envelope
    is as near the 2 MiB cap as it goes. The desk's draft fits the body limit; the envelope the gateway
    seals from it, and the one a partner seals itself, fit Kafka's record limit; the recipients open both."""
    largest = attachment(LARGEST_ATTACHMENT)
    desk, partner = (AgencyKeys.load(stack.home / agency) for agency in ("kr-desk", "kh-cnp"))
    sent_at = datetime.now(UTC)

    def fullest(sender: AgencyKeys, recipients: list[str], size: int) -> tuple[str, bytes]:
        return seal(stack, sender, recipients, sent_at, attachments=[largest, attachment(size)])

    # The gateway seals the draft as the desk, just as this does (its sent_at is as long as ours).
    draft = notice_body(
        PARTNERS, attachments=[largest, attachment(largest_fitting(lambda n: fullest(desk, PARTNERS, n)[1]))]
    )
    assert len(json.dumps(draft).encode()) < stack.settings.max_body_bytes
    from_desk = await stack.client("kr-desk").post("/v1/notices", json=draft)
    assert from_desk.status_code == 202, from_desk.text

    partner_notice_id, envelope = fullest(
        partner, ["kr-desk"], largest_fitting(lambda n: fullest(partner, ["kr-desk"], n)[1])
    )
    assert len(envelope) > MAX_ENVELOPE_BYTES - 16
    from_partner = await stack.client("kh-cnp").post(
        "/v1/envelopes", content=envelope, headers={"Content-Type": "application/json"}
    )
    assert from_partner.status_code == 202, from_partner.text

    sent, sent_size = await _opened(stack, "kh-cnp", draft["notice_id"])
    assert sent.sender == "kr-desk" and sent.attachments == [Attachment(**a) for a in draft["attachments"]]
    assert sent_size > MAX_ENVELOPE_BYTES - 64  # a sent_at on a whole second is written 7 characters shorter
    received, received_size = await _opened(stack, "kr-desk", partner_notice_id)
    assert received.sender == "kh-cnp" and received.attachments[0] == Attachment(**largest)
    assert received_size == len(envelope)


async def _opened(stack: Stack, reader: str, notice_id: str) -> tuple[Notice, int]:
    """The notice as `reader` opens it from its inbox once delivered, and the size of its envelope."""

    async def delivered() -> dict[str, Any] | None:
        items = (await stack.client(reader).get("/v1/inbox")).json()["items"]
        return next((i for i in items if i["notice_id"] == notice_id), None)

    item = await eventually(delivered, within=60, every=0.5)
    envelope = parse_envelope(item["envelope"])
    directory = {k.kid: k for k in AgencyKeys.load(stack.home / envelope.routing.sender).public_keys()}
    keys = AgencyKeys.load(stack.home / reader)
    return open_envelope(envelope, keys.decryption_keys(), directory.__getitem__), len(envelope.raw)


async def _all_in(stack: Stack, notice_id: str, state: str) -> bool:
    states = await _status(stack, notice_id)
    return set(states.values()) == {state}


async def test_agencies_see_only_their_own(stack: Stack) -> None:
    notice_id = await _send(stack)
    await eventually(lambda: _all_in(stack, notice_id, "delivered"))
    outsider = stack.client("aseanapol")
    assert (await outsider.get("/v1/inbox")).json()["items"] == []
    for request in (
        outsider.get(f"/v1/notices/{notice_id}"),
        outsider.post(f"/v1/inbox/{notice_id}/ack", json=await receipt(stack, "aseanapol", notice_id)),
    ):
        response = await request
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
    # A recipient may not read the sender's delivery status either.
    assert (await stack.client("kh-cnp").get(f"/v1/notices/{notice_id}")).status_code == 404
    # The outsider's failed ack changed nothing.
    assert (await _status(stack, notice_id))["kh-cnp"] == "delivered"


async def test_credentials_are_checked_on_every_route(stack: Stack) -> None:
    anonymous = stack.client(None)
    forged = httpx.AsyncClient(base_url=stack.gateway_url, headers={"Authorization": "Bearer dbk_x_y"})
    partner = stack.client("kh-cnp")
    try:
        for client, status in ((anonymous, 401), (forged, 401)):
            for method, path in (
                ("GET", "/v1/inbox"),
                ("POST", "/v1/notices"),
                ("GET", f"/v1/notices/{uuid.uuid4()}"),
                ("GET", "/v1/directory/agencies"),
                ("POST", "/v1/admin/agencies"),
            ):
                response = await client.request(method, path, json={})
                assert response.status_code == status, (method, path, response.text)
        # Partners cannot have the gateway seal in the desk's name, nor administer the directory.
        assert (await partner.post("/v1/notices", json=notice_body(["aseanapol"]))).status_code == 403
        assert (await partner.post("/v1/admin/agencies", json={"id": "x", "name": "x"})).status_code == 403
        # An auditor credential does not open an inbox.
        assert (await stack.client("auditor").get("/v1/inbox")).status_code == 403
    finally:
        await forged.aclose()
    assert await _count(stack, Submission) == 0


async def test_bad_notices_get_clear_4xx_and_store_nothing(stack: Stack) -> None:
    desk = stack.client("kr-desk")
    cases: list[tuple[Any, int, str]] = [
        (b'{"notice_id": ', 400, "not valid JSON"),
        (notice_body(PARTNERS, priority=7), 422, "priority"),
        (notice_body(PARTNERS, notice_id="not-a-uuid"), 422, "notice_id"),
        (notice_body(["no-such-agency"]), 422, "unknown recipient agency: no-such-agency"),
        (notice_body([]), 422, "recipients"),
        (notice_body(["kh-cnp", "kh-cnp"]), 422, "must not repeat"),
        (notice_body(["kr-desk"]), 422, "itself"),
        (notice_body(PARTNERS, case_ref="no spaces allowed"), 422, "case_ref"),
        (notice_body(PARTNERS, surprise="field"), 422, "surprise"),
        (notice_body(PARTNERS, type="reply"), 422, "in_reply_to"),
        (notice_body(PARTNERS, expires_at="2030-01-01T00:00:00"), 422, "timezone"),
    ]
    for body, status, reason in cases:
        if isinstance(body, bytes):
            response = await desk.post(
                "/v1/notices", content=body, headers={"content-type": "application/json"}
            )
        else:
            response = await desk.post("/v1/notices", json=body)
        assert response.status_code == status, (body, response.text)
        assert reason in response.json()["detail"], response.json()
    oversize = notice_body(PARTNERS, details="x" * (stack.settings.max_body_bytes + 1))
    response = await desk.post("/v1/notices", json=oversize)
    assert response.status_code == 413 and "exceeds" in response.json()["detail"]
    assert await _count(stack, Submission) == 0
    # Still serving after all of that.
    await _send(stack)


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


async def test_bodies_streamed_past_the_limit_in_chunks_get_413_and_store_nothing(stack: Stack) -> None:
    """No Content-Length to refuse up front: the body is counted as it arrives, on a JSON route and on the
    envelope route (whose limit is larger)."""
    for path, caller, limit in (
        ("/v1/notices", "kr-desk", stack.settings.max_body_bytes),
        ("/v1/envelopes", "kh-cnp", 4 * 1024 * 1024),
    ):
        response = await stack.client(caller).post(
            path, content=_chunks(limit + 1024 * 1024), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert response.status_code == 413, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "too_large" and "exceeds" in response.json()["detail"]
    assert await _count(stack, Submission) == 0
    # Under the limit, a streamed body is read whole as usual.
    body = notice_body(PARTNERS)
    raw = json.dumps(body).encode()

    async def whole() -> AsyncIterator[bytes]:
        yield raw[:100]
        yield raw[100:]

    response = await stack.client("kr-desk").post(
        "/v1/notices", content=whole(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 202, response.text


async def test_a_replayed_notice_id_is_refused(stack: Stack) -> None:
    body = notice_body(PARTNERS)
    desk = stack.client("kr-desk")
    assert (await desk.post("/v1/notices", json=body)).status_code == 202
    replay = await desk.post("/v1/notices", json={**body, "summary": "a different story"})
    assert replay.status_code == 409 and "already used" in replay.json()["detail"]
    await eventually(lambda: _all_in(stack, body["notice_id"], "delivered"))
    assert await _count(stack, NoticeRow) == 1
    assert await _count(stack, Delivery) == 2


async def test_kafka_down_answers_503_never_202(stack: Stack) -> None:
    """A gateway whose broker is unreachable refuses with 503 and Retry-After, and records nothing."""
    dead_port = free_port()
    settings = Settings(
        **{
            **stack.settings.model_dump(),
            "kafka_bootstrap": f"127.0.0.1:{dead_port}",
            "kafka_send_timeout_s": 2,
        }
    )
    services = ServiceTasks()
    url = await services.serve(create_app(settings), free_port())
    try:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {stack.token('kr-desk')}"}, timeout=30
        ) as desk:
            response = await desk.post("/v1/notices", json=notice_body(PARTNERS))
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"].isdigit()
            assert "nothing was done" in response.json()["detail"]
    finally:
        await services.close()
    assert await _count(stack, Submission) == 0


async def test_the_database_killed_under_gateway_and_ingest_is_an_outage_at_both_ends(
    kafka_broker: KafkaBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """A lost PostgreSQL raises a broken connection first, then refused ones: the gateway answers 503 with
    Retry-After and does nothing, ingest holds its batch and retries it; nothing is dead-lettered, and all
    goes through once the database is back. (On a cluster of its own: the session's is not killed.)"""
    database = PostgresCluster()
    await asyncio.to_thread(database.start)
    services = ServiceTasks()
    engine = None
    down: Stack | None = None
    try:
        url = database.create_database("deskbridge")
        await asyncio.to_thread(upgrade, url)
        home = tmp_path / "demo"
        settings = stack_settings(kafka_broker, url, topic_prefix, home)
        topics = Topics(topic_prefix)
        kafka = KafkaAccess.of(settings)
        await create_topics(kafka, topics, settings.topic_partitions)
        publisher = EventPublisher(kafka, "tests", topics, 10)
        await enrol_demo(settings, home, publisher)
        gateway = await services.serve(create_app(as_service(settings, kafka_broker, "gateway")), free_port())
        services.run(run_ingest(as_service(settings, kafka_broker, "ingest"), services.stop))
        engine = make_engine(url)
        down = Stack(settings, kafka, home, gateway, "", make_sessionmaker(engine), publisher, topics)
        desk = down.client("kr-desk")
        assert (await desk.post("/v1/notices", json=notice_body(PARTNERS))).status_code == 202

        await asyncio.to_thread(database.kill)
        for _ in range(2):  # the pool's broken connection, then a refused one
            response = await desk.post("/v1/notices", json=notice_body(PARTNERS))
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "database_unavailable"
            assert response.headers["retry-after"].isdigit()
        kh = AgencyKeys.load(home / "kh-cnp")
        notice = Notice(**notice_body(["kr-desk"]), sender="kh-cnp", sent_at=datetime.now(UTC))
        envelope = seal_notice(notice, kh.signer(), encryption_keys_of(down, ["kr-desk"]))
        await publisher.send(topics.notices, notice.case_ref, envelope, [])
        await asyncio.sleep(3)  # ingest meets the outage and retries
        await asyncio.to_thread(database.start)

        await eventually(lambda: _accepted(desk, notice_body(PARTNERS)), within=60, every=1.0)
        await eventually(lambda: _rows(down, 5), within=60)  # 2 + 2 notices to the partners, 1 to the desk
        assert await records_on(down, topics.dead_letters) == 0
    finally:
        if down is not None:
            for client in down._clients:
                await client.aclose()
            await down.publisher.close()
        await services.close()
        if engine is not None:
            await engine.dispose()
        await asyncio.to_thread(database.stop)


async def _rows(stack: Stack, expected: int) -> bool:
    return await _count(stack, Delivery) == expected


async def test_directory_lists_agencies_and_public_keys_only(stack: Stack) -> None:
    partner = stack.client("kh-cnp")
    agencies = {a["id"]: a["kind"] for a in (await partner.get("/v1/directory/agencies")).json()}
    assert agencies["kr-desk"] == "desk" and agencies["kh-cnp"] == "partner"
    jwks = (await partner.get("/v1/directory/agencies/kr-desk/jwks")).json()["keys"]
    assert {k["use"] for k in jwks} == {"sig", "enc"}
    assert all("d" not in k and k["status"] == "active" for k in jwks)
    own = {k["kid"] for k in AgencyKeys.load(stack.home / "kr-desk").public_jwks()}
    assert {k["kid"] for k in jwks} == own
    missing = await partner.get("/v1/directory/agencies/nobody/jwks")
    assert missing.status_code == 404


async def test_broker_killed_under_a_running_gateway_gives_503_then_recovers(
    stack: Stack, tmp_path: Path
) -> None:
    """The broker dies after the gateway has been using it: no 202 while it is down, 202 once it is back.
    (A broker of its own, open plaintext: only the session's checks identities.)"""
    broker = KafkaBroker(
        jar_dir=REPO_ROOT / "deploy" / "kafka" / "target" / "dependency",
        data_dir=tmp_path / "kafka",
        port=free_port(),
        controller_port=free_port(),
        heap="256m",
    )
    await asyncio.to_thread(broker.start)
    settings = Settings(
        **{
            **stack.settings.model_dump(),
            "kafka_bootstrap": broker.bootstrap,
            "kafka_security_protocol": "PLAINTEXT",
            "kafka_send_timeout_s": 3,
        }
    )
    await create_topics(KafkaAccess(broker.bootstrap), Topics(settings.topic_prefix))
    services = ServiceTasks()
    url = await services.serve(create_app(settings), free_port())
    try:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {stack.token('kr-desk')}"}, timeout=30
        ) as desk:
            assert (await desk.post("/v1/notices", json=notice_body(PARTNERS))).status_code == 202
            broker.kill()
            down = notice_body(PARTNERS)
            response = await desk.post("/v1/notices", json=down)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"].isdigit()
            await asyncio.to_thread(broker.start)
            retried = await eventually(lambda: _accepted(desk, down), within=60, every=1.0)
            assert retried
    finally:
        await services.close()
        await asyncio.to_thread(broker.stop)
    async with stack.sessions() as session:
        assert await session.get(Submission, down["notice_id"]) is not None
    assert await _count(stack, Submission) == 2


async def _accepted(desk: httpx.AsyncClient, body: dict[str, Any]) -> bool:
    response = await desk.post("/v1/notices", json=body)
    assert response.status_code in (202, 503), response.text
    return response.status_code == 202
