"""The AsyncAPI document (schemas/asyncapi.json): committed as the code makes it, valid AsyncAPI 3.0 by the
official JSON Schema (vendored, schemas/vendor/README.md), every reference resolving, describing the topics,
headers and payloads the code uses, and served by the gateway without a credential."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import jsonschema
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.kafka import free_port
from schemas.api import Alert, DeliveryState, InboxItem
from schemas.envelopes import FlattenedJws
from schemas.events import Event, EventType
from schemas.notices import RecallRequest
from services.gateway import asyncapi
from services.gateway.app import create_app as create_gateway_app
from services.ingest.main import run_webhooks
from services.platform.kafka import Topics, cloud_headers
from services.platform.settings import Settings
from tests.conftest import ServiceTasks, Stack, eventually, receipt
from tests.support.sealing import notice_body

VENDORED = Path(asyncapi.PATH).parent / "vendor" / "asyncapi-3.0.0-without-id.json"
VENDORED_SHA256 = "abe96881dbfaad495ccbb6bd8d3fb43ca18a13b9d7564849ccb66f39d5e5b20f"  # @asyncapi/specs 6.11.1

Document = dict[str, Any]


def _validator() -> jsonschema.Draft7Validator:
    raw = VENDORED.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == VENDORED_SHA256, (
        "the vendored schema is not the one its README names"
    )
    schema = json.loads(raw)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema"
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def _pointer(document: Document, ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _dangling(document: Document) -> list[str]:
    """The document's references that name nothing in it (the JSON Schema cannot check these)."""
    missing = []
    for ref in _refs(document):
        try:
            _pointer(document, ref)
        except (KeyError, IndexError, TypeError):
            missing.append(ref)
    return missing


def test_the_committed_document_is_what_the_code_makes() -> None:
    assert asyncapi.PATH.read_text(encoding="utf-8") == asyncapi.rendered(), (
        "schemas/asyncapi.json is stale: run `make schemas` and commit it"
    )


def test_the_document_is_valid_asyncapi_3_and_every_reference_resolves() -> None:
    document = json.loads(asyncapi.PATH.read_text(encoding="utf-8"))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(document)]
    assert errors == []
    assert _dangling(document) == []


def _set(path: str, value: Any) -> Callable[[Document], None]:
    *parents, last = path.split("/")

    def mutate(document: Document) -> None:
        node = document
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def _drop(path: str) -> Callable[[Document], None]:
    *parents, last = path.split("/")

    def mutate(document: Document) -> None:
        node = document
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


# Documents the validation must refuse: each a mistake someone could make in the generator.
BROKEN = {
    "asyncapi 2 version": _set("asyncapi", "2.6.0"),
    "no info": _drop("info"),
    "asyncapi 2 verb": _set("operations/ingestReceivesNotices/action", "subscribe"),
    "server without protocol": _drop("servers/kafka/protocol"),
    "unknown security scheme type": _set("components/securitySchemes/kafkaClientCertificate/type", "mTLS"),
    "unknown kafka binding field": _set("channels/notices/bindings/kafka/partitionCount", 3),
    "kafka key not a schema": _set("components/messages/event/bindings/kafka/key", 7),
    "http method not a method": _set("operations/ingestSendsWebhook/bindings/http/method", "SEND"),
    "asyncapi 2 message field": _set("components/messages/event/example", {}),
    "headers not a schema": _set("components/messages/envelope/headers", "ce_id"),
}


@pytest.mark.parametrize("mutate", BROKEN.values(), ids=BROKEN.keys())
def test_the_validation_refuses_a_broken_document(mutate: Callable[[Document], None]) -> None:
    document = copy.deepcopy(asyncapi.document())
    mutate(document)
    assert not _validator().is_valid(document)


def test_a_dangling_reference_is_caught() -> None:
    document = copy.deepcopy(asyncapi.document())
    document["channels"]["notices"]["messages"]["envelope"] = {"$ref": "#/components/messages/envelop"}
    assert _dangling(document) == ["#/components/messages/envelop"]


def _message(document: Document, name: str) -> Document:
    message: Document = document["components"]["messages"][name]
    return message


def _check(document: Document, schema: Document, instance: Any) -> None:
    """Validates `instance` against a schema of the document, its references resolved in the document."""
    jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(instance)


def test_the_channels_are_the_topics_and_the_operations_their_acls() -> None:
    document = asyncapi.document()
    topics = {
        c["address"] for c in document["channels"].values() if c["address"] and "{prefix}" in c["address"]
    }
    assert topics == set(Topics("{prefix}").all())
    for channel in document["channels"].values():
        for server in channel["servers"]:
            assert _pointer(document, server["$ref"])["protocol"] in {"kafka", "kafka-secure", "https"}
    senders = {
        (op["tags"][0]["name"], op["channel"]["$ref"].rsplit("/", 1)[1])
        for op in document["operations"].values()
        if op["action"] == "send"
    }
    assert ("gateway", "notices") in senders and ("ingest", "deadLetters") in senders
    assert ("ingest", "notices") not in senders and not any(who == "audit" for who, _ in senders)
    receivers = {op["tags"][0]["name"] for op in document["operations"].values() if op["action"] == "receive"}
    assert receivers == {"gateway", "ingest", "audit", "partner"}


def test_the_messages_describe_what_the_code_sends() -> None:
    """Instances of each model validate against their message's payload, and every record's headers as
    cloud_headers() makes them (plus a traceparent) against its message's headers."""
    document = asyncapi.document()
    now = datetime.now(UTC)
    notice_id, case_ref = uuid4(), "KNPA-2025-0001"
    event = Event(
        event_id="e1", type=EventType.notice_delivered, occurred_at=now, actor="ingest", agency="kh-cnp"
    )
    item = InboxItem(
        notice_id=notice_id,
        sender="kr-desk",
        case_ref=case_ref,
        notice_type="missing_person",
        priority="flash",
        tlp="amber",
        state=DeliveryState.delivered,
        delivered_at=now,
        cursor="c1",
        envelope="{}",
    )
    alert = Alert(kind="sla_escalation", agency="kh-cnp", notice_id=notice_id, since=now, detail="overdue")
    recall = RecallRequest(
        notice_id=notice_id, case_ref=case_ref, sender="kr-desk", requested_by="kr-desk", requested_at=now
    )
    envelope = FlattenedJws(protected="eyJ", payload="eyJ", signature="c2ln")
    payloads = {
        "envelope": envelope,
        "recall": recall,
        "event": event,
        "streamNotice": item,
        "streamEscalation": alert,
        "webhookNotice": item,
        "webhookEscalation": item,
    }
    for name, model in payloads.items():
        _check(document, _message(document, name)["payload"], model.model_dump(mode="json"))
    with pytest.raises(jsonschema.ValidationError):
        _check(
            document, _message(document, "event")["payload"], {**event.model_dump(mode="json"), "type": "x"}
        )

    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    records = {
        "envelope": cloud_headers(
            "org.deskbridge.notice.submitted", str(notice_id), "deskbridge/gateway/kr-desk"
        ),
        "recall": cloud_headers(
            "org.deskbridge.notice.recall", f"recall:{notice_id}", "deskbridge/gateway/x"
        ),
        "event": cloud_headers("org.deskbridge.notice.delivered", "e1", "deskbridge/ingest"),
    }
    for name, headers in records.items():
        values = {key: value.decode() for key, value in headers} | trace
        _check(document, _message(document, name)["headers"], values)
    with pytest.raises(jsonschema.ValidationError):  # a recall is not announced as a submission
        _check(document, _message(document, "envelope")["headers"], dict(records["recall"]) | trace)


async def test_the_gateway_serves_the_document_without_a_credential_next_to_the_openapi() -> None:
    app = create_gateway_app(Settings())  # no lifespan: the route needs no state
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        served = await client.get(asyncapi.ROUTE)
        openapi = await client.get(app.openapi_url or "")
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    assert served.json() == json.loads(asyncapi.PATH.read_text(encoding="utf-8"))
    assert openapi.status_code == 200 and asyncapi.ROUTE in openapi.json()["info"]["description"]
    assert asyncapi.ROUTE not in openapi.json()["paths"]  # a page around the API, like the OpenAPI itself


# ---- what the running services send, checked against the document -------------------------------------

KH = "kh-cnp"
POISON_KEY = "POISON-2025-0001"


def _spelled(schema: Document, received: Mapping[str, str]) -> dict[str, str]:
    """HTTP header names are case-insensitive: the received headers under the names the schema spells."""
    lowered = {name.lower(): value for name, value in received.items()}
    return {name: lowered[name.lower()] for name in schema["properties"] if name.lower() in lowered}


def _record_matches(document: Document, message: Document, record: ConsumerRecord[bytes, bytes]) -> bool:
    headers = {name: value.decode() for name, value in record.headers}
    try:
        _check(document, message["headers"], headers)
        _check(document, message["bindings"]["kafka"]["key"], (record.key or b"").decode())
        if message["contentType"] == "application/json":
            _check(document, message["payload"], json.loads(record.value or b""))
    except (jsonschema.ValidationError, ValueError):
        return False
    return True


async def _records(stack: Stack, wanted: dict[str, int]) -> dict[str, list[ConsumerRecord[bytes, bytes]]]:
    """Every record on the topics, reading until each topic has at least `wanted` of them."""
    consumer = AIOKafkaConsumer(
        *stack.topics.all(),
        **stack.kafka.client_args(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    found: dict[str, list[ConsumerRecord[bytes, bytes]]] = {topic: [] for topic in stack.topics.all()}
    try:
        async with asyncio.timeout(60):
            while any(len(found[topic]) < count for topic, count in wanted.items()):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        found[record.topic].append(record)
    except TimeoutError:
        counts = {topic: len(found[topic]) for topic in wanted}
        raise AssertionError(f"records wanted {wanted}, found {counts} within 60 s") from None
    finally:
        await consumer.stop()
    return found


@pytest.mark.settings(webhook_allow_private=True)  # the receiving endpoint listens on loopback
async def test_what_the_running_services_send_is_what_the_document_describes(stack: Stack) -> None:
    """A notice goes to a webhook and down the inbox stream and is acknowledged, a poison record goes to the
    dead letters, a recall follows: every record on every topic, the webhook POST and the stream's event
    match a message of their channel in the document."""
    document = json.loads(asyncapi.PATH.read_text(encoding="utf-8"))
    posts: list[tuple[dict[str, str], bytes]] = []

    async def endpoint(request: Request) -> Response:
        posts.append((dict(request.headers), await request.body()))
        return Response(status_code=204)

    async def posted() -> bool:
        return bool(posts)

    services = ServiceTasks()
    receiver = await services.serve(
        Starlette(routes=[Route("/hook", endpoint, methods=["POST"])]), free_port()
    )
    kh = stack.client(KH)
    stop = asyncio.Event()
    dispatcher = asyncio.create_task(run_webhooks(stack.settings, stop))
    try:
        assert (await kh.post("/v1/webhooks", json={"url": f"{receiver}/hook"})).status_code == 201
        sent = await stack.client("kr-desk").post("/v1/notices", json=notice_body([KH]))
        assert sent.status_code == 202, sent.text
        notice_id = sent.json()["notice_id"]
        await eventually(posted, within=60)
        event = await _first_stream_event(kh)
    finally:
        stop.set()
        await asyncio.wait_for(dispatcher, 30)
        await services.close()
    # The gateway's own notice events go to the events topic: the acknowledgement is one for sure (whether
    # the stream or the webhook marked the copy fetched first is a race).
    acked = await kh.post(f"/v1/inbox/{notice_id}/ack", json=await receipt(stack, KH, notice_id))
    assert acked.status_code == 200, acked.text
    await stack.publisher.send(stack.topics.notices, POISON_KEY, b"not an envelope", [])
    recalled = await stack.client("kr-desk").post(f"/v1/notices/{notice_id}/recall", json={})
    assert recalled.status_code == 202, recalled.text

    [(headers, body)] = posts
    webhook = _message(document, "webhookNotice")
    _check(document, webhook["headers"], _spelled(webhook["headers"], headers))
    _check(document, webhook["payload"], json.loads(body))
    stream = _message(document, "streamNotice")
    data = json.loads(event["data"])
    _check(document, stream["payload"], data)
    assert event["event"] == stream["name"]
    assert event["id"] == data["cursor"] and data["notice_id"] == notice_id

    t = stack.topics
    found = await _records(stack, {t.notices: 3, t.dead_letters: 1, t.deliveries: 1, t.events: 1, t.admin: 1})
    channels = {
        channel["address"].replace("{prefix}", t.prefix): channel
        for channel in document["channels"].values()
        if channel["address"]
    }
    unmatched = []
    for topic, records in found.items():
        messages = [_pointer(document, m["$ref"]) for m in channels[topic]["messages"].values()]
        for record in records:
            if record.key == POISON_KEY.encode() and topic == t.notices:
                continue  # ours, not a service's: what ingest made of it is on the dead-letter topic
            if not any(_record_matches(document, message, record) for message in messages):
                unmatched.append(f"{topic}@{record.offset}: {dict(record.headers)} {record.value!r:.200}")
    assert unmatched == []
    kinds = {dict(r.headers)["ce_type"].decode() for records in found.values() for r in records if r.headers}
    assert {
        "org.deskbridge.notice.submitted",
        "org.deskbridge.notice.recall",
        "org.deskbridge.notice.rejected",
    } <= kinds


async def _first_stream_event(client: httpx.AsyncClient) -> dict[str, str]:
    """The first event of the inbox stream, its fields as sent (`event`, `id`, `data`)."""
    buffer = ""
    async with asyncio.timeout(60), client.stream("GET", "/v1/inbox/stream") as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        async for chunk in stream.aiter_text():
            buffer += chunk
            for block in buffer.replace("\r\n", "\n").split("\n\n")[:-1]:
                fields = dict(
                    line.partition(":")[::2]
                    for line in block.split("\n")
                    if line and not line.startswith(":")
                )
                if "event" in fields:
                    return {name: value.removeprefix(" ") for name, value in fields.items()}
    raise AssertionError("the stream ended without an event")
