"""`python -m bench.run [--quick] [--out docs/performance.md]`: measures deskbridge against the limits of
its own parts in one run on this machine, writes the report and its plot, and prints the targets.

It starts its own Kafka broker and PostgreSQL cluster unless given `--bootstrap` and `--database-url`
(an empty database: the smoke test passes the test session's)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import auditscale, load, parts, profile
from bench.crypto import RECIPIENT_COUNTS, crypto_floor, signing_key
from bench.report import (
    FLOOR_RECIPIENTS,
    LOAD_GENERATOR,
    Machine,
    Results,
    StartUp,
    markdown,
    number,
    plot,
    table,
    targets,
)
from bench.stack import (
    BENCH_ENVIRONMENT,
    FLASH_READER,
    PULL_READER,
    READERS,
    SENDERS,
    Infrastructure,
    Stack,
    infrastructure,
    kafka_version,
    running_stack,
)
from bench.stats import Figure
from devstack.certs import Certificates
from services.platform.database import ROOT, make_engine
from services.platform.kafka import KafkaAccess
from services.platform.process import settle_memory

FIRST_NOTICES = 20  # sent before anything else, to see the stack work end to end


@dataclass(frozen=True)
class Sizes:
    repeats: int
    crypto_calls: int  # calls per timed run
    crypto_runs: int
    raw_messages: int
    floor_notices: int  # notices' rows written by COPY a run
    e2e_notices: int
    senders: int  # connections per sending agency
    loads: tuple[tuple[float, float], ...]  # (notices/s, seconds)
    flash: int
    pull_sizes: tuple[int, ...]
    pulls: int
    profile_seconds: int  # 0: no profile
    audit_sizes: tuple[int, ...] = (1000,)  # audit log sizes for append rate and inclusion proofs
    audit_batches: int = 3  # appends timed at each size
    audit_batch: int = 100  # entries per append
    audit_proofs: int = 10  # inclusion proofs timed at each size
    restarts: int = 1  # audit service restarts timed at each log size
    early_restart: bool = False  # also at the small log of the run's start (a --quick run spares it)
    # Notices sent before the floor and the loads are timed. The broker's JIT compiler takes more CPU
    # than the requests themselves in the broker's first minutes of load; a deskbridge in service has
    # been up for days. After `warmup`, rounds of `settle_round` notices go on (at most `settle_rounds`)
    # until the compiler took under JIT_SETTLED of the broker's CPU in a round.
    warmup: int = 0
    settle_round: int = 1000
    settle_rounds: int = 0
    http_requests: int = 300  # POSTs a run to the bare HTTP route (parts.bare_http)

    def describe(self) -> dict[str, str]:
        return {
            "repetitions of each phase": str(self.repeats),
            "warm-up before timing": f"{FIRST_NOTICES + self.warmup:,} notices",
            "crypto": f"{self.crypto_runs} runs of {self.crypto_calls} calls",
            "raw aiokafka": f"{self.raw_messages:,} messages a run",
            "PostgreSQL COPY": f"the rows of {self.floor_notices:,} notices a run",
            "bare HTTP": f"{self.http_requests:,} POSTs a run",
            "end to end": f"{self.e2e_notices:,} notices a run",
            "senders": f"{self.senders} connections each",
            "open-loop loads": ", ".join(f"{rate:g}/s for {seconds:g} s" for rate, seconds in self.loads),
            "flash notices": str(self.flash),
            "inbox pulls": f"{self.pulls} at each size",
            "audit log": f"{self.audit_batches} appends of {self.audit_batch} entries and "
            f"{self.audit_proofs} inclusion proofs at each of "
            + ", ".join(f"{n:,}" for n in self.audit_sizes)
            + " entries",
            "audit start-up": f"{self.restarts} restart(s) at each of "
            + ("two log sizes" if self.early_restart else "one log size"),
        }


QUICK = Sizes(1, 20, 1, 300, 500, 30, 4, ((20, 1), (500, 0.1)), 3, (1000,), 5, 0)
# Sized for a 2-core machine where deskbridge does ~100 notices/s; filling the audit log to 10^7 entries
# (bench/auditscale.py) is the longest phase.
FULL = Sizes(
    repeats=3,
    crypto_calls=200,
    crypto_runs=30,
    raw_messages=10_000,
    floor_notices=5_000,
    http_requests=10_000,
    e2e_notices=600,
    senders=16,
    loads=((10, 10), (50, 10), (200, 5), (500, 3), (1000, 2)),
    # 100: the p99 of 30 was their slowest, so one stall of the shared machine decided it.
    flash=100,
    pull_sizes=(1000, 100_000, 1_000_000),
    pulls=50,
    profile_seconds=15,
    audit_sizes=(1000, 100_000, 1_000_000, 10_000_000),
    warmup=3000,
    settle_rounds=25,
    audit_batches=20,
    audit_batch=200,
    # A p99 of 200 samples is their third-slowest, which one stall on this shared machine decides; of
    # 1,000, the tenth (about half a second more a size).
    audit_proofs=1000,
    restarts=3,
    early_restart=True,
)


def machine(database_version: str, shared_buffers: str = "?") -> Machine:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    memory = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    # The report and plot a run writes are not changes to what it measures.
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/performance.*"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return Machine(
        cpu=found.group(1) if found else platform.processor(),
        cores=os.cpu_count() or 1,
        memory_gb=int(memory.group(1)) / 1024 / 1024 if memory else 0.0,
        python=platform.python_version(),
        kafka=kafka_version(),
        postgres=database_version,
        postgres_buffers=shared_buffers,
        commit=(commit or "unknown") + (" (with uncommitted changes)" if dirty else ""),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


async def database_version(engine: AsyncEngine) -> str:
    async with engine.connect() as connection:
        return str((await connection.execute(text("SHOW server_version"))).scalar_one()).split()[0]


async def database_setting(engine: AsyncEngine, name: str) -> str:
    async with engine.connect() as connection:
        return str((await connection.execute(text(f"SHOW {name}"))).scalar_one())


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _service_cpu_seconds(stack: Stack, name: str) -> float:
    return stack.services[name].cpu_seconds()


def _service_pid(stack: Stack, name: str) -> int:
    return stack.services[name].process.pid


def database_meter(stack: Stack, infra: Infrastructure) -> profile.CpuMeter | None:
    """PostgreSQL's CPU by the client its backends serve, and in all, when the bench started it."""
    postmaster = infra.database.pid if infra.database is not None else None
    if postmaster is None or "PostgreSQL" not in infra.cpu_clocks:
        return None
    clients: dict[str, Callable[[], int]] = {n: partial(_service_pid, stack, n) for n in stack.services}
    clients[LOAD_GENERATOR] = os.getpid
    split = profile.DatabaseClients(postmaster, clients)
    return profile.CpuMeter(
        {**{name: split.clock(name) for name in clients}, "PostgreSQL": infra.cpu_clocks["PostgreSQL"]}
    )


JIT_SETTLED = 0.1  # the broker's JIT compiler's share of its CPU in a warm-up round that ends warming


async def settle_broker(
    stack: Stack, infra: Infrastructure, engine: AsyncEngine, keyring: load.Keyring, sizes: Sizes
) -> str:
    """Warm-up rounds until the broker's JIT compiler has settled (or the rounds run out); says how far."""
    sent = FIRST_NOTICES + sizes.warmup
    if not sizes.settle_rounds:
        return f"{sent:,} notices"
    if infra.broker_jit is None or "Kafka broker" not in infra.cpu_clocks:
        return f"{sent:,} notices (the broker was not started by the bench: its JIT not watched)"
    share = 1.0
    for _ in range(sizes.settle_rounds):
        meter = profile.CpuMeter({"broker": infra.cpu_clocks["Kafka broker"], "jit": infra.broker_jit})
        await load.closed_loop(stack, engine, keyring, 3, sizes.settle_round, sizes.senders, 1, (meter,))
        sent += sizes.settle_round
        spent = meter.windows[-1]
        share = spent["jit"] / spent["broker"] if spent["broker"] else 0.0
        say(f"warm-up: {sent:,} notices, the broker's JIT compiler took {share:.0%} of its CPU")
        if share < JIT_SETTLED:
            return (
                f"{sent:,} notices, until the Kafka broker's JIT compiler took under {JIT_SETTLED:.0%} of "
                f"the broker's CPU in a round of {sizes.settle_round:,} ({share:.0%} in the last)"
            )
    return (
        f"{sent:,} notices; the Kafka broker's JIT compiler still took {share:.0%} of the broker's CPU "
        f"in the last round of {sizes.settle_round:,} (settled is under {JIT_SETTLED:.0%})"
    )


async def measure(
    stack: Stack, infra: Infrastructure, results: Results, sizes: Sizes, work: Path, profiling: bool
) -> None:
    engine = make_engine(stack.settings.database_url)
    try:
        buffers = await database_setting(engine, "shared_buffers")
        results.machine = machine(await database_version(engine), buffers)
        keyring = load.Keyring(stack.home)
        clocks: dict[str, Callable[[], float]] = {
            # Looked up at each reading: the audit service is restarted (timed) between the meterings.
            **{name: partial(_service_cpu_seconds, stack, name) for name in stack.services},
            LOAD_GENERATOR: time.process_time,
            **infra.cpu_clocks,
            "machine": profile.machine_busy_seconds,
        }
        say("warming up")
        await load.closed_loop(stack, engine, keyring, 3, FIRST_NOTICES, 4, 1)
        if sizes.early_restart:
            await audit_startup(stack, engine, results, sizes.restarts)
        early = [n for n in sizes.pull_sizes if n <= 10_000]
        say(f"inbox pulls at {early} stored notices")
        sealed = keyring.seal(SENDERS[0], READERS[:FLOOR_RECIPIENTS])
        envelope = sealed.raw
        results.pulls.update(
            await load.inbox_pull_scaling(
                stack, engine, PULL_READER, early, sizes.pulls, len(envelope), clocks
            )
        )
        if sizes.warmup:  # after the pulls at a small inbox, which want few notices stored
            say(f"warming up with {sizes.warmup:,} notices more")
            await load.closed_loop(stack, engine, keyring, 3, sizes.warmup, sizes.senders, 1)
            results.sizes["warm-up before timing"] = await settle_broker(stack, infra, engine, keyring, sizes)
        say("the floor: raw Ed25519 verifies, raw aiokafka produce and consume, COPY; and a bare HTTP POST")
        results.verify_us = parts.ed25519_verify_us(
            envelope,
            signing_key(keyring.senders[sealed.sender]).ed25519(),
            sizes.crypto_calls,
            sizes.crypto_runs,
        )
        results.kafka = await parts.raw_kafka(
            KafkaAccess.of(stack.settings),
            stack.settings.topic_prefix,
            envelope,
            sizes.raw_messages,
            sizes.repeats,
        )
        results.rows = await parts.copy_rows(engine, sizes.floor_notices, FLOOR_RECIPIENTS, sizes.repeats)
        results.http = await parts.bare_http(
            envelope, sizes.http_requests, sizes.senders, sizes.repeats, work / "bare-http.log"
        )
        meter = profile.CpuMeter(clocks)
        database = database_meter(stack, infra)  # its window holds the other's: its readings cost more
        metered = (database, meter) if database is not None else (meter,)
        for recipients in RECIPIENT_COUNTS:
            say(f"end to end, {recipients} recipient(s)")
            results.e2e[recipients] = await load.closed_loop(
                stack,
                engine,
                keyring,
                recipients,
                sizes.e2e_notices,
                sizes.senders,
                sizes.repeats,
                metered if recipients == FLOOR_RECIPIENTS else (),
            )
        results.cpu_ms_per_notice = meter.ms_per_notice("machine")
        if database is not None:
            results.database_ms_by_client = database.ms_per_notice("PostgreSQL")
        results.cpu_windows = [window["machine"] for window in meter.windows]
        for rate, seconds in sizes.loads:
            say(f"open loop at {rate:g} notices/s")
            runs = [
                await load.open_loop(stack, engine, keyring, rate, seconds, FLOOR_RECIPIENTS)
                for _ in range(sizes.repeats)
            ]
            results.latency.append(
                load.Latency(
                    rate,
                    min(r.achieved for r in runs),
                    [s for r in runs for s in r.post],
                    [s for r in runs for s in r.inbox],
                    dict(sum((Counter(r.failed) for r in runs), Counter())),
                )
            )
        say("flash notices to a waiting long-poll")
        results.flash = await load.flash_to_waiting_reader(stack, keyring, FLASH_READER, sizes.flash)
        if profiling and sizes.profile_seconds:
            await profile_services(stack, engine, keyring, results, sizes, work)
        else:
            results.not_measured.append(("profiles", "not taken in a --quick run"))
        late = [n for n in sizes.pull_sizes if n > 10_000]
        if late:
            say(f"inbox pulls at {late} stored notices")
            results.pulls.update(
                await load.inbox_pull_scaling(
                    stack, engine, PULL_READER, late, sizes.pulls, len(envelope), clocks
                )
            )
        # Read before the audit service restarts again: a new process has a peak of its own.
        results.peak_rss_mb = {name: service.peak_rss_mb() for name, service in stack.services.items()}
        await audit_startup(stack, engine, results, sizes.restarts)
        say(f"audit log appends and inclusion proofs at {list(sizes.audit_sizes)} entries")
        results.audit_scale = await auditscale.audit_scaling(
            stack.settings.database_url,
            sizes.audit_sizes,
            sizes.audit_batches,
            sizes.audit_batch,
            sizes.audit_proofs,
        )
        results.logged_errors = {name: service.logged_errors() for name, service in stack.services.items()}
    finally:
        await engine.dispose()


async def audit_startup(stack: Stack, engine: AsyncEngine, results: Results, restarts: int) -> None:
    """Stops the audit service (SIGTERM) and starts it again `restarts` times on the stack's log as it is
    now (its size read first; the stack idle, bar the last entries of a phase just ended), timing each new
    process from its start to its first answer on /healthz with its checkpoint publisher built, which
    happens after its tree is checked; and the CPU the new process spent until then, which a machine
    shared with other work disturbs far less."""
    async with engine.connect() as connection:
        size = int(
            (await connection.execute(text("SELECT coalesce(max(seq), 0) FROM audit_log"))).scalar_one()
        )
    say(f"audit service start-up at {size:,} entries")
    wall, cpu = [], []
    async with httpx.AsyncClient(timeout=1) as client:
        for _ in range(restarts):
            old = stack.services["audit"].process
            old.terminate()
            await asyncio.to_thread(old.wait, 30)
            began = time.perf_counter()
            service = stack.spawn("audit")
            deadline = began + 120
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    answer = await client.get(stack.url("audit") + "/healthz")
                    if answer.status_code == 200 and answer.json().get("checkpoints") is not None:
                        break
                if service.process.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(
                        f"the audit service did not start again:\n{service.log.read_text()[-3000:]}"
                    )
                await asyncio.sleep(0.01)
            wall.append(time.perf_counter() - began)
            cpu.append(service.cpu_seconds())
    results.audit_startup[size] = StartUp(Figure.of_durations(wall), Figure.of_durations(cpu))


async def profile_services(
    stack: Stack, engine: AsyncEngine, keyring: load.Keyring, results: Results, sizes: Sizes, work: Path
) -> None:
    seconds = sizes.profile_seconds
    rate = results.e2e[3].accepted.median
    count = int(rate * seconds * 1.3) + 50  # outlasts the recording
    say(f"profiling gateway, ingest and audit with py-spy for {seconds} s")
    recorders = {
        name: (
            profile.start_recording(service.process.pid, seconds, work / f"{name}.pyspy"),
            work / f"{name}.pyspy",
        )
        for name, service in stack.services.items()
    }
    await load.closed_loop(stack, engine, keyring, 3, count, sizes.senders, 1)
    for name, (recorder, out) in recorders.items():
        _, errors = await asyncio.to_thread(recorder.communicate)
        if recorder.returncode != 0 or not out.exists():
            results.not_measured.append((f"profile of {name}", f"py-spy failed: {errors.decode()[-300:]}"))
            continue
        results.profiles.append(profile.summarise(name, out, seconds))


def summary(results: Results) -> str:
    lines = [table(["target", "median", "p99", "verdict"], [t.row() for t in targets(results)])]
    for recipients, t in sorted(results.e2e.items()):
        lines.append(
            f"end to end, {recipients} recipient(s): {number(t.completed.median)} notices/s (median)"
        )
    lines += [f"raw aiokafka {name}: {number(p.rate.median)} messages/s" for name, p in results.kafka.items()]
    for name, f in results.crypto.items():
        if name.startswith(("seal", "open")):
            lines.append(f"{name}: {number(f.median)} µs")
    return "\n".join(lines)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one repetition, tiny sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--plot", type=Path, help="default: --out with .png")
    parser.add_argument("--bootstrap", help="an existing Kafka broker (host:port) instead of starting one")
    parser.add_argument(
        "--kafka-certs",
        type=Path,
        help="the client certificates of the --bootstrap broker, if closed to strangers (devstack.certs)",
    )
    parser.add_argument(
        "--database-url", help="an existing, empty PostgreSQL database (postgresql+asyncpg://)"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the broker, the database cluster and the services are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    sizes = QUICK if args.quick else FULL
    plot_path = args.plot or args.out.with_suffix(".png")
    results = Results(
        machine=machine("?"),
        quick=args.quick,
        bench_settings={
            **BENCH_ENVIRONMENT,
            "DESKBRIDGE_FRESHNESS_S": "300 (default: envelopes are sealed just before each phase)",
        },
        sizes=sizes.describe(),
    )
    results.sizes["senders"] = str(sizes.senders)
    say("crypto floor")
    results.crypto = crypto_floor(sizes.crypto_calls, sizes.crypto_runs)
    work = Path(tempfile.mkdtemp(prefix="deskbridge-bench-"))
    given = Certificates(args.kafka_certs.resolve()) if args.kafka_certs else None
    say("starting Kafka and PostgreSQL" if args.bootstrap is None else "using the given Kafka and database")
    try:
        with (
            infrastructure(work, args.bootstrap, args.database_url, certificates=given) as infra,
            running_stack(
                work, infra.bootstrap, infra.database_url, certificates=infra.certificates
            ) as stack,
        ):
            settle_memory()  # as each service does before serving (see How it was run)
            asyncio.run(measure(stack, infra, results, sizes, work, not args.no_profile))
    except BaseException:
        say(f"failed; the services' logs are kept in {work}")
        raise
    shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("matplotlib") is None:
        results.not_measured.append(("the plot", "matplotlib is not installed (pip install -e '.[bench]')"))
    else:
        plot(results, plot_path)
    args.out.write_text(markdown(results))
    say(f"wrote {args.out}" + (f" and {plot_path}" if plot_path.exists() else ""))
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
