"""docs/reliability.md from the scenarios' outcomes: what was struck, when, and what held afterwards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from bench.report import Machine, table
from faults.chaos import ACTIVE_AUDIT
from faults.scenarios import Outcome

SHOWN = 10


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{key}: {value:,}" for key, value in sorted(counter.items())) or "none"


def _check(passed: bool) -> str:
    return "holds" if passed else "**FAILS**"


def headline(outcome: Outcome) -> list[tuple[str, str, str]]:
    """(check, figure, verdict) for the summary table."""
    v = outcome.verdict
    return [
        (
            "acknowledged (2xx) = in every recipient's inbox",
            f"{v.acked:,} acknowledged, {v.inbox_rows:,} inbox rows, "
            f"{len(v.lost)} (notice, recipient) missing",
            _check(not v.lost),
        ),
        ("no inbox row twice", f"{len(v.duplicated)} duplicated", _check(not v.duplicated)),
        (
            "audit log holds every fact once",
            f"{v.audit_entries:,} entries, {len(v.audit_missing)} facts missing, "
            f"{len(v.audit_duplicated)} twice, {len(v.chain_breaks)} chain breaks",
            _check(not (v.audit_missing or v.audit_duplicated or v.chain_breaks)),
        ),
        ("`deskbridge audit verify` as the auditor", v.audit_verify or "not run", _check(v.audit_verified)),
        (
            "database outage: only 503 with Retry-After",
            f"{sum(v.outage_answers.values()):,} answers in {len(outcome.chaos.outages)} outage(s), "
            f"{len(v.outage_violations)} otherwise",
            _check(not v.outage_violations) if outcome.chaos.outages else "not struck",
        ),
        (
            "poison records dead-lettered with their reason",
            f"{len(outcome.chaos.poison)} injected, {len(v.dead_letters)} dead letters, "
            f"{len(v.poison_findings)} findings",
            _check(not v.poison_findings) if outcome.chaos.poison else "not struck",
        ),
        ("no service died on its own", f"{len(v.crashes)} crashes", _check(not v.crashes)),
        (
            "the standby audit takes the lease over and signs the next checkpoint",
            "; ".join(f.detail for f in outcome.chaos.faults if f.kind.endswith("the active audit"))
            or "not struck",
            _check(not v.takeover_findings) if ACTIVE_AUDIT in outcome.plan.faults else "not struck",
        ),
    ]


def section(outcome: Outcome) -> str:
    plan, v, traffic = outcome.plan, outcome.verdict, outcome.traffic
    brokers = f"a {plan.brokers}-broker KRaft cluster" if plan.brokers > 1 else "one Kafka broker"
    parts = [
        f"## {plan.name}\n",
        f"{plan.notices:,} notices to {plan.recipients} recipients each over {plan.connections} connections, "
        f"at most {plan.rate:g} started a second, on {brokers}; seed {outcome.seed}. The load took "
        f"{outcome.load_s:.0f} s, the whole scenario with its checks {outcome.took_s:.0f} s; every inbox "
        f"row was in place {v.settled_after_s:.1f} s after the load ended. Result: "
        f"**{'passed' if v.passed else 'FAILED'}**.\n",
        table(["check", "figure", "verdict"], headline(outcome)),
        "### Faults, in the order they struck\n",
        table(
            ["at (s)", "fault", "notices answered by then", "back at (s)", "detail"],
            [
                (f"{f.at:.1f}", f.kind, f"{f.done_by_then:,}", f"{f.back:.1f}", f.detail)
                for f in outcome.chaos.faults
            ],
        ),
        "### What the clients saw\n",
        f"- `POST /v1/envelopes` answers: {_counts(traffic.statuses())}; {traffic.resent():,} notices "
        "needed more than one post (their first answer was a 503, a 429 or lost with the connection), each "
        "re-post the very same bytes.",
        f"- Notices given up for good: {_counts(v.refused)}.",
        f"- Delivered although the client never saw a 2xx (its answer was lost in a kill): "
        f"{len(v.delivered_without_2xx):,}; such a notice is the sender's to re-post, and a re-post is "
        "recognised as the same submission.",
    ]
    if outcome.chaos.outages:
        parts.append(f"- Answers inside the database outages: {_counts(v.outage_answers)}.")
    if v.dead_letters:
        reasons = Counter(d.reason for d in v.dead_letters)
        parts.append(f"- Dead letters by reason: {_counts(reasons)}.")
    errors = {name: sum(c.values()) for name, c in outcome.logged_errors.items() if c}
    if errors:
        parts.append(
            "- Exceptions the services logged while their peers were down (retried, nothing lost): "
            + ", ".join(f"{name} {count}" for name, count in errors.items())
            + "."
        )
    failures = v.failures()
    if failures:
        parts += ["", "### Failures\n", *(f"- {line}" for line in failures[:SHOWN])]
    return "\n".join(parts) + "\n"


def markdown(outcomes: Sequence[Outcome], fuzz: str | None, machine: Machine, command: str) -> str:
    lines = [
        "# Reliability: faults lose nothing\n",
        f"Measured by `{command}` on {machine.date}, commit {machine.commit}: {machine.cpu}, "
        f"{machine.cores} cores, {machine.memory_gb:.0f} GiB; Python {machine.python}, "
        f"Kafka {machine.kafka}, {machine.postgres}.\n",
        "Each scenario starts its own Kafka and PostgreSQL and the three services as processes of their "
        "own, drives a bounded load through the gateway like a careful client (each notice sealed once; "
        "after a 503, a 429 or a lost answer it posts the same bytes again), and at random points of the "
        "load kills with SIGKILL and restarts the broker, the gateway, ingest and audit, kills the "
        "database and keeps it away for a while (asking both APIs all along), and writes poison records "
        "straight into the notices topic. Then it waits for the stack to settle and checks, from the "
        "database, from Kafka and through the auditor's own `deskbridge audit verify`.\n",
        "With two of each service (two gateways, two ingest processes, an active and a standby audit on "
        "the same Kafka and PostgreSQL) the load is spread over both gateways and a client's retry goes "
        "to the other one; the gateway, ingest and the audit process holding the checkpoint lease are "
        "killed, and the standby must take the lease over and sign the next checkpoint before the killed "
        'one is back (docs/audit.md, "Active and standby"). Ingest and audit processes share their '
        "consumer groups, so the survivor takes over the partitions; each gateway follows the deliveries "
        "topic without a group, so long-polls on either see every delivery; rate limits are per agency "
        "and gateway.\n",
        "Why nothing acknowledged can be lost or doubled: the gateway answers 2xx only once Kafka holds the "
        "envelope (acks=all, idempotent producer), so a kill before that leaves the client without a 2xx "
        "and it posts again; the same bytes again get the same 202, even when the gateway died before "
        "recording the first. Ingest and audit commit their Kafka offsets only after their database "
        "transaction, so a kill replays a batch, and every write is keyed (one inbox row per notice and "
        "recipient, one audit entry per event id), so a replay adds nothing. An outage of the database or "
        "of Kafka is answered 503 with `Retry-After` by the APIs and retried by the consumers; it never "
        "sends a record to the dead-letter topic (services/platform/outage.py).\n",
        table(
            ["scenario", "notices acknowledged", "lost", "duplicated", "audit verifies", "result"],
            [
                (
                    o.plan.name,
                    f"{o.verdict.acked:,}",
                    str(len(o.verdict.lost)),
                    str(len(o.verdict.duplicated)),
                    "yes" if o.verdict.audit_verified else "**no**",
                    "passed" if o.verdict.passed else "**FAILED**",
                )
                for o in outcomes
            ],
        ),
    ]
    lines += [section(o) for o in outcomes]
    if fuzz is not None:
        lines += [
            "## schemathesis against both APIs\n",
            "Every operation of the gateway's and the audit API's OpenAPI, with schema-valid and "
            "schema-invalid cases, as the desk, a partner agency, the auditor and the administrator "
            "(faults/fuzz.py), on the stack the first scenario left behind:\n",
            "```",
            fuzz,
            "```\n",
        ]
    return "\n".join(lines)
