"""A scenario: the stack on Kafka and PostgreSQL of its own, a bounded load, faults at random points of
it, then the checks. `run_scenario` is what `python -m faults.run` and tests/faults/test_scenarios.py call."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import Keyring
from bench.stack import Infrastructure, Stack, infrastructure, running_stack
from faults.chaos import (
    ACTIVE_AUDIT,
    BROKER,
    DATABASE,
    POISON,
    SERVICES,
    Arena,
    Chaos,
    plan_faults,
    run_faults,
    supervise,
)
from faults.checks import Verdict, judge
from faults.fuzz import FuzzReport, demo_credentials, run_fuzz
from faults.traffic import Traffic, drive
from services.platform.database import make_engine

# Checkpoints every second, so the auditor's verification covers the whole log soon after the load; a
# short lease, so a standby audit takes over within seconds.
FAULTS_ENVIRONMENT = {"DESKBRIDGE_CHECKPOINT_INTERVAL_S": "1", "DESKBRIDGE_AUDIT_LEASE_S": "3"}
EVERY_FAULT = (*SERVICES, BROKER, DATABASE, POISON)
# Two of each: the active audit, the first gateway and the first ingest killed; their twins carry on.
SEVERAL_OF_EACH = (ACTIVE_AUDIT, "gateway", "ingest")


@dataclass(frozen=True)
class Plan:
    name: str
    notices: int
    recipients: int
    connections: int
    rate: float  # notices started per second at most, so the faults strike while the load still runs
    faults: tuple[str, ...]  # what strikes, each `rounds` times at random points
    rounds: int
    outage_s: tuple[float, float]  # how long the database stays away, drawn from this range
    brokers: int = 1  # more than one: a KRaft cluster, every topic replicated on all of them
    patience: float = 120  # seconds the checks wait for the stack to catch up once nothing moves
    replicas: int = 1  # processes of each service (two: "gateway" and "gateway-2", ...)
    window: tuple[float, float] = (0.05, 0.85)  # the shares of the load the faults strike within


@dataclass
class Outcome:
    plan: Plan
    seed: int
    traffic: Traffic
    chaos: Chaos
    verdict: Verdict
    load_s: float
    took_s: float
    logged_errors: dict[str, Counter[str]] = field(default_factory=dict)
    fuzz: FuzzReport | None = None  # schemathesis, when it ran on this scenario's stack


async def under_faults(stack: Stack, infra: Infrastructure, plan: Plan, rng: random.Random) -> Outcome:
    began = time.monotonic()
    engine = make_engine(stack.settings.database_url)
    keyring = Keyring(stack.home)
    traffic, chaos = Traffic(), Chaos()
    load_done, supervising = asyncio.Event(), asyncio.Event()
    schedule = plan_faults(plan.faults, plan.rounds, rng, plan.window)

    async def load() -> None:
        try:
            await drive(stack, keyring, traffic, plan.notices, plan.recipients, plan.connections, plan.rate)
        finally:
            load_done.set()

    supervisor = asyncio.create_task(supervise(stack, chaos, traffic, supervising))
    try:
        await asyncio.gather(
            load(),
            run_faults(
                schedule,
                plan.notices,
                Arena(stack, infra, chaos, traffic, keyring, rng, plan.outage_s),
                load_done,
            ),
        )
        load_s = traffic.now()
        verdict = await judge(stack, engine, traffic, chaos, plan.patience)
    finally:
        supervising.set()
        with contextlib.suppress(Exception):
            await supervisor
        await engine.dispose()
    verdict.crashes = list(chaos.crashes)  # the checks ran while the supervisor still watched
    return Outcome(
        plan,
        0,
        traffic,
        chaos,
        verdict,
        load_s,
        time.monotonic() - began,
        {name: service.logged_errors() for name, service in stack.services.items()},
    )


async def _fuzz(stack: Stack, examples: int, seed: int) -> FuzzReport:
    """Schemathesis on both APIs (faults/fuzz.py), last: it registers agencies and keys of its own."""
    return await run_fuzz(
        stack.gateway_url, stack.audit_url, demo_credentials(stack.home), examples, seed=seed
    )


def run_scenario(plan: Plan, seed: int, work: Path, fuzz_examples: int = 0) -> Outcome:
    """Starts Kafka (`plan.brokers` nodes), PostgreSQL and the three services under `work`, runs the
    plan with faults drawn from `seed`, checks, optionally fuzzes, and stops everything."""
    rng = random.Random(seed)
    with (
        infrastructure(work, None, None, plan.brokers) as infra,
        running_stack(
            work, infra.bootstrap, infra.database_url, FAULTS_ENVIRONMENT, infra.certificates, plan.replicas
        ) as stack,
    ):
        outcome = asyncio.run(under_faults(stack, infra, plan, rng))
        outcome.seed = seed
        if fuzz_examples:
            outcome.fuzz = asyncio.run(_fuzz(stack, fuzz_examples, seed))
    return outcome
