"""The stack under test: Kafka and PostgreSQL (started here, or given), and the three services each as
a process of its own (as `deskbridge up` runs them), so each one's peak RSS can be read from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

from bench.profile import jit_cpu_seconds, tree_cpu_seconds
from devstack.certs import ADMIN, Certificates, ensure_certificates
from devstack.kafka import KafkaBroker, KafkaCluster, ensure_jars, free_port
from devstack.processes import spawn_child
from services.cli.demo import enrol
from services.cli.profiles import Profile
from services.cli.stack import prepare
from services.platform.database import ROOT, make_engine, make_sessionmaker
from services.platform.kafka import EventPublisher, KafkaAccess, Topics
from services.platform.settings import Settings
from tests.support.postgres import PostgresCluster

KAFKA_DIR = ROOT / "deploy" / "kafka"
SENDERS = ("kr-desk", "kh-cnp", "interpol-ncb-phnom-penh", "aseanapol")  # the demo agencies
READERS = tuple(f"bench-{i:02d}" for i in range(1, 11))  # recipients only, so no inbox is also a sender
FLASH_READER = "bench-flash"  # waits on a long-poll; receives nothing else
PULL_READER = "bench-pull"  # reads its inbox while the store grows

# Raised for the bench and named in the report: the defaults would refuse a load test as abuse.
BENCH_ENVIRONMENT = {
    "DESKBRIDGE_RATE_LIMIT_PER_S": "1000000",
    "DESKBRIDGE_RATE_LIMIT_BURST": "1000000",
    "DESKBRIDGE_INBOX_MAX_PENDING": "1000000000",
    # With no cap to reach, the gateway's recount of each inbox (up to the cap, every second by default)
    # would scan every unacknowledged copy the bench piles up: a cost of the disabled cap, not of a notice.
    "DESKBRIDGE_INBOX_COUNT_S": "3600",
}


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Timeout|Exit)\w*: ")


# The test clusters' 32 MB of shared buffers would make a bench of 10^7 audit entries a bench of the OS's
# page cache; a production server gets a share of its memory (PostgreSQL's guide: a quarter).
BENCH_POSTGRES = {"shared_buffers": "'2GB'"}


def pid_running(argument: str) -> int:
    """The process whose command line holds `argument`."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if argument.encode() in (proc / "cmdline").read_bytes().split(b"\0"):
                    return int(proc.name)
    raise RuntimeError(f"no process runs with {argument}")


def kafka_version() -> str:
    jar = next(iter(sorted((KAFKA_DIR / "target" / "dependency").glob("kafka_2.13-*.jar"))), None)
    match = re.search(r"kafka_2\.13-([\d.]+)\.jar", jar.name) if jar else None
    return match.group(1) if match else "unknown"


@dataclass
class Infrastructure:
    """Kafka and the database; `cpu_clocks` reads the CPU seconds of those the bench started itself, and
    `kafka` and `database` are those processes (None when given), for `make faults` to kill.
    `certificates`: the Kafka identities of a broker closed to strangers (None: open plaintext)."""

    bootstrap: str
    database_url: str
    cpu_clocks: dict[str, Callable[[], float]] = field(default_factory=dict)
    kafka: list[KafkaBroker] = field(default_factory=list)
    database: PostgresCluster | None = None
    certificates: Certificates | None = None
    broker_jit: Callable[[], float] | None = None  # CPU seconds of the broker's JIT compiler, if started here


@contextlib.contextmanager
def infrastructure(
    work: Path,
    bootstrap: str | None,
    database_url: str | None,
    brokers: int = 1,
    certificates: Certificates | None = None,
) -> Iterator[Infrastructure]:
    """The given broker (closed to strangers if given its `certificates`) and database, or a broker (a
    KRaft cluster of `brokers` nodes if more than one), closed as `make run`'s is, and a PostgreSQL
    cluster of our own."""
    if bootstrap is None:
        certificates = ensure_certificates(work / "kafka-tls")
    broker: KafkaBroker | KafkaCluster | None = None
    cluster: PostgresCluster | None = None
    clocks: dict[str, Callable[[], float]] = {}
    jit: Callable[[], float] | None = None
    try:
        if bootstrap is None and brokers > 1:
            broker = KafkaCluster(
                jar_dir=ensure_jars(KAFKA_DIR),
                data_dir=work / "kafka",
                size=brokers,
                certificates=certificates,
            )
            broker.start(timeout=180)
            bootstrap = broker.bootstrap
        elif bootstrap is None:
            broker = KafkaBroker(
                jar_dir=ensure_jars(KAFKA_DIR),
                data_dir=work / "kafka",
                port=free_port(),
                controller_port=free_port(),
                certificates=certificates,
            )
            broker.start(timeout=120)
            bootstrap = broker.bootstrap
            jvm = pid_running(str(broker.data_dir / "server.properties"))
            clocks["Kafka broker"] = partial(tree_cpu_seconds, jvm)
            jit = partial(jit_cpu_seconds, jvm)
        if database_url is None:
            cluster = PostgresCluster(settings=BENCH_POSTGRES)
            cluster.start()
            database_url = cluster.create_database("bench")
            assert cluster.pid is not None  # started
            clocks["PostgreSQL"] = partial(tree_cpu_seconds, cluster.pid)
        nodes = broker.nodes if isinstance(broker, KafkaCluster) else [broker] if broker else []
        yield Infrastructure(bootstrap, database_url, clocks, nodes, cluster, certificates, jit)
    finally:
        if broker is not None:
            broker.stop()
        if cluster is not None:
            cluster.stop()


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def peak_rss_mb(self) -> float:
        """VmHWM: the most resident memory the process ever had."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no VmHWM for {self.name}")
        return int(match.group(1)) / 1024

    def logged_errors(self) -> Counter[str]:
        """The final lines of the tracebacks in the service's log, counted: what failed, and how often."""
        lines = self.log.read_text(errors="replace").splitlines()
        return Counter(line[:200] for line in lines if _EXCEPTION_LINE.match(line))

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)


def service_of(name: str) -> str:
    """The service an instance runs: "gateway-2" is the second gateway."""
    return name.split("-")[0]


@dataclass
class Stack:
    """The running services and what a load generator needs: URLs, credentials, keys' home. Instances
    beyond the first of a service ("gateway-2") listen on ports of their own, in `ports`."""

    settings: Settings
    home: Path
    gateway_url: str
    audit_url: str
    services: dict[str, Service] = field(default_factory=dict)
    work: Path = Path(".")  # where the services' logs go
    env: dict[str, str] = field(default_factory=dict)  # what the service processes read
    identities: Certificates | None = None  # each service's Kafka identity, on a closed broker
    ports: dict[str, int] = field(default_factory=dict)  # extra HTTP ports; ingests' metrics ports

    def token(self, agency: str) -> str:
        return Profile(self.home, agency).credential()

    def url(self, name: str) -> str:
        """The base URL of an HTTP instance: "gateway", "audit-2", ..."""
        if name in self.ports:
            return f"http://127.0.0.1:{self.ports[name]}"
        return {"gateway": self.gateway_url, "audit": self.audit_url}[name]

    def instances(self, service: str) -> list[str]:
        return [name for name in self.services if service_of(name) == service]

    def spawn(self, name: str) -> Service:
        """Starts instance `name` as a process of its own (again, after a kill), appending to its log."""
        log = self.work / f"{name}.log"
        env = {**os.environ, **self.env}
        if self.identities is not None:  # every instance of a service is that service to the brokers
            env.update(self.identities.settings(service_of(name)))
        if name in self.ports:  # ingest's is its metrics port: each ingest process needs one of its own
            setting = "INGEST_METRICS" if service_of(name) == "ingest" else service_of(name).upper()
            env[f"DESKBRIDGE_{setting}_PORT"] = str(self.ports[name])
        with log.open("ab") as out:
            process = spawn_child(
                [sys.executable, "-m", f"services.{service_of(name)}"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        self.services[name] = Service(name, process, log)
        return self.services[name]

    def wait_ready(self, name: str, timeout: float = 60) -> None:
        """Until the service's HTTP API answers (ingest has none: it is ready once started)."""
        paths = {"gateway": "/healthz", "audit": "/v1/audit/events"}
        if service_of(name) in paths:
            wait_http(self.url(name) + paths[service_of(name)], self.services[name], timeout)

    def kill(self, name: str) -> int:
        """SIGKILL: no shutdown hook runs. Returns the exit status (-9)."""
        process = self.services[name].process
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        return process.wait()

    def check_alive(self) -> None:
        for service in self.services.values():
            if service.process.poll() is not None:
                tail = service.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{service.name} exited with {service.process.returncode}:\n{tail}")


def environment(settings: Settings) -> dict[str, str]:
    """What the service processes read: the same settings, plus the bench's raised limits."""
    return {
        "DESKBRIDGE_DATABASE_URL": settings.database_url,
        "DESKBRIDGE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "DESKBRIDGE_TOPIC_PREFIX": settings.topic_prefix,
        "DESKBRIDGE_GATEWAY_PORT": str(settings.gateway_port),
        "DESKBRIDGE_AUDIT_PORT": str(settings.audit_port),
        "DESKBRIDGE_DESK_KEYS_DIR": str(settings.desk_keys_dir),
        "DESKBRIDGE_LOG_LEVEL": "warning",
        **BENCH_ENVIRONMENT,
    }


async def enrol_bench_agencies(settings: Settings, home: Path) -> None:
    """The demo agencies (as `deskbridge up` enrols them), then the bench's readers, audited alike."""
    await prepare(settings, home)
    engine = make_engine(settings.database_url)
    publisher = EventPublisher(KafkaAccess.of(settings), "bench", Topics(settings.topic_prefix), 10)
    try:
        async with make_sessionmaker(engine)() as session:
            events = []
            for agency in (*READERS, FLASH_READER, PULL_READER):
                events += await enrol(session, home, agency, f"Bench reader {agency}", "partner")
            await session.commit()
        for event in events:
            await publisher.publish(event, "bench")
    finally:
        await publisher.close()
        await engine.dispose()


def wait_http(url: str, service: Service, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            break
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{service.name} did not come up at {url}:\n{service.log.read_text(errors='replace')}")


@contextlib.contextmanager
def running_stack(
    work: Path,
    bootstrap: str,
    database_url: str,
    extra_env: Mapping[str, str] | None = None,
    certificates: Certificates | None = None,
    replicas: int = 1,
) -> Iterator[Stack]:
    """The three services, `replicas` processes of each (the second "gateway-2", ...), each as its
    service's Kafka identity on a closed broker; `settings` are the administrator's."""
    home = work / "demo"
    settings = Settings(
        **(certificates.fields(ADMIN) if certificates else {}),
        database_url=database_url,
        kafka_bootstrap=bootstrap,
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        gateway_port=free_port(),
        audit_port=free_port(),
        desk_keys_dir=home / "kr-desk",
    )
    asyncio.run(enrol_bench_agencies(settings, home))
    stack = Stack(
        settings,
        home,
        f"http://127.0.0.1:{settings.gateway_port}",
        f"http://127.0.0.1:{settings.audit_port}",
        work=work,
        env={**environment(settings), **(extra_env or {})},
        identities=certificates,
    )
    extra = [f"{name}-{n}" for n in range(2, replicas + 1) for name in ("gateway", "ingest", "audit")]
    stack.ports = {name: free_port() for name in ("ingest", *extra)}
    try:
        for name in ("gateway", "ingest", "audit", *extra):
            stack.spawn(name)
        for name in stack.services:
            stack.wait_ready(name)
        yield stack
    finally:
        for service in stack.services.values():
            if service.process.poll() is None:
                service.process.terminate()
        for service in stack.services.values():
            try:
                service.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
