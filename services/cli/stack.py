"""`deskbridge up`: the whole local stack, one Kafka broker and the three services, until Ctrl-C.

The broker is closed to strangers: TLS with client certificates (made under var/kafka-tls when missing)
and ACLs; each service runs as its own identity, and the setup here as the administrator."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devstack.certs import ADMIN, ensure_certificates
from devstack.kafka import KafkaBroker, ensure_jars
from devstack.processes import spawn_child
from services.cli.demo import bootstrap
from services.platform.database import ROOT, make_engine, make_sessionmaker, upgrade
from services.platform.kafka import EventPublisher, KafkaAccess, Topics, create_topics
from services.platform.settings import Settings

SERVICES = ("gateway", "ingest", "audit")


async def prepare(settings: Settings, home: Path) -> int:
    """Schema, topics with the services' ACLs, and demo agencies; the registration events are published so
    they are audited. `settings` name the administrator's Kafka identity."""
    await asyncio.to_thread(upgrade, settings.database_url)
    topics = Topics(settings.topic_prefix)
    kafka = KafkaAccess.of(settings)
    await create_topics(kafka, topics, settings.topic_partitions)
    engine = make_engine(settings.database_url)
    publisher = EventPublisher(kafka, "deskbridge-up", topics, settings.kafka_send_timeout_s)
    try:
        async with make_sessionmaker(engine)() as session:
            events = await bootstrap(session, home)
            await session.commit()
        for event in events:
            await publisher.publish(event, "deskbridge/up")
    finally:
        await publisher.close()
        await engine.dispose()
    return len(events)


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")


def run_stack(var: Path, kafka_port: int, gateway_port: int, audit_port: int) -> None:
    var = var.resolve()
    home = var / "demo"
    environment = {
        **os.environ,
        "DESKBRIDGE_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "DESKBRIDGE_GATEWAY_PORT": str(gateway_port),
        "DESKBRIDGE_AUDIT_PORT": str(audit_port),
        "DESKBRIDGE_DESK_KEYS_DIR": str(home / "kr-desk"),
    }
    environment.setdefault("DESKBRIDGE_DATABASE_URL", f"sqlite+aiosqlite:///{var / 'deskbridge.db'}")
    os.environ.update(environment)
    certificates = ensure_certificates(var / "kafka-tls")
    settings = Settings(**certificates.fields(ADMIN))
    print("fetching Kafka jars (Maven) if needed ...", flush=True)
    jars = ensure_jars(ROOT / "deploy" / "kafka")
    broker = KafkaBroker(
        jar_dir=jars,
        data_dir=var / "kafka",
        port=kafka_port,
        controller_port=kafka_port + 1,
        certificates=certificates,
    )
    children: list[subprocess.Popen[bytes]] = []
    try:
        print(f"starting Apache Kafka (KRaft) on {broker.bootstrap} ...", flush=True)
        broker.start()
        enrolled = asyncio.run(prepare(settings, home))
        for name in SERVICES:
            identity = {**environment, **certificates.settings(name)}
            children.append(spawn_child([sys.executable, "-m", f"services.{name}"], env=identity))
        _wait_http(f"http://127.0.0.1:{gateway_port}/healthz", children[0])
        _wait_http(f"http://127.0.0.1:{audit_port}/v1/audit/events", children[2])
        server = f" --server http://127.0.0.1:{gateway_port}" if gateway_port != 8080 else ""
        print(
            f"\ndeskbridge is up.\n"
            f"  gateway   http://127.0.0.1:{gateway_port}  (OpenAPI: /docs)\n"
            f"  audit     http://127.0.0.1:{audit_port}  (OpenAPI: /docs)\n"
            f"  kafka     {broker.bootstrap} (TLS; client certificates in {certificates.folder})\n"
            f"  database  {settings.database_url}\n"
            f"  demo agencies' keys and credentials: {home}/<agency>/ "
            f"({'just created' if enrolled else 'kept from an earlier run'})\n"
            f"  auditor and admin credentials: {home}/auditor/, {home}/admin/\n"
            f"Try: deskbridge inbox pull --as kh-cnp --home {home}{server}\nCtrl-C stops everything.",
            flush=True,
        )
        # SIGINT too: a shell that starts us in the background hands us SIGINT ignored.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        signal.signal(signal.SIGINT, _raise_interrupt)
        _wait_for_stop(children)
    finally:
        print("\nstopping ...", flush=True)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        broker.stop()
        print("stopped.", flush=True)


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _wait_for_stop(children: list[subprocess.Popen[bytes]]) -> None:
    """Returns on Ctrl-C or SIGTERM, or when a service dies (so a broken stack never looks healthy)."""
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        dead = [SERVICES[i] for i, c in enumerate(children) if c.poll() is not None]
        print(f"service exited: {', '.join(dead)}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
