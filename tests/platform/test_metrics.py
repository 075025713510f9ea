"""The Prometheus metrics (services/metrics/, docs/operations.md): each service scraped as Prometheus would
(gateway and audit on their apps, ingest on its own port) while a notice, a refused envelope and a poison
record go through the real stack; an escalation; the token that closes the scrapes; the outage probe; and
the Grafana dashboard querying only what the services export."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.kafka import free_port
from services.envelope.keys import AgencyKeys
from services.metrics.registry import Metrics
from services.metrics.watch import watch_outages
from services.platform.database import make_engine
from services.platform.kafka import KafkaAccess
from tests.conftest import Stack, eventually
from tests.support.sealing import notice_body, seal

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "deskbridge.json"
DESK, KH = "kr-desk", "kh-cnp"
PARTNERS = [KH, "interpol-ncb-phnom-penh"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and wanted <= got)


def labelled(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(got) for n, got in samples if n == name]


def ingest_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.settings.ingest_metrics_port}"


@pytest.mark.settings(checkpoint_interval_s=0.5)
async def test_a_delivered_notice_moves_every_services_numbers(stack: Stack) -> None:
    gateway_before, ingest_before = await scrape(stack.gateway_url), await scrape(ingest_url(stack))
    audit_before = await scrape(stack.audit_url)

    response = await stack.client(DESK).post("/v1/notices", json=notice_body(PARTNERS, priority="immediate"))
    assert response.status_code == 202, response.text
    notice_id = response.json()["notice_id"]
    assert (await stack.client(DESK).get(f"/v1/notices/{notice_id}")).status_code == 200
    assert (await stack.client(DESK).get("/v1/nowhere/at/all")).status_code == 404

    gateway = await scrape(stack.gateway_url)
    requests = "deskbridge_http_requests_total"
    for name, labels in [
        ("deskbridge_notices_accepted_total", {"stage": "gateway"}),
        (requests, {"method": "POST", "route": "/v1/notices", "status": "202"}),
        # The route's template, never the path with the notice's id in it.
        (requests, {"method": "GET", "route": "/v1/notices/{notice_id}", "status": "200"}),
        (requests, {"method": "GET", "route": "other", "status": "404"}),
    ]:
        assert value(gateway, name, **labels) == value(gateway_before, name, **labels) + 1, (name, labels)
    assert not [labels for labels in labelled(gateway, requests) if notice_id in labels["route"]]

    async def reached_inbox() -> Samples | None:
        ingest = await scrape(ingest_url(stack))
        return ingest if value(ingest, "deskbridge_notices_accepted_total", stage="ingest") else None

    ingest = await eventually(reached_inbox)
    latency = "deskbridge_post_to_inbox_seconds"
    assert value(ingest, f"{latency}_count", priority="immediate") == 1
    assert value(ingest_before, f"{latency}_count") == 0
    assert 0 <= value(ingest, f"{latency}_sum", priority="immediate") < 30
    assert value(ingest, f"{latency}_bucket", priority="immediate", le="+Inf") == 1

    # Ingest follows the notices topic, audit every topic: a lag gauge for each of their partitions,
    # refreshed every couple of seconds.
    partitions = {str(p) for p in range(stack.settings.topic_partitions)}
    lag = "deskbridge_consumer_lag"

    async def ingest_lag() -> Samples | None:
        ingest = await scrape(ingest_url(stack))
        shown = {(g["consumer"], g["topic"], g["partition"]) for g in labelled(ingest, lag)}
        return ingest if shown == {("ingest", stack.topics.notices, p) for p in partitions} else None

    ingest = await eventually(ingest_lag, within=15)
    assert value(ingest, lag) == 0  # it has caught up with the one notice

    async def audit_grew() -> Samples | None:
        audit = await scrape(stack.audit_url)
        grown = value(audit, "deskbridge_audit_tree_size") > value(audit_before, "deskbridge_audit_tree_size")
        has_lag = {g["topic"] for g in labelled(audit, lag)} == set(stack.topics.all())
        return audit if grown and has_lag else None

    audit = await eventually(audit_grew)
    assert {g["consumer"] for g in labelled(audit, lag)} == {"audit"}
    assert len(labelled(audit, lag)) == len(stack.topics.all()) * len(partitions)
    age = await eventually(
        lambda: _finite(stack.audit_url, "deskbridge_audit_checkpoint_age_seconds"), within=30
    )
    assert 0 <= age < 60
    # Nothing is down: every service's probes found the database and Kafka.
    for url in (stack.gateway_url, stack.audit_url, ingest_url(stack)):
        samples = await scrape(url)
        assert value(samples, "deskbridge_outage", dependency="database") == 0
        assert value(samples, "deskbridge_outage", dependency="kafka") == 0


async def _finite(url: str, name: str) -> float | None:
    found = value(await scrape(url), name)
    return found if found == found else None  # NaN until the first checkpoint


async def test_refusals_count_their_reason_at_the_gateway_and_in_ingest(stack: Stack) -> None:
    kh = AgencyKeys.load(stack.home / KH)
    _, stale = seal(stack, kh, [DESK], sent_at=datetime.now(UTC) - timedelta(minutes=10))
    response = await stack.client(KH).post(
        "/v1/envelopes", content=stale, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["code"] == "stale"
    gateway = await scrape(stack.gateway_url)
    assert value(gateway, "deskbridge_notices_refused_total", stage="gateway", reason="stale") == 1
    assert value(gateway, "deskbridge_notices_accepted_total") == 0
    assert value(gateway, "deskbridge_http_requests_total", route="/v1/envelopes", status="422") == 1

    # The same envelope, and a record that is no envelope at all, put on the topic past the gateway.
    await stack.publisher.send(stack.topics.notices, "KD-2025-0331", stale, [])
    await stack.publisher.send(stack.topics.notices, "KD-2025-0331", b"\x00 not an envelope", [])

    async def dead_lettered() -> Samples | None:
        ingest = await scrape(ingest_url(stack))
        return ingest if value(ingest, "deskbridge_dead_letters_total") >= 2 else None

    ingest = await eventually(dead_lettered)
    for reason in ("stale", "malformed"):
        assert value(ingest, "deskbridge_dead_letters_total", reason=reason) == 1
        assert value(ingest, "deskbridge_notices_refused_total", stage="ingest", reason=reason) == 1
    assert value(ingest, "deskbridge_notices_accepted_total", stage="ingest") == 0


@pytest.mark.settings(sla_flash_s=0.5)
async def test_an_unacknowledged_flash_notice_counts_as_escalated_once_per_copy(stack: Stack) -> None:
    response = await stack.client(DESK).post("/v1/notices", json=notice_body(PARTNERS, priority="flash"))
    assert response.status_code == 202, response.text

    async def escalated() -> Samples | None:
        ingest = await scrape(ingest_url(stack))
        return ingest if value(ingest, "deskbridge_sla_escalations_total") >= len(PARTNERS) else None

    await eventually(escalated)
    await asyncio.sleep(1.5)  # three more sweeps: a copy escalates once
    ingest = await scrape(ingest_url(stack))
    assert value(ingest, "deskbridge_sla_escalations_total", priority="flash") == len(PARTNERS)


@pytest.mark.settings(metrics_token="scrape-me")
async def test_with_a_token_set_only_a_scrape_that_brings_it_is_answered(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for url in (stack.gateway_url, stack.audit_url):
            refused = await client.get(f"{url}/metrics", headers={"Authorization": "Bearer wrong"})
            assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
            assert refused.headers["www-authenticate"] == "Bearer"
        assert (await client.get(f"{ingest_url(stack)}/metrics")).status_code == 401
        assert (await client.get(f"{ingest_url(stack)}/other")).status_code == 404
    for url in (stack.gateway_url, stack.audit_url, ingest_url(stack)):
        assert value(await scrape(url, "scrape-me"), "deskbridge_outage", dependency="kafka") == 0


async def test_the_probe_reports_an_unreachable_kafka_and_a_reachable_database(tmp_path: Path) -> None:
    metrics = Metrics()
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}")
    probe = asyncio.create_task(watch_outages(metrics, engine, KafkaAccess(f"127.0.0.1:{free_port()}"), 0.1))

    def outage(dependency: str) -> float | None:
        return metrics.registry.get_sample_value("deskbridge_outage", {"dependency": dependency})

    try:

        async def kafka_down() -> bool:
            return outage("kafka") == 1

        await eventually(kafka_down, within=15)
        assert outage("database") == 0
    finally:
        probe.cancel()
        await asyncio.gather(probe, return_exceptions=True)
        await engine.dispose()


# ---- the Grafana dashboard ----------------------------------------------------------------------


def exported_names() -> dict[str, set[str]]:
    """Each metric family the services define, with the sample names Prometheus stores for it."""
    metrics = Metrics()
    metrics.audit_log(lambda: None)
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    return {
        family.name: {family.name + suffix for suffix in suffixes[family.type]}
        for family in metrics.registry.collect()
    }


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, child in node.items():
            if key == "expr" and isinstance(child, str):
                yield child
            else:
                yield from _exprs(child)
    elif isinstance(node, list):
        for child in node:
            yield from _exprs(child)


def test_the_dashboard_queries_only_what_the_services_export_and_all_of_it() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    families = exported_names()
    assert all(name.startswith("deskbridge_") for name in families)
    samples = set().union(*families.values())
    queried = {name for expr in _exprs(dashboard) for name in re.findall(r"\bdeskbridge_\w+", expr)}
    assert queried <= samples, f"not exported: {sorted(queried - samples)}"
    unshown = [f for f, names in families.items() if not names & queried]
    assert not unshown, f"no panel shows {unshown}"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["title"] and panel["targets"] and panel["gridPos"], panel.get("title")
