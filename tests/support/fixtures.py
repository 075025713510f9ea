"""Session-wide infrastructure fixtures; ``tests/conftest.py`` star-imports them.

They are plain synchronous fixtures on purpose: they only manage child processes, so they work
with whatever event loop (scope) the async tests use.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.certs import ensure_certificates
from devstack.kafka import KafkaBroker, ensure_jars, free_port
from tests.support.postgres import PostgresCluster

__all__ = ["kafka_broker", "pg_cluster", "topic_prefix"]

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One real KRaft Kafka broker for the whole session; tests isolate via ``topic_prefix``. Closed to
    strangers as in production: TLS with client certificates and ACLs (``broker.certificates``)."""
    broker = KafkaBroker(
        jar_dir=ensure_jars(REPO_ROOT / "deploy" / "kafka"),
        data_dir=tmp_path_factory.mktemp("kafka"),
        port=free_port(),
        controller_port=free_port(),
        certificates=ensure_certificates(tmp_path_factory.mktemp("kafka-tls")),
    )
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the session; create a database per test/module."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def topic_prefix() -> str:
    """Unique per-test topic-name prefix, e.g. ``t1a2b3c4d.``."""
    return f"t{uuid.uuid4().hex[:8]}."
