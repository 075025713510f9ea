"""`make faults` in short: each scenario of `python -m faults.run --quick` on Kafka and PostgreSQL of its
own (the broker and the database are killed, so not the session's), with its faults at random points of
a live load. Nothing acknowledged is lost or doubled, the audit log verifies, outages answer 503 only,
and with two of each service the standby audit takes over signing when the active one is killed.

The seed is drawn per run and named in every failure: `python -m faults.run --quick --seed N` replays
the same points."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from faults.chaos import ACTIVE_AUDIT, BROKER, DATABASE, POISON, SERVICES
from faults.run import QUICK
from faults.scenarios import Plan, run_scenario


def _named(plan: Plan) -> str:
    return "several" if plan.replicas > 1 else "cluster" if plan.brokers > 1 else "single"


@pytest.mark.parametrize("plan", QUICK, ids=_named)
def test_faults_under_load_lose_nothing(plan: Plan, tmp_path: Path) -> None:
    seed = int(time.time())
    outcome = run_scenario(plan, seed, tmp_path)
    verdict, chaos = outcome.verdict, outcome.chaos
    where = f"seed {seed}; logs in {tmp_path}"
    assert verdict.passed, f"{where}: {verdict.failures()}"

    # The faults did strike, each while the load still ran, and the checks had something to judge.
    struck = [fault.kind for fault in chaos.faults]
    assert len(struck) == len(plan.faults) * plan.rounds, struck
    assert all(fault.done_by_then < plan.notices for fault in chaos.faults), (where, chaos.faults)
    assert verdict.acked >= 0.95 * plan.notices, (where, verdict.refused)
    assert verdict.inbox_rows >= verdict.acked * plan.recipients
    assert verdict.audit_entries > verdict.acked and verdict.audit_verified
    if set(SERVICES) <= set(plan.faults):
        assert {f"SIGKILL {name}" for name in SERVICES} <= set(struck)
    if ACTIVE_AUDIT in plan.faults:
        # The standby took the lease and signed the next checkpoint while the killed one was down.
        assert not verdict.takeover_findings
        [takeover] = [fault for fault in chaos.faults if fault.kind.endswith("the active audit")]
        assert " took the lease after " in takeover.detail, takeover.detail
        assert {"SIGKILL gateway", "SIGKILL ingest"} <= set(struck)
    if BROKER in plan.faults:
        assert any(kind.startswith("SIGKILL Kafka broker") for kind in struck)
    if DATABASE in plan.faults:
        # Both APIs were asked during the outage and said 503 with Retry-After (else `passed` fails).
        assert chaos.outages and sum(verdict.outage_answers.values()) > 0
        assert any(key.startswith("POST /v1/envelopes 503") for key in verdict.outage_answers)
    if POISON in plan.faults:
        reasons = {letter.reason for letter in verdict.dead_letters}
        assert {"malformed", "bad_signature", "oversize"} <= reasons, reasons
