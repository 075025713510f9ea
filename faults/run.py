"""`python -m faults.run [--quick] [--seed N] [--only NAME] [--out docs/reliability.md]`: drives a bounded
load through the whole stack while killing its parts, checks that nothing acknowledged was lost or
duplicated and that the audit log verifies, and writes the figures to docs/reliability.md.

Three scenarios, each on Kafka and PostgreSQL of its own: one broker, with every kind of fault (SIGKILL of
the broker, the gateway, ingest and audit; the database killed and kept away; poison records); a
3-broker KRaft cluster (replication factor 3, min.insync.replicas 2) losing one broker at a time under
load; and two of each service, losing the active audit (its standby must take over signing), a gateway
and an ingest. Then schemathesis runs against both APIs. Exits 1 if any check fails."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.run import machine
from faults.chaos import BROKER
from faults.fuzz import FuzzReport
from faults.report import headline, markdown
from faults.scenarios import EVERY_FAULT, SEVERAL_OF_EACH, Outcome, Plan, run_scenario
from services.platform.database import ROOT
from tests.support.postgres import find_bin_dir

FULL = (
    Plan(
        "One broker, every fault twice",
        notices=10_000,
        recipients=3,
        connections=16,
        rate=60,
        faults=EVERY_FAULT,
        rounds=2,
        outage_s=(5, 15),
    ),
    Plan(
        "Three brokers, one killed at a time",
        notices=3_000,
        recipients=3,
        connections=16,
        rate=40,
        faults=(BROKER,),
        rounds=3,
        outage_s=(0, 0),
        brokers=3,
    ),
    Plan(
        "Two of each service, the active audit, a gateway and an ingest killed",
        notices=4_000,
        recipients=3,
        connections=16,
        rate=40,
        faults=SEVERAL_OF_EACH,
        rounds=2,
        outage_s=(0, 0),
        replicas=2,
        window=(0.05, 0.5),  # six faults of ~10 s each, one after another, inside a 100 s load
    ),
)
# The short version `make test` runs (tests/faults/test_scenarios.py): every fault once, on a load long enough
# for all of them to strike while it runs. The faults go one after another, each taking up to ~15 s
# with its restart and the pause after it, so the load lasts 100 s.
QUICK = (
    Plan(
        "One broker, every fault once (short)",
        notices=1_500,
        recipients=3,
        connections=8,
        rate=15,
        faults=EVERY_FAULT,
        rounds=1,
        outage_s=(2, 4),
        patience=60,
    ),
    Plan(
        "Three brokers, one killed (short)",
        notices=300,
        recipients=3,
        connections=8,
        rate=15,
        faults=(BROKER,),
        rounds=1,
        outage_s=(0, 0),
        brokers=3,
        patience=60,
    ),
    Plan(
        "Two of each service, the active audit, a gateway and an ingest killed (short)",
        notices=1_200,
        recipients=3,
        connections=8,
        rate=20,
        faults=SEVERAL_OF_EACH,
        rounds=1,
        outage_s=(0, 0),
        replicas=2,
        patience=60,
        window=(0.05, 0.35),  # three faults of ~10 s each, one after another, inside a 60 s load
    ),
)
FUZZ_EXAMPLES = {False: 50, True: 10}


def say(message: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_plans(
    plans: tuple[Plan, ...], seed: int, fuzz_examples: int
) -> tuple[list[Outcome], FuzzReport | None]:
    outcomes: list[Outcome] = []
    fuzz: FuzzReport | None = None
    for index, plan in enumerate(plans):
        work = Path(tempfile.mkdtemp(prefix="deskbridge-faults-"))
        say(f"{plan.name}: {plan.notices:,} notices, faults {', '.join(plan.faults)} x{plan.rounds}")
        examples = fuzz_examples if index == 0 else 0
        outcome = run_scenario(plan, seed + index, work, examples)
        outcomes.append(outcome)
        fuzz = fuzz if outcome.fuzz is None else outcome.fuzz
        for check, figure, verdict in headline(outcome):
            say(f"  {check}: {figure} ({verdict})")
        if outcome.verdict.passed:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"  FAILED; the services' and brokers' logs are kept in {work}")
    return outcomes, fuzz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the short scenarios make test runs")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="draws the faults' points")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("--no-fuzz", action="store_true", help="skip schemathesis")
    parser.add_argument("--only", help="run only the scenarios whose name holds this (e.g. 'Two of each')")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # unwinds, so brokers, database and services are stopped
    plans = tuple(p for p in (QUICK if args.quick else FULL) if args.only is None or args.only in p.name)
    examples = 0 if args.no_fuzz else FUZZ_EXAMPLES[args.quick]
    outcomes, fuzz = run_plans(plans, args.seed, examples)
    command = "make faults" if not args.quick else "python -m faults.run --quick"
    if args.only is not None:
        command = f'python -m faults.run{" --quick" if args.quick else ""} --only "{args.only}"'
    args.out.parent.mkdir(parents=True, exist_ok=True)
    database = f"PostgreSQL {find_bin_dir().parent.name}"
    summary = None if fuzz is None else fuzz.summary()
    args.out.write_text(markdown(outcomes, summary, machine(database), command))
    say(f"wrote {args.out}")
    if summary is not None:
        print(summary)
    passed = all(o.verdict.passed for o in outcomes) and (fuzz is None or fuzz.ok)
    say("every check holds" if passed else "SOME CHECKS FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
