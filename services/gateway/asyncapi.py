"""The AsyncAPI 3.0 document of what deskbridge sends asynchronously: the records on its Kafka topics, and
what a partner receives (webhook POSTs and the inbox stream's Server-Sent Events). It is made from the
pydantic models and from the names the code itself uses (topics, ACL grants, headers, event names), never
written by hand: `make schemas` writes it to schemas/asyncapi.json, a test keeps that file equal to what
this module makes now, and the gateway serves it at /asyncapi.json next to /openapi.json.

AsyncAPI describes one application per document; deskbridge is several, so every operation is tagged
with the one that performs it (gateway, ingest, audit, partner)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import schemas
from schemas.api import Alert, InboxItem
from schemas.envelopes import FlattenedJws
from schemas.events import Event, EventType
from schemas.notices import CASE_REF_PATTERN, RecallRequest
from services.delivery.views import KEEPALIVE_S
from services.delivery.webhooks import EVENT_HEADER, WebhookEvent
from services.notices.service import RECALL_TYPE
from services.platform.kafka import (
    DLQ_DETAIL,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
    MAX_RECORD_BYTES,
    Topics,
    ce_type,
    cloud_headers,
    grants,
    principal,
)
from services.platform.settings import Settings
from services.platform.tracing import TRACE_HEADERS
from services.trust.httpsig import COVERED, LABEL, SignaturePolicy

PATH = Path(schemas.__file__).parent / "asyncapi.json"
ROUTE = "/asyncapi.json"
PREFIX = "{prefix}"  # the channel parameter standing for the configurable topic prefix
TOPICS = Topics(PREFIX)
SCHEMAS = "#/components/schemas/{model}"
MODELS: tuple[type[BaseModel], ...] = (FlattenedJws, RecallRequest, Event, InboxItem, Alert)

# Each topic by its attribute of Topics: the messages it carries and what they are.
CHANNELS = {
    "notices": (
        ["envelope", "recall"],
        "Sealed envelopes as submitted (one record per notice, byte for byte as the sender's outer JWS) and "
        "the senders' recall requests, both keyed by case so a recall follows its notice.",
    ),
    "dead_letters": (
        ["deadLetter"],
        "Records of the notices topic that ingest refused, unchanged, with why and where they were.",
    ),
    "deliveries": (
        ["event"],
        "Ingest's notice events: delivered, replied, recalled, expired, escalated, and fetched by webhook. "
        "The gateway follows it (no consumer group) to wake waiting inboxes.",
    ),
    "events": (
        ["event"],
        "The gateway's own notice events: fetched, acknowledged, erased, refused at the door.",
    ),
    "admin": (
        ["event"],
        "Directory and webhook events: agencies, keys and credentials (gateway), parked webhook deliveries "
        "(ingest), replays (gateway).",
    ),
}
APPLICATIONS = {
    "gateway": "The HTTP API: takes submissions and recalls, serves inboxes, announces what it did.",
    "ingest": "The notice consumer: verifies, writes each inbox row once, dead-letters the bad, dispatches "
    "webhooks.",
    "audit": "The audit consumer: reads every topic into the append-only Merkle log.",
    "partner": "A partner agency's own software.",
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _env(field: str) -> str:
    return f"{Settings.model_config['env_prefix']}{field.upper()}"


def _components(*names: str) -> str:
    return " ".join(f'"{name}"' for name in names)


def _string(description: str, **more: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **more}


def _kafka_headers(type_: dict[str, Any], id_: str, source: str, **more: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvents attributes (Kafka binary mode) every record carries, and the trace context."""
    made = dict(cloud_headers("type", "id", "source"))
    described = {
        "ce_specversion": {"type": "string", "const": made["ce_specversion"].decode()},
        "ce_id": _string(id_),
        "ce_type": type_,
        "ce_source": _string(f"Who made the record: {source}."),
        "ce_time": _string("When the record was made (RFC 3339).", format="date-time"),
    }
    names = list(made)
    trace = {
        name: _string(f"W3C Trace Context `{name}` of the record's send span (OpenTelemetry).")
        for name in TRACE_HEADERS
    }
    return {
        "type": "object",
        "required": [*names, *more],
        "properties": {**{name: described[name] for name in names}, **more, **trace},
    }


def _kafka_key(description: str, **more: Any) -> dict[str, Any]:
    return {"kafka": {"key": _string(description, **more), "bindingVersion": "0.5.0"}}


def _messages(refs: dict[str, dict[str, str]]) -> dict[str, Any]:
    envelope = {
        "name": "envelope",
        "title": "Sealed notice",
        "summary": "A notice sealed by its sender: the outer JWS, flattened JSON (docs/envelope.md).",
        "contentType": "application/json",
        "payload": refs["FlattenedJws"],
        "headers": _kafka_headers(
            {"type": "string", "const": ce_type(EventType.notice_submitted)},
            "The notice_id.",
            "deskbridge/gateway/<sender>",
        ),
        "bindings": _kafka_key(
            "The routing header's case_ref: a case stays in one partition, in order.",
            pattern=CASE_REF_PATTERN,
        ),
    }
    recall = {
        "name": "recall",
        "title": "Recall request",
        "summary": "The sender withdraws a notice; ingest applies it.",
        "contentType": "application/json",
        "payload": refs["RecallRequest"],
        "headers": _kafka_headers(
            {"type": "string", "const": RECALL_TYPE}, "recall:<notice_id>", "deskbridge/gateway/<caller>"
        ),
        "bindings": _kafka_key(
            "The notice's case_ref, so the recall follows the notice.", pattern=CASE_REF_PATTERN
        ),
    }
    dlq = {
        DLQ_REASON: _string("The refusal code (docs/errors.md), e.g. bad_signature."),
        DLQ_DETAIL: _string("What exactly failed, at most 1000 bytes."),
        DLQ_TOPIC: _string("The topic the refused record was on."),
        DLQ_PARTITION: _string("Its partition, in decimal."),
        DLQ_OFFSET: _string("Its offset, in decimal."),
    }
    dead_letter = {
        "name": "dead-letter",
        "title": "Dead letter",
        "summary": "A record of the notices topic that ingest refused.",
        "contentType": "application/octet-stream",
        "payload": {"description": "The refused record's value, byte for byte (usually an envelope)."},
        "headers": _kafka_headers(
            {"type": "string", "const": ce_type(EventType.notice_rejected)},
            "dlq:<topic>:<partition>:<offset> of the refused record.",
            "deskbridge/ingest",
            **dlq,
        ),
        "bindings": _kafka_key('The refused record\'s key, or "unkeyed".'),
    }
    event = {
        "name": "event",
        "title": "Event",
        "summary": "A state change, metadata and hashes only: never notice plaintext.",
        "contentType": "application/json",
        "payload": refs["Event"],
        "headers": _kafka_headers(
            {"type": "string", "enum": [ce_type(kind.value) for kind in EventType]},
            "The event_id (the same fact always has the same id: drop repeats by it).",
            "deskbridge/gateway or deskbridge/ingest",
        ),
        "bindings": _kafka_key("The event's case_ref, else its agency, else its actor."),
    }
    stream = {
        WebhookEvent.notice: (
            "A delivery: `event: notice`, `id:` the item's cursor (reconnect with Last-Event-ID to resume "
            "with no gap and no repeat), `data:` the inbox item as JSON.",
            refs["InboxItem"],
        ),
        WebhookEvent.escalation: (
            "A reminder that a notice passed its acknowledgement deadline: `event: escalation`, no `id:` "
            "(it never moves the resume point), `data:` the alert as JSON.",
            refs["Alert"],
        ),
    }
    signature = {
        "Signature-Input": _string(
            f"RFC 9421 label `{LABEL}` covering {_components(*COVERED, EVENT_HEADER.lower())}, with created, "
            "keyid (the directory key's kid) and nonce, alg ed25519."
        ),
        "Signature": _string(f"RFC 9421 `{LABEL}`: Ed25519 by the desk's directory key, the key you pinned."),
        "Content-Digest": _string("RFC 9530 sha-256 of the body."),
        "Content-Type": {"type": "string", "const": "application/json"},
    }
    trace = _string("W3C Trace Context continuing the notice's trace.")
    webhook = {
        WebhookEvent.notice: "A delivery, in inbox order; retried with backoff until a 2xx, then parked.",
        WebhookEvent.escalation: "The same inbox item once more because it passed its acknowledgement "
        "deadline: one attempt, not retried.",
    }
    messages = {"envelope": envelope, "recall": recall, "deadLetter": dead_letter, "event": event}
    for kind, (summary, payload) in stream.items():
        messages[f"stream{kind.title()}"] = {
            "name": kind.value,
            "title": f"Inbox stream: {kind.value}",
            "summary": summary,
            "payload": payload,
        }
    for kind, summary in webhook.items():
        headers = {EVENT_HEADER: {"type": "string", "const": kind.value}, **signature}
        messages[f"webhook{kind.title()}"] = {
            "name": kind.value,
            "title": f"Webhook POST: {kind.value}",
            "summary": summary,
            "contentType": "application/json",
            "payload": refs["InboxItem"],
            "headers": {
                "type": "object",
                "required": list(headers),
                "properties": {**headers, TRACE_HEADERS[0]: trace},
            },
        }
    return messages


def _channels() -> dict[str, Any]:
    prefix = {
        "description": f"{_env('topic_prefix')}, prepended to every topic name (empty by default).",
        "default": "",
    }
    channels: dict[str, Any] = {
        _camel(attribute): {
            "address": getattr(TOPICS, attribute),
            "title": getattr(TOPICS, attribute).removeprefix(PREFIX),
            "description": description,
            "parameters": {"prefix": prefix},
            "servers": [{"$ref": "#/servers/kafka"}, {"$ref": "#/servers/kafka-local"}],
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in messages},
            "bindings": {
                "kafka": {
                    "topicConfiguration": {"max.message.bytes": MAX_RECORD_BYTES},
                    "bindingVersion": "0.5.0",
                }
            },
        }
        for attribute, (messages, description) in CHANNELS.items()
    }
    channels["inboxStream"] = {
        "address": "/v1/inbox/stream",
        "title": "Inbox stream (Server-Sent Events)",
        "description": "`GET /v1/inbox/stream` with the agency's credential (filters `type`, `priority`, "
        "`case_ref`; start after `after` or `Last-Event-ID`). Comment lines keep the connection alive, "
        f"one every {KEEPALIVE_S} s. docs/subscriptions.md.",
        "servers": [{"$ref": "#/servers/gateway"}],
        "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in ("streamNotice", "streamEscalation")},
    }
    channels["webhook"] = {
        "address": None,
        "title": "Webhook endpoint",
        "description": "The https:// URL an agency registered with `POST /v1/webhooks`; each POST is signed "
        "by the desk's directory key (verify with services.delivery.webhooks.verify_webhook or any RFC 9421 "
        "library). At least once: drop repeats by notice_id and the event header. docs/subscriptions.md.",
        "servers": [{"$ref": "#/servers/partner"}],
        "messages": {
            m: {"$ref": f"#/components/messages/{m}"} for m in ("webhookNotice", "webhookEscalation")
        },
    }
    return channels


def _operations(channels: dict[str, Any]) -> dict[str, Any]:
    """Who sends and who receives on each topic is what its Kafka ACLs let it (platform/kafka.grants)."""
    by_address = {channel["address"]: name for name, channel in channels.items()}
    operations: dict[str, Any] = {}
    for service, granted in grants(TOPICS).items():
        groups = [name for kind, name, _ in granted if kind == "group"]
        for kind, name, rights in granted:
            if kind != "topic":
                continue
            channel = by_address[name]
            action = "send" if "Write" in rights else "receive"
            operation: dict[str, Any] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel}"},
                "title": f"{service} {'writes' if action == 'send' else 'reads'} {name.removeprefix(PREFIX)}",
                "description": f"Kafka ACL of {principal(service)}: {', '.join(rights)}.",
                "tags": [{"name": service}],
                "messages": [
                    {"$ref": f"#/channels/{channel}/messages/{m}"} for m in channels[channel]["messages"]
                ],
            }
            if action == "receive":
                group = {"type": "string", "description": "The topic prefix, then this."}
                binding: dict[str, Any] = {"bindingVersion": "0.5.0"}
                if groups:
                    binding["groupId"] = {**group, "examples": [g.removeprefix(PREFIX) for g in groups]}
                else:
                    operation["description"] += " Reads without a consumer group."
                operation["bindings"] = {"kafka": binding}
            operations[f"{service}{action.title()}s{channel[0].upper()}{channel[1:]}"] = operation
    http = {
        ("gateway", "send", "inboxStream", "GET"): "Streams the caller's inbox as it is delivered.",
        ("partner", "receive", "inboxStream", "GET"): "Reads its inbox as a stream.",
        ("ingest", "send", "webhook", "POST"): "POSTs each delivery (and escalation reminder) to the "
        "agency's endpoint; the gateway does too when a parked delivery is replayed.",
        ("partner", "receive", "webhook", "POST"): "Takes signed POSTs at its registered endpoint; "
        "answers 2xx once it has the item.",
    }
    for (service, action, channel, method), description in http.items():
        operations[f"{service}{action.title()}s{channel[0].upper()}{channel[1:]}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "description": description,
            "tags": [{"name": service}],
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/{m}"} for m in channels[channel]["messages"]
            ],
            "bindings": {"http": {"method": method, "bindingVersion": "0.3.0"}},
        }
    return operations


def _servers() -> dict[str, Any]:
    bootstrap = {
        "description": f"{_env('kafka_bootstrap')}: the brokers' bootstrap addresses.",
        "default": Settings.model_fields["kafka_bootstrap"].default,
    }
    host = {"description": "The gateway's public host (and port).", "examples": ["deskbridge.example.org"]}
    return {
        "kafka": {
            "host": "{bootstrap}",
            "protocol": "kafka-secure",
            "title": "Kafka over mutual TLS",
            "description": f"{_env('kafka_security_protocol')}=SSL: each service presents its own client "
            f"certificate ({_env('kafka_cert_file')}), checks the brokers against {_env('kafka_ca_file')}, "
            "and may only do what its ACLs grant (the operations below). docs/deploy.md.",
            "variables": {"bootstrap": bootstrap},
            "security": [{"$ref": "#/components/securitySchemes/kafkaClientCertificate"}],
        },
        "kafka-local": {
            "host": "{bootstrap}",
            "protocol": "kafka",
            "title": "Kafka in plaintext",
            "description": f"{_env('kafka_security_protocol')}=PLAINTEXT (the default): development and the "
            "tests only.",
            "variables": {"bootstrap": bootstrap},
        },
        "gateway": {
            "host": "{host}",
            "protocol": "https",
            "title": "The gateway",
            "description": f"The HTTP API; its OpenAPI is at /openapi.json, this document at {ROUTE}.",
            "variables": {"host": host},
            "security": [
                {"$ref": "#/components/securitySchemes/bearerCredential"},
                {"$ref": "#/components/securitySchemes/agencySignature"},
            ],
        },
        "partner": {
            "host": "{host}",
            "protocol": "https",
            "title": "A partner's webhook endpoint",
            "description": "Where an agency takes its webhook POSTs; only public addresses are accepted.",
            "variables": {"host": {"description": "The host of the registered URL."}},
            "security": [{"$ref": "#/components/securitySchemes/directorySignature"}],
        },
    }


def _security_schemes() -> dict[str, Any]:
    covered = _components(*COVERED)
    return {
        "kafkaClientCertificate": {
            "type": "X509",
            "description": "Mutual TLS: a service's Kafka identity is its certificate's subject, e.g. "
            f"{principal('gateway')}, which the brokers' ACLs grant rights to.",
        },
        "bearerCredential": {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <credential>`: the agency's credential.",
        },
        "agencySignature": {
            "type": "httpApiKey",
            "name": "Signature",
            "in": "header",
            "description": f"Instead of a credential, an agency may sign the request (RFC 9421, label "
            f"`{LABEL}` covering {covered}, with created, keyid, nonce and alg ed25519; Content-Digest per "
            "RFC 9530) with its directory key. docs/trust.md.",
        },
        "directorySignature": {
            "type": "httpApiKey",
            "name": "Signature",
            "in": "header",
            "description": f"Every webhook POST is signed (RFC 9421, label `{LABEL}` covering "
            f"{_components(*COVERED, EVENT_HEADER.lower())}) by the desk's directory key: verify it "
            f"against the key you pinned, refuse it when `created` is older than "
            f"{SignaturePolicy().freshness_s} s, and keep its nonce that long to refuse a replay.",
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    refs, top = models_json_schema([(model, "validation") for model in MODELS], ref_template=SCHEMAS)
    by_name = {model.__name__: refs[(model, "validation")] for model in MODELS}
    channels = _channels()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "deskbridge",
            "version": "1",
            "description": "What deskbridge sends asynchronously: the records on its Kafka topics, and what "
            "a partner agency receives (webhook POSTs and the inbox stream). Every operation is tagged with "
            "the application that performs it. Generated from the code (services/gateway/asyncapi.py); "
            "the notices inside envelopes are docs/envelope.md, the inbox is docs/subscriptions.md.",
            "tags": [{"name": name, "description": text} for name, text in APPLICATIONS.items()],
        },
        "defaultContentType": "application/json",
        "servers": _servers(),
        "channels": channels,
        "operations": _operations(channels),
        "components": {
            "schemas": top["$defs"],
            "messages": _messages(by_name),
            "securitySchemes": _security_schemes(),
        },
    }


def rendered() -> str:
    """The document exactly as written to schemas/asyncapi.json (a test compares the committed file)."""
    return json.dumps(document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> None:
    PATH.write_text(rendered(), encoding="utf-8")
    print(f"wrote schemas/{PATH.name}")


if __name__ == "__main__":
    main()
