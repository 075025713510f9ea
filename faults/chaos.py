"""The faults themselves, injected while the load runs: SIGKILL and restart of a service (or of the audit
replica holding the checkpoint lease, whose standby must take over) or a Kafka broker, a database that
goes away for a while, poison records written straight into the notices topic. A supervisor restarts
any service that dies on its own and records it: that is a crash, not a fault."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx

from bench.load import Keyring
from bench.stack import READERS, SENDERS, Infrastructure, Stack
from faults.traffic import Traffic, timed
from services.envelope.service import MAX_ENVELOPE_BYTES
from services.platform.kafka import KafkaAccess, Topics, cloud_headers, make_producer

SERVICES = ("gateway", "ingest", "audit")
ACTIVE_AUDIT = "active audit"  # with a standby: the replica that holds the checkpoint lease
DATABASE = "database"
BROKER = "broker"
POISON = "poison"
OUTAGE_PROBE_S = 0.25  # how often each API is asked during a database outage


@dataclass(frozen=True)
class Fault:
    """One fault as it happened, timed in seconds since the load began."""

    kind: str  # "SIGKILL gateway", "SIGKILL Kafka broker 2", "database down 10 s", "poison records"
    at: float
    done_by_then: int  # notices answered (2xx or refused for good) when it struck
    back: float  # when the part answered again (the fault's end)
    detail: str


@dataclass(frozen=True)
class Poison:
    """A record written straight into the notices topic, and the reason ingest must dead-letter it for."""

    kind: str
    expected_reason: str
    size: int
    partition: int
    offset: int


@dataclass
class Chaos:
    faults: list[Fault] = field(default_factory=list)
    outages: list[tuple[float, float]] = field(default_factory=list)  # the database gone: (from, to)
    poison: list[Poison] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)  # services that died without being killed
    takeover_findings: list[str] = field(default_factory=list)  # the standby did not take over and sign
    quiet: set[str] = field(default_factory=set)  # services being killed on purpose right now


def plan_faults(
    kinds: Sequence[str], rounds: int, rng: random.Random, window: tuple[float, float] = (0.05, 0.85)
) -> list[tuple[float, str]]:
    """Each kind `rounds` times, in random order, each at a random share of the load within `window`."""
    chosen = [kind for kind in kinds for _ in range(rounds)]
    rng.shuffle(chosen)
    points = sorted(rng.uniform(*window) for _ in chosen)
    return list(zip(points, chosen, strict=True))


async def supervise(stack: Stack, chaos: Chaos, traffic: Traffic, stop: asyncio.Event) -> None:
    """Restarts a service that exited without being killed, as a process supervisor would, and notes it."""
    while not stop.is_set():
        for name, service in list(stack.services.items()):
            code = service.process.poll()
            if code is None or name in chaos.quiet:
                continue
            lines = service.logged_errors()
            last = next(reversed(lines), "no exception in its log") if lines else "no exception in its log"
            chaos.crashes.append(f"{name} exited with {code} at {traffic.now():.1f} s: {last}")
            await asyncio.to_thread(stack.spawn, name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def kill_service(stack: Stack, chaos: Chaos, traffic: Traffic, name: str, rng: random.Random) -> Fault:
    chaos.quiet.add(name)
    try:
        at = traffic.now()
        code = await asyncio.to_thread(stack.kill, name)
        await asyncio.sleep(rng.uniform(0, 2))  # a supervisor's restart delay
        await asyncio.to_thread(stack.spawn, name)
        await asyncio.to_thread(stack.wait_ready, name, 180)
    finally:
        chaos.quiet.discard(name)
    return Fault(f"SIGKILL {name}", at, 0, traffic.now(), f"exit status {code}, restarted")


TAKEOVER_PATIENCE_S = 60.0


async def _lease_status(client: httpx.AsyncClient, url: str) -> dict[str, object]:
    """An audit replica's view of the checkpoint lease (/healthz); empty if it does not answer."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        lease = (await client.get(f"{url}/healthz")).json().get("checkpoints")
        return lease if isinstance(lease, dict) else {}
    return {}


async def _checkpoint_size(client: httpx.AsyncClient, url: str) -> int:
    """The size in the latest checkpoint the replica serves (the note's second line), 0 if none yet."""
    with contextlib.suppress(httpx.HTTPError, ValueError, IndexError):
        answer = await client.get(f"{url}/v1/audit/checkpoint")
        if answer.status_code == 200:
            return int(answer.text.splitlines()[1])
    return 0


async def kill_active_audit(stack: Stack, chaos: Chaos, traffic: Traffic) -> Fault:
    """SIGKILL of the audit replica that holds the checkpoint lease. The standby must take the lease over
    and sign the next checkpoint before the killed one comes back, so nobody else could have signed it;
    what fails of that goes into `chaos.takeover_findings`."""
    replicas = stack.instances("audit")
    headers = {"Authorization": f"Bearer {stack.token('auditor')}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        roles = {name: await _lease_status(client, stack.url(name)) for name in replicas}
        active = [name for name, lease in roles.items() if lease.get("role") == "active"]
        if len(active) != 1:
            chaos.takeover_findings.append(f"not one active audit replica before the kill: {roles}")
        killed = active[0] if active else replicas[0]
        standby = [name for name in replicas if name != killed]
        chaos.quiet.add(killed)
        try:
            at = traffic.now()
            await asyncio.to_thread(stack.kill, killed)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + TAKEOVER_PATIENCE_S
            taker = None
            while taker is None and loop.time() < deadline:
                await asyncio.sleep(0.2)
                roles = {name: await _lease_status(client, stack.url(name)) for name in standby}
                taker = next((name for name, lease in roles.items() if lease.get("role") == "active"), None)
            took = traffic.now() - at
            signed, before = 0, 0
            if taker is None:
                chaos.takeover_findings.append(f"no standby took the lease in {TAKEOVER_PATIENCE_S:.0f} s")
            else:
                before = await _checkpoint_size(client, stack.url(taker))
                while signed <= before and loop.time() < deadline:
                    await asyncio.sleep(0.2)
                    signed = await _checkpoint_size(client, stack.url(taker))
                if signed <= before:
                    chaos.takeover_findings.append(f"{taker} took the lease but signed no checkpoint")
            await asyncio.to_thread(stack.spawn, killed)
            await asyncio.to_thread(stack.wait_ready, killed, 180)
        finally:
            chaos.quiet.discard(killed)
    detail = f"{taker} took the lease after {took:.1f} s and signed checkpoint {signed} (after {before})"
    return Fault(f"SIGKILL {killed}, the active audit", at, 0, traffic.now(), detail)


async def kill_broker(infra: Infrastructure, traffic: Traffic, rng: random.Random) -> Fault:
    index = rng.randrange(len(infra.kafka))
    node = infra.kafka[index]
    at = traffic.now()
    await asyncio.to_thread(node.kill)
    await asyncio.sleep(rng.uniform(1, 5))
    await asyncio.to_thread(node.start, 180)
    which = f"Kafka broker {node.node_id} of {len(infra.kafka)}" if len(infra.kafka) > 1 else "Kafka broker"
    return Fault(f"SIGKILL {which}", at, 0, traffic.now(), "restarted on its own data")


async def database_outage(
    stack: Stack, infra: Infrastructure, chaos: Chaos, traffic: Traffic, keyring: Keyring, hold: float
) -> Fault:
    """SIGKILL of PostgreSQL (every backend with it), `hold` seconds without it while both APIs are
    asked what they can do, then a restart with crash recovery."""
    database = infra.database
    if database is None:
        raise RuntimeError("a database outage needs the database this run started")
    at = traffic.now()
    await asyncio.to_thread(database.kill)
    down = traffic.now()
    await probe_apis(stack, traffic, keyring, hold)
    up = traffic.now()
    chaos.outages.append((down, up))
    await asyncio.to_thread(database.start, 120)
    return Fault(f"database down {hold:.0f} s", at, 0, traffic.now(), "SIGKILL of PostgreSQL, then a restart")


async def probe_apis(stack: Stack, traffic: Traffic, keyring: Keyring, seconds: float) -> None:
    """Asks the gateway (submit, inbox, notice status) and the audit API (events, checkpoint) in turn
    for `seconds`; each answer goes into `traffic` for the outage check. A 2xx to a submission counts
    the notice as acknowledged, so the lost check holds it to that."""
    sealed = traffic.seal(keyring, SENDERS[0], READERS[:3])
    known = next(iter(traffic.acked), sealed.notice_id)
    clients = {
        name: httpx.AsyncClient(
            base_url=stack.audit_url if name == "auditor" else stack.gateway_url,
            headers={"Authorization": f"Bearer {stack.token(name)}"},
            timeout=30,
        )
        for name in (SENDERS[0], READERS[0], "auditor")
    }

    async def submit() -> None:
        answer = await timed(traffic, clients[SENDERS[0]], "POST", "/v1/envelopes", content=sealed.raw)
        if answer.status.startswith("2"):  # Kafka holds it, whatever else failed: it must arrive
            traffic.acked[sealed.notice_id] = sealed

    calls: list[Callable[[], Awaitable[object]]] = [
        submit,
        lambda: timed(traffic, clients[READERS[0]], "GET", "/v1/inbox"),
        lambda: timed(traffic, clients[SENDERS[0]], "GET", f"/v1/notices/{known}"),
        lambda: timed(traffic, clients["auditor"], "GET", "/v1/audit/events"),
        lambda: timed(traffic, clients["auditor"], "GET", "/v1/audit/checkpoint"),
    ]
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    try:
        while loop.time() < until:
            await asyncio.gather(*(call() for call in calls))
            await asyncio.sleep(OUTAGE_PROBE_S)
    finally:
        for client in clients.values():
            await client.aclose()


def _tampered_signature(raw: bytes) -> bytes:
    """The envelope with one bit of its outer signature flipped: valid JSON, valid shape, forged."""
    envelope = json.loads(raw)
    signature = bytearray(base64.urlsafe_b64decode(envelope["signature"] + "=="))
    signature[0] ^= 1
    envelope["signature"] = base64.urlsafe_b64encode(bytes(signature)).rstrip(b"=").decode()
    return json.dumps(envelope, separators=(",", ":")).encode()


def poison_records(keyring: Keyring) -> list[tuple[str, str, bytes]]:
    """(kind, reason ingest must give, bytes) of each poison record."""
    sealed = keyring.seal(SENDERS[1], READERS[:3])
    huge = b'{"payload":"' + b"A" * (MAX_ENVELOPE_BYTES + 1024) + b'"}'
    return [
        ("garbage bytes", "malformed", os.urandom(4096)),
        ("valid JSON, not an envelope", "malformed", b'{"notice":"hello","recipients":["bench-01"]}'),
        ("valid envelope JSON, forged outer signature", "bad_signature", _tampered_signature(sealed.raw)),
        (f"huge record ({len(huge):,} bytes)", "oversize", huge),
    ]


async def inject_poison(stack: Stack, chaos: Chaos, traffic: Traffic, keyring: Keyring) -> Fault:
    """Writes the poison records straight into the notices topic, as a broken producer would (a hostile one
    is refused by the broker's ACLs: only the gateway's identity writes there; this is the administrator)."""
    at = traffic.now()
    topics = Topics(stack.settings.topic_prefix)
    producer = make_producer(KafkaAccess.of(stack.settings), "faults-poison")
    await producer.start()
    try:
        for kind, reason, value in poison_records(keyring):
            headers = cloud_headers(
                "org.deskbridge.notice.submitted", f"poison-{len(chaos.poison)}", "faults"
            )
            sent = await producer.send_and_wait(topics.notices, value, key=b"KD-POISON", headers=headers)
            chaos.poison.append(Poison(kind, reason, len(value), sent.partition, sent.offset))
    finally:
        await producer.stop()
    kinds = ", ".join(p.kind for p in chaos.poison[-4:])
    return Fault("poison records", at, 0, traffic.now(), kinds)


@dataclass(frozen=True)
class Arena:
    """Everything a fault strikes or records into."""

    stack: Stack
    infra: Infrastructure
    chaos: Chaos
    traffic: Traffic
    keyring: Keyring
    rng: random.Random
    outage_s: tuple[float, float]  # how long the database stays away, drawn from this range


async def strike(kind: str, at: Arena) -> Fault:
    if kind in SERVICES:
        return await kill_service(at.stack, at.chaos, at.traffic, kind, at.rng)
    if kind == ACTIVE_AUDIT:
        return await kill_active_audit(at.stack, at.chaos, at.traffic)
    if kind == BROKER:
        return await kill_broker(at.infra, at.traffic, at.rng)
    if kind == DATABASE:
        hold = at.rng.uniform(*at.outage_s)
        return await database_outage(at.stack, at.infra, at.chaos, at.traffic, at.keyring, hold)
    if kind == POISON:
        return await inject_poison(at.stack, at.chaos, at.traffic, at.keyring)
    raise ValueError(f"no such fault: {kind}")


async def run_faults(
    schedule: Sequence[tuple[float, str]], total: int, at: Arena, load_done: asyncio.Event
) -> None:
    """Each fault once its share of the load is answered, one at a time, at least 3 s apart."""
    for share, kind in schedule:
        while len(at.traffic.acked) + len(at.traffic.refused) < share * total and not load_done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(load_done.wait(), 0.1)
        done = len(at.traffic.acked) + len(at.traffic.refused)
        fault = await strike(kind, at)
        at.chaos.faults.append(dataclasses.replace(fault, done_by_then=done))
        await asyncio.sleep(3)
