"""Run the real Apache Kafka broker (KRaft) as child processes: one node, or a cluster of three.

The broker jars come from Maven Central via ``deploy/kafka/pom.xml`` (see :func:`ensure_jars`), so
development and the test-suite talk to genuine Kafka rather than a fake. Each JVM plays both the
broker and the controller role; there is no ZooKeeper (Kafka 4 removed it). :class:`KafkaBroker` is
one node on its own; :class:`KafkaCluster` is three such nodes in one controller quorum, every topic
replicated three times and writable with two (``make faults`` kills one under load).

Given certificates (devstack.certs), a node is closed to strangers: every listener, the controllers'
too, speaks TLS and requires a client certificate signed by the CA; the StandardAuthorizer allows only
what an ACL grants (none: nothing), except to the brokers themselves and the ``admin`` identity, its
super users. Without them it is open plaintext, for tools that want a bare broker.

Run in the foreground::

    python -m devstack.kafka --data-dir var/kafka --port 9092 --controller-port 9093 --certs var/kafka-tls
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aiokafka.admin import AIOKafkaAdminClient

from devstack.certs import ADMIN, BROKER, Certificates, ensure_certificates
from devstack.processes import Started, spawn_child
from services.platform.kafka import KafkaAccess, principal

# In kafka_2.13 4.1.1 the storage tool is still the Scala object (not org.apache.kafka.tools.*).
_STORAGE_TOOL = "kafka.tools.StorageTool"
_BROKER_MAIN = "kafka.Kafka"
_NODE_ID = 1


def _has_jars(jar_dir: Path) -> bool:
    return all(any(jar_dir.glob(pattern)) for pattern in ("kafka_2.13-*.jar", "slf4j-simple-*.jar"))


def ensure_jars(kafka_dir: Path) -> Path:
    """Return the broker's jar directory, fetching the jars with Maven first if they are missing."""
    jar_dir = kafka_dir / "target" / "dependency"
    # slf4j-simple too: a jar dir fetched before it joined the pom would run the broker silently.
    if _has_jars(jar_dir):
        return jar_dir
    if shutil.which("mvn") is None:
        raise RuntimeError(f"Kafka jars missing in {jar_dir} and `mvn` is not on PATH to fetch them")
    proc = subprocess.run(
        ["mvn", "-q", "-B", "-Dstyle.color=never", "dependency:copy-dependencies"],
        cwd=kafka_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not _has_jars(jar_dir):
        output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # Maven colours even with -B
        tail = "\n".join(output.splitlines()[-40:])
        raise RuntimeError(f"`mvn dependency:copy-dependencies` in {kafka_dir} failed:\n{tail}")
    return jar_dir


def _access(bootstrap: str, certificates: Certificates | None, identity: str) -> KafkaAccess:
    if certificates is None:
        return KafkaAccess(bootstrap)
    return KafkaAccess.mutual_tls(
        bootstrap, certificates.ca, certificates.cert(identity), certificates.key(identity)
    )


def free_port() -> int:
    """Ask the kernel for an unused loopback port (racy by nature, good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _random_cluster_id() -> str:
    # Kafka cluster ids are a UUID in unpadded base64url (22 chars). Like Kafka's own
    # Uuid.randomUuid, avoid a leading '-' so the CLI parser can't mistake it for an option.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _tail(path: Path, lines: int = 40) -> str:
    """Last log lines, preceded by the last ERROR lines: a failed broker's tail is mostly shutdown noise."""
    try:
        with path.open(errors="replace") as fh:
            last: deque[str] = deque(maxlen=lines)
            errors: deque[str] = deque(maxlen=10)
            for line in fh:
                last.append(line)
                if " ERROR " in line or " FATAL " in line:
                    errors.append(line)
    except FileNotFoundError:
        return "(no log file)"
    head = f"--- last ERROR lines ---\n{''.join(errors)}--- last {lines} lines ---\n" if errors else ""
    return head + "".join(last)


async def _probe_async(access: KafkaAccess, node_id: int) -> bool:
    admin = AIOKafkaAdminClient(**access.client_args(), request_timeout_ms=5000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        # A broker still fenced by the controller answers metadata without listing itself;
        # only an unfenced broker (one that can host partitions) counts as ready.
        listed = {broker.get("node_id") for broker in cluster.get("brokers", [])}
        return node_id in listed and cluster.get("controller_id", -1) >= 0
    finally:
        await admin.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _probe(access: KafkaAccess, port: int, node_id: int = _NODE_ID) -> bool:
    """Synchronous readiness check: the listener accepts connections AND metadata shows the broker.

    The aiokafka probe runs in its own thread with its own event loop so ``start()`` works
    whether or not the caller is already inside a running loop (e.g. an async test).
    """
    if not _port_open(port):  # cheap pre-check; also keeps aiokafka from logging connect errors
        return False
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            return pool.submit(asyncio.run, _probe_async(access, node_id)).result(timeout=15)
        except Exception:  # any connection/protocol error just means "not ready yet"
            return False


@dataclass
class KafkaBroker(Started):
    """A KRaft Kafka node (broker and controller) whose state lives under ``data_dir``: on its own by
    default, or one voter of a :class:`KafkaCluster` when given ``quorum`` and ``cluster_id``.

    ``start()`` after ``stop()``/``kill()`` reuses the formatted storage, so records survive.
    """

    jar_dir: Path
    data_dir: Path
    port: int
    controller_port: int
    heap: str = "512m"
    log_file: Path | None = None
    node_id: int = _NODE_ID
    quorum: str | None = None  # controller.quorum.voters of a cluster; None: this node votes alone
    cluster_id: str | None = None  # shared by a cluster's nodes; None: a fresh one when formatting
    replicas: int = 1  # replication factor of every topic, the internal ones included
    min_insync: int = 1  # replicas that must hold a record before an acks=all write returns
    certificates: Certificates | None = None  # TLS with client certificates and ACLs; None: open plaintext
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_fh: IO[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.jar_dir = Path(self.jar_dir).resolve()
        self.data_dir = Path(self.data_dir).resolve()
        if self.log_file is None:
            self.log_file = self.data_dir / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def access(self, identity: str = ADMIN) -> KafkaAccess:
        """How a client with this identity (devstack.certs.IDENTITIES) reaches the node."""
        return _access(self.bootstrap, self.certificates, identity)

    @property
    def _log_path(self) -> Path:
        assert self.log_file is not None  # set in __post_init__
        return self.log_file

    @property
    def _config_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def _log_dir(self) -> Path:
        return self.data_dir / "logs"

    def _classpath(self) -> str:
        return str(self.jar_dir / "*")

    def _java(self) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseSerialGC",  # smallest footprint; a test broker has no GC-pause budget to protect
            "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
            "-cp",
            self._classpath(),
        ]

    def _listeners(self) -> dict[str, str]:
        if self.certificates is None:
            return {
                "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
                "inter.broker.listener.name": "PLAINTEXT",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            }
        certs = self.certificates
        return {
            "listeners": f"SSL://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"SSL://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "SSL",
            # The controllers too: a plaintext controller listener would let anyone on the host in as
            # User:ANONYMOUS, which the brokers' own connections to it would need as a super user.
            "listener.security.protocol.map": "SSL:SSL,CONTROLLER:SSL",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(certs.keystore(BROKER)),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(certs.ca),
            "ssl.client.auth": "required",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"{principal(BROKER)};{principal(ADMIN)}",
        }

    def _properties(self) -> str:
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            # Static voter set: the controller endpoint comes from config on every start instead
            # of being frozen into the metadata log (as --standalone does), so it stays flexible.
            "controller.quorum.voters": self.quorum or f"{self.node_id}@127.0.0.1:{self.controller_port}",
            **self._listeners(),
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self._log_dir),
            # A single node: every internal topic must make do with one replica; a cluster: all of them.
            "offsets.topic.replication.factor": str(self.replicas),
            "transaction.state.log.replication.factor": str(self.replicas),
            "transaction.state.log.min.isr": str(self.min_insync),
            "share.coordinator.state.topic.replication.factor": str(self.replicas),
            "share.coordinator.state.topic.min.isr": str(self.min_insync),
            "min.insync.replicas": str(self.min_insync),
            "default.replication.factor": str(self.replicas),
            # Fewer internal partitions make the first group/transaction coordinator load fast.
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.num.partitions": "10",
            "num.partitions": "3",
            "group.initial.rebalance.delay.ms": "0",
            # Topics are created explicitly; a typo must fail instead of silently making a topic.
            "auto.create.topics.enable": "false",
            "message.max.bytes": str(2 * 1024 * 1024),
            # After a crash (kill()) the controller keeps the dead incarnation registered until its
            # session expires, and the restarted broker can't register before that (default 9 s).
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "500",
            # Defaults are sized for big servers: 128 MiB cleaner buffer and 8 I/O threads.
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            "num.io.threads": "4",
            "num.network.threads": "2",
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _is_formatted(self) -> bool:
        return (self._log_dir / "meta.properties").exists()

    def _format(self) -> None:
        cmd = [
            *self._java(),
            _STORAGE_TOOL,
            "format",
            "--config",
            str(self._config_path),
            "--cluster-id",
            self.cluster_id or _random_cluster_id(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
            raise RuntimeError(f"Formatting Kafka storage in {self._log_dir} failed:\n{tail}")

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The JVM's process id, once launched."""
        return None if self._proc is None else self._proc.pid

    def start(self, timeout: float = 60.0) -> None:
        """Launch the broker and block until it serves metadata; raise RuntimeError otherwise."""
        if self.is_running():
            return
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the JVM without waiting: a cluster's nodes must all be launched before any is ready."""
        self._cleanup()  # forget a broker that died on its own since the last start
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._config_path.write_text(self._properties())
        if not self._is_formatted():  # only on first start: restarts must find their old data
            self._format()
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_fh = self._log_path.open("ab")  # append: keep earlier runs' logs for post-mortems
        # Its own process group (Ctrl-C in a terminal doesn't hit the JVM first), killed if we die.
        self._proc = spawn_child(
            [*self._java(), _BROKER_MAIN, str(self._config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the launched broker serves metadata listing itself; raise RuntimeError otherwise."""
        assert self._proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._cleanup()
                raise RuntimeError(
                    f"Kafka broker exited with code {code} during startup; last log lines of "
                    f"{self._log_path}:\n{_tail(self._log_path)}"
                )
            if _probe(self.access(), self.port, self.node_id):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"Kafka broker not ready after {timeout:.0f}s; last log lines of "
                    f"{self._log_path}:\n{_tail(self._log_path)}"
                )
            time.sleep(0.5)

    def stop(self, timeout: float = 20.0) -> None:
        """Graceful shutdown (SIGTERM lets Kafka flush and close its logs), SIGKILL as a fallback."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait()
        self._cleanup()

    def kill(self) -> None:
        """Crash the broker (SIGKILL, no shutdown hooks), for fault-injection tests."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal(signal.SIGKILL)
            self._proc.wait()
        self._cleanup()

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            # The JVM leads its own session, so signalling the group also reaches any helpers.
            os.killpg(self._proc.pid, sig)

    def _cleanup(self) -> None:
        self._proc = None
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None


@dataclass
class KafkaCluster(Started):
    """``size`` KRaft nodes under ``data_dir``, each broker and controller, all voters of one quorum.

    Every topic gets ``size`` replicas and ``min.insync.replicas`` of ``min_insync``, so an acks=all
    write survives the loss of ``size - min_insync`` nodes. Kill or restart one with ``nodes[i]``.
    """

    jar_dir: Path
    data_dir: Path
    size: int = 3
    min_insync: int = 2
    heap: str = "512m"
    certificates: Certificates | None = None  # as KafkaBroker's, shared by every node
    nodes: list[KafkaBroker] = field(init=False)

    def __post_init__(self) -> None:
        ports = [(free_port(), free_port()) for _ in range(self.size)]
        quorum = ",".join(f"{i}@127.0.0.1:{controller}" for i, (_, controller) in enumerate(ports, 1))
        cluster_id = _random_cluster_id()
        self.nodes = [
            KafkaBroker(
                jar_dir=self.jar_dir,
                data_dir=Path(self.data_dir) / f"node-{i}",
                port=port,
                controller_port=controller,
                heap=self.heap,
                node_id=i,
                quorum=quorum,
                cluster_id=cluster_id,
                replicas=self.size,
                min_insync=self.min_insync,
                certificates=self.certificates,
            )
            for i, (port, controller) in enumerate(ports, 1)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def access(self, identity: str = ADMIN) -> KafkaAccess:
        return _access(self.bootstrap, self.certificates, identity)

    def start(self, timeout: float = 120.0) -> None:
        """Launch every node, then wait for each: none is ready before a majority of voters is up."""
        try:
            for node in self.nodes:
                if not node.is_running():
                    node.launch()
            deadline = time.monotonic() + timeout
            for node in self.nodes:
                node.wait_ready(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 20.0) -> None:
        for node in self.nodes:
            node.stop(timeout)


def main(argv: list[str] | None = None) -> int:
    repo_root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description="Run a single-node KRaft Kafka broker in the foreground.")
    parser.add_argument("--data-dir", type=Path, default=Path("var/kafka"))
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--controller-port", type=int, default=9093)
    parser.add_argument("--heap", default="512m")
    parser.add_argument("--kafka-dir", type=Path, default=repo_root / "deploy" / "kafka")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--certs",
        type=Path,
        help="TLS with client certificates and ACLs, the certificates in this folder "
        "(made when missing); without it the broker is open plaintext",
    )
    args = parser.parse_args(argv)

    broker = KafkaBroker(
        jar_dir=ensure_jars(args.kafka_dir),
        data_dir=args.data_dir,
        port=args.port,
        controller_port=args.controller_port,
        heap=args.heap,
        certificates=ensure_certificates(args.certs) if args.certs else None,
    )
    stop_requested = threading.Event()

    def _request_stop(signum: int, frame: object) -> None:
        stop_requested.set()

    # SIGTERM (e.g. from a supervisor) gets the same clean shutdown as Ctrl-C.
    signal.signal(signal.SIGTERM, _request_stop)
    try:
        broker.start(timeout=args.timeout)
        print(
            f"Kafka broker ready on {broker.bootstrap} (log: {broker.log_file}); Ctrl-C to stop.", flush=True
        )
        while not stop_requested.is_set():
            if not broker.is_running():
                print(f"Kafka broker exited unexpectedly; see {broker.log_file}", flush=True)
                return 1
            stop_requested.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        print("Stopping Kafka broker...", flush=True)
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
