"""`docs/performance.md` and its plot, from the figures of one run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.auditscale import AuditScale
from bench.crypto import OUTER_CHECK
from bench.load import Latency, Throughput
from bench.parts import BATCHING_PRODUCE, CONSUME, PRODUCE
from bench.profile import OTHERS, Profile
from bench.stats import Figure

OUTER_CHECKS_PER_NOTICE = 3  # the gateway, ingest and the audit service each check it
FLOOR_RECIPIENTS = 3
E2E_TARGET = 2000  # notices/s with 3 recipients


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    memory_gb: float
    python: str
    kafka: str
    postgres: str
    commit: str
    date: str


@dataclass
class Results:
    machine: Machine
    quick: bool
    bench_settings: dict[str, str]
    sizes: dict[str, str]
    crypto: dict[str, Figure] = field(default_factory=dict)
    kafka: dict[str, Figure] = field(default_factory=dict)
    row_writes: Figure | None = None
    e2e: dict[int, Throughput] = field(default_factory=dict)
    cpu_ms_per_notice: dict[str, float] = field(default_factory=dict)
    latency: list[Latency] = field(default_factory=list)
    flash: list[float] = field(default_factory=list)
    pull_ms: dict[int, Figure] = field(default_factory=dict)
    audit_scale: dict[int, AuditScale] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    profiles: list[Profile] = field(default_factory=list)
    logged_errors: dict[str, Counter[str]] = field(default_factory=dict)
    not_measured: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Floor:
    """Seconds of unavoidable server work per notice with FLOOR_RECIPIENTS recipients, by part."""

    verify_s: float
    transport_s: float
    rows_s: float

    @property
    def rate(self) -> float:
        return 1 / (self.verify_s + self.transport_s + self.rows_s)


def floor(results: Results) -> Floor:
    """Outer checks run on every core in parallel; Kafka's and PostgreSQL's rates were measured with the
    whole machine, so their per-notice times add as they are."""
    assert results.row_writes is not None
    check = results.crypto[OUTER_CHECK].median / 1e6
    return Floor(
        verify_s=OUTER_CHECKS_PER_NOTICE * check / results.machine.cores,
        transport_s=1 / max(results.kafka[PRODUCE].median, results.kafka[BATCHING_PRODUCE].median)
        + 1 / results.kafka[CONSUME].median,
        rows_s=(FLOOR_RECIPIENTS + 1) / results.row_writes.median,
    )


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _ms(samples: Sequence[float]) -> Figure:
    return Figure.of_durations([s * 1000 for s in samples])


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def targets(results: Results) -> list[list[str]]:
    rows: list[list[str]] = []
    e2e3 = results.e2e.get(3)
    the_floor = floor(results) if results.row_writes is not None and results.kafka else None
    if e2e3 is not None:
        rate = e2e3.completed.median
        rows.append(
            [
                f"e2e, 3 recipients >= {E2E_TARGET:,} notices/s",
                f"{number(rate)} notices/s",
                _verdict(rate >= E2E_TARGET),
            ]
        )
        if the_floor is not None:
            ratio = rate / the_floor.rate
            rows.append(["e2e >= 0.5 x the floor (3 recipients)", f"{ratio:.2f} x", _verdict(ratio >= 0.5)])
    at_200 = next((lat for lat in results.latency if lat.offered == 200), None)
    if at_200 is not None:
        p99 = _ms(at_200.inbox).p99
        rows.append(["p99 POST-to-inbox <= 50 ms at 200/s", f"{number(p99)} ms", _verdict(p99 <= 50)])
    if len(results.pull_ms) >= 2:
        sizes = sorted(results.pull_ms)
        growth = results.pull_ms[sizes[-1]].median / results.pull_ms[sizes[0]].median
        rows.append(
            [
                f"inbox pull flat from {sizes[0]:,} to {sizes[-1]:,} stored (within 1.5 x)",
                f"{growth:.2f} x",
                _verdict(growth <= 1.5),
            ]
        )
    if "gateway" in results.peak_rss_mb:
        rss = results.peak_rss_mb["gateway"]
        rows.append(["gateway peak RSS <= 200 MB", f"{number(rss)} MB", _verdict(rss <= 200)])
    return rows


def markdown(results: Results) -> str:
    m = results.machine
    out = [
        "# deskbridge performance\n\n",
        f"Measured by `make bench` (`python -m bench.run{' --quick' if results.quick else ''}`) on "
        f"{m.date}, commit `{m.commit}`, in one run on one machine: every service, Kafka, PostgreSQL and the "
        "load generator share its cores. Each figure is the median and the p99 over repeated runs (for a "
        "duration the slow tail; for a rate the rate 99 % of runs beat). Regenerate with `make bench`.\n",
    ]
    if results.quick:
        out.append(
            "\n**A `--quick` smoke run: one repetition and tiny sizes; these numbers mean nothing.**\n"
        )
    out.append("\n## Machine\n\n")
    out.append(
        table(
            ["what", "value"],
            [
                ["CPU", m.cpu],
                ["cores", str(m.cores)],
                ["memory", f"{m.memory_gb:.1f} GB"],
                ["Python", m.python],
                ["Apache Kafka", f"{m.kafka} (KRaft, one broker, on this machine)"],
                ["PostgreSQL", f"{m.postgres} (throwaway cluster: fsync off, synchronous_commit on)"],
                ["commit", f"`{m.commit}`"],
            ],
        )
    )
    out.append("\n## How it was run\n\n")
    out.append(
        "Services run as separate processes (`python -m services.gateway`, `services.ingest`, "
        "`services.audit`) against PostgreSQL. Settings changed for the bench, because the defaults would "
        "refuse a load test as abuse:\n\n"
    )
    out.append(table(["setting", "value"], [[k, f"`{v}`"] for k, v in results.bench_settings.items()]))
    out.append("\nSizes of this run:\n\n")
    out.append(table(["phase", "size"], [[k, v] for k, v in results.sizes.items()]))
    out.append("\n## Targets\n\n")
    out.append(table(["target", "measured", "verdict"], targets(results)))
    out.append(_why_missed(results))
    out.append(_crypto(results))
    out.append(_transport(results))
    out.append(_e2e(results))
    out.append(_latency(results))
    out.append(_scaling(results))
    out.append(_floor(results))
    out.append(_profiles(results))
    out.append("\n## Not measured yet\n\n")
    if results.not_measured:
        out.extend(f"- **{what}**: {why}\n" for what, why in results.not_measured)
    else:
        out.append("Nothing: every figure the issue asks for is above.\n")
    return "".join(out)


def _why_missed(results: Results) -> str:
    """The missed targets explained from this run's own figures: the CPU budget per notice they imply
    against what each part spent, and the queue a load above capacity builds."""
    cpu = results.cpu_ms_per_notice
    total = cpu.get("the whole machine")
    e2e3 = results.e2e.get(3)
    if not total or e2e3 is None:
        return ""
    cores = results.machine.cores
    lines: list[str] = []
    if e2e3.completed.median < E2E_TARGET:
        budget = cores * 1000 / E2E_TARGET
        ours = sum(v for k, v in cpu.items() if k in ("gateway", "ingest", "audit"))
        parts = sum(v for k, v in cpu.items() if k in ("Kafka broker", "PostgreSQL"))
        line = (
            f"- **{E2E_TARGET:,} notices/s** on {cores} cores leaves {number(budget)} CPU ms per notice for "
            f"everything: the gateway, ingest and audit took {number(ours)} ms between them, "
            f"and the load generator {number(cpu.get('load generator (this process)', 0))} ms."
        )
        if parts:
            line += (
                f" Kafka and PostgreSQL alone took {number(parts)} ms per notice (one request, one produce, "
                f"{FLOOR_RECIPIENTS} inbox rows and {FLOOR_RECIPIENTS + 1} audit entries with their tree "
                "nodes, committed a batch at a time): by themselves they allow "
                f"{number(cores * 1000 / parts)} notices/s on this machine."
            )
        lines.append(
            line + " Each Python service is one event loop on one core; see *Where the time goes* for the "
            "profiles. Running each service as several processes adds throughput only with more cores."
        )
    if results.row_writes is not None and results.kafka:
        the_floor = floor(results)
        if e2e3.completed.median < 0.5 * the_floor.rate:
            floor_cpu_ms = cores * 1000 / the_floor.rate  # the floor's rate is of all the cores
            lines.append(
                f"- **0.5 x the floor**: the floor is {number(floor_cpu_ms * 1000)} µs of CPU per notice "
                "(the signature checks, bytes through Kafka at raw aiokafka's rate, rows written 100 to a "
                f"transaction); the stack spent {number(total)} ms, {number(total / floor_cpu_ms)} times "
                "as much. The difference is the per-notice work of three Python services around those parts "
                "(HTTP, JSON and pydantic parsing, the ORM, a transaction and its round trips per request) "
                "and the extra round trips Kafka and PostgreSQL serve for it."
            )
    at_200 = next((lat for lat in results.latency if lat.offered == 200), None)
    if at_200 is not None and _ms(at_200.inbox).p99 > 50:
        capacity = e2e3.completed.median
        if capacity < 200:
            below = [lat for lat in results.latency if lat.offered < capacity]
            tail = ""
            if below:
                best = max(below, key=lambda lat: lat.offered)
                tail = (
                    f" Below capacity, at {number(best.offered)}/s, the p99 POST-to-inbox is "
                    f"{number(_ms(best.inbox).p99)} ms."
                )
            lines.append(
                "- **p99 at 200/s**: 200 notices/s is more than this stack completes "
                f"({number(capacity)}/s in the closed loop), so the queue grows for the whole phase and "
                "its p99 is the wait in that queue, not the path of one notice." + tail
            )
        else:
            lines.append(
                f"- **p99 at 200/s**: the stack completes {number(capacity)}/s, so 200/s keeps its cores "
                f"{100 * 200 / capacity:.0f} % busy; at that load a notice often waits behind others in "
                "each service's event loop."
            )
    if not lines:
        return ""
    return "\nWhy the missed targets are missed, from this run's figures:\n\n" + "\n".join(lines) + "\n"


def _figure_rows(figures: dict[str, Figure]) -> list[list[str]]:
    return [[name, number(f.median), number(f.p99), str(f.runs)] for name, f in figures.items()]


def _crypto(results: Results) -> str:
    return (
        "\n## Crypto floor\n\nMicroseconds per operation on a notice of ~4 KB (its signed plaintext), one "
        "core, in this process. `open` parses, checks the outer signature, unwraps one recipient's key, "
        "decrypts and checks the inner signature. The primitives are `cryptography` (OpenSSL) alone.\n\n"
        + table(["operation", "median (µs)", "p99 (µs)", "runs"], _figure_rows(results.crypto))
    )


def _transport(results: Results) -> str:
    rows = _figure_rows({f"raw aiokafka {k} (messages/s)": f for k, f in results.kafka.items()})
    if results.row_writes is not None:
        rows.append(
            [
                "PostgreSQL inserts, 100 rows a transaction (rows/s)",
                number(results.row_writes.median),
                number(results.row_writes.p99),
                str(results.row_writes.runs),
            ]
        )
    return (
        "\n## Transport limit\n\nThe same envelope bytes (3 recipients) on the same broker, on topics made "
        "like the services' (3 partitions): the gateway's producer (`make_producer`: acks=all, idempotent, "
        "linger 2 ms) fed as fast as it takes them; the same with 1 MiB batches; then a consumer reading "
        "them back. The database line is the same server's limit for rows shaped like inbox rows.\n\n"
        + table(["part", "median", "p99 (slow tail)", "runs"], rows)
    )


def _e2e(results: Results) -> str:
    produce = results.kafka[PRODUCE].median if results.kafka else None
    rows = []
    for recipients, t in sorted(results.e2e.items()):
        ratio = t.completed.median / produce if produce else 0.0
        rows.append(
            [
                str(recipients),
                number(t.completed.median),
                number(t.completed.p99),
                number(t.accepted.median),
                number(t.accepted.p99),
                number(ratio),
                str(t.completed.runs),
            ]
        )
    cpu = "".join(f"| {name} | {number(ms)} |\n" for name, ms in results.cpu_ms_per_notice.items())
    return (
        "\n## End to end\n\nNotices/s from concurrent senders (the four demo agencies, each with "
        f"{results.sizes.get('senders', '?')} connections) posting envelopes sealed before the clock starts "
        "to `POST /v1/envelopes`, counted when every recipient's inbox row and every audit entry (one "
        "`notice.submitted`, one `notice.delivered` per recipient) is in the database. `accepted` is the "
        "rate of 202 answers alone. The ratio is to raw aiokafka produce with the gateway's producer.\n\n"
        + table(
            [
                "recipients",
                "median (notices/s)",
                "p99 (notices/s)",
                "accepted median (notices/s)",
                "accepted p99 (notices/s)",
                "ratio to raw aiokafka",
                "runs",
            ],
            rows,
        )
        + "\nCPU milliseconds per notice during the 3-recipient runs, by process tree (from /proc). "
        "Everything else is other processes and the kernel (and Kafka and PostgreSQL, when the bench was "
        "given them instead of starting its own):\n\n| process | CPU ms per notice |\n|---|---|\n"
        + cpu
        + _ceiling(results)
    )


def _ceiling(results: Results) -> str:
    """What the CPU spent per notice allows at most, had the cores nothing else to wait for."""
    total = results.cpu_ms_per_notice.get("the whole machine")
    if not total:
        return ""
    ceiling = results.machine.cores * 1000 / total
    services = {k: v for k, v in results.cpu_ms_per_notice.items() if k in ("gateway", "ingest", "audit")}
    busiest = max(services, key=services.__getitem__) if services else None
    text = (
        f"\nAt {number(total)} CPU ms per notice the {results.machine.cores} cores allow at most "
        f"**{number(ceiling)} notices/s** with 3 recipients."
    )
    if 3 in results.e2e:
        busy = results.e2e[3].completed.median / ceiling
        text += f" The cores were {100 * busy:.0f} % busy during those runs: " + (
            "the rate is bound by CPU work per notice, not by waiting."
            if busy >= 0.85
            else "the rest of the time went to waiting (round trips, locks, commits)."
        )
    others = results.cpu_ms_per_notice.get(OTHERS, 0.0)
    if 3 in results.e2e and others > 0:
        cores = others * results.e2e[3].completed.median / 1000
        text += (
            f" Other work on the machine took {cores:.2f} of its {results.machine.cores} cores meanwhile"
            + (
                " (the machine was shared: these figures are lower than a quiet machine would give)."
                if cores > 0.2
                else "."
            )
        )
    if busiest is not None:
        text += (
            f" One process alone (a single Python event loop, one core at most) caps it too: {busiest} at "
            f"{number(services[busiest])} ms per notice allows {number(1000 / services[busiest])} notices/s."
        )
    return text + "\n"


def _latency(results: Results) -> str:
    rows = []
    for lat in results.latency:
        post, inbox = _ms(lat.post), _ms(lat.inbox)
        rows.append(
            [
                number(lat.offered),
                number(lat.achieved),
                number(post.median),
                number(post.p99),
                number(inbox.median),
                number(inbox.p99),
                str(len(lat.inbox)),
                ", ".join(f"{n} x {status}" for status, n in sorted(lat.failed.items())) or "none",
            ]
        )
    flash = ""
    if results.flash:
        f = _ms(results.flash)
        flash = (
            "\nA flash notice to a reader whose long-poll (`GET /v1/inbox?wait=30`) is already waiting, "
            "from the POST to the long-poll's answer:\n\n"
            + table(
                ["path", "median (ms)", "p99 (ms)", "samples"],
                [["flash notice to waiting long-poll", number(f.median), number(f.p99), str(f.runs)]],
            )
        )
    logged = [
        f"- {name}, {n} x: `{line}`\n"
        for name, errors in results.logged_errors.items()
        for line, n in errors.most_common(5)
    ]
    if logged:
        flash += (
            "\nErrors the services logged during the whole run (last line of each traceback):\n\n"
            + "".join(logged)
        )
    return (
        "\n## Latency\n\nOpen loop: notices (3 recipients) are sent at a fixed rate whatever the answers, "
        "and each is timed from when it was due, so a queue cannot hide. `inbox` is when the last "
        "recipient's inbox row was written (ingest's `delivered_at`, same clock). Samples of all "
        "repetitions pooled; only notices answered 202 have samples, the rest are counted in the last column "
        "by answer.\n\n"
        + table(
            [
                "offered (notices/s)",
                "achieved (notices/s)",
                "POST-to-202 median (ms)",
                "POST-to-202 p99 (ms)",
                "POST-to-inbox median (ms)",
                "POST-to-inbox p99 (ms)",
                "samples",
                "refused or failed",
            ],
            rows,
        )
        + flash
    )


def _scaling(results: Results) -> str:
    pulls = table(
        ["notices stored", "median (ms)", "p99 (ms)", "pulls"],
        [
            [f"{n:,}", number(f.median), number(f.p99), str(f.runs)]
            for n, f in sorted(results.pull_ms.items())
        ],
    )
    audit = table(
        [
            "audit entries stored",
            "append median (entries/s)",
            "append p99 (entries/s)",
            "inclusion proof median (ms)",
            "inclusion proof p99 (ms)",
            "appends / proofs",
        ],
        [
            [
                f"{n:,}",
                number(a.append_per_s.median),
                number(a.append_per_s.p99),
                number(a.proof_ms.median),
                number(a.proof_ms.p99),
                f"{a.append_per_s.runs} x {a.batch} / {a.proof_ms.runs}",
            ]
            for n, a in sorted(results.audit_scale.items())
        ],
    )
    rss = table(
        ["process", "peak RSS (MB)"], [[name, number(mb)] for name, mb in results.peak_rss_mb.items()]
    )
    return (
        "\n## Scaling\n\n`GET /v1/inbox?limit=10` of the newest page of one reader's inbox while the number "
        "of stored notices grows. Notices beyond those sent through the stack are written straight into the "
        "database (one inbox row each, every hundredth for the reader), with a placeholder envelope of real "
        "size.\n\n"
        + pulls
        + "\nThe audit log as it grows (bench/auditscale.py): on a database of its own on the same server, "
        "entries up to each size written straight into the tables, then the audit service's own append "
        "(`transparency.service.append`: the table lock, the chain head, the tree's right edge, entries and "
        "nodes in one commit) and inclusion proofs of random leaves (`transparency.storage.inclusion`, "
        "what `GET /v1/audit/proof/inclusion` runs, without the HTTP). p99 of a rate is the slow tail.\n\n"
        + audit
        + "\nPeak resident memory of each process over the whole run (`VmHWM`: one value per process, "
        "so no median):\n\n" + rss
    )


def _floor(results: Results) -> str:
    if results.row_writes is None or not results.kafka:
        return "\n## The floor\n\nNot computed: its parts were not measured.\n"
    f = floor(results)
    e2e = results.e2e.get(FLOOR_RECIPIENTS)
    rows = [
        [
            f"verify the outer signature {OUTER_CHECKS_PER_NOTICE} times, on {results.machine.cores} cores",
            number(f.verify_s * 1e6),
        ],
        ["produce once and consume once (raw aiokafka, the faster producer)", number(f.transport_s * 1e6)],
        [f"write {FLOOR_RECIPIENTS} inbox rows and 1 audit leaf", number(f.rows_s * 1e6)],
        ["total", number((f.verify_s + f.transport_s + f.rows_s) * 1e6)],
    ]
    text = (
        "\n## The floor\n\nThe least work any design must do on the server per notice with "
        f"{FLOOR_RECIPIENTS} recipients, from the figures above (medians), in microseconds of this "
        "machine:\n\n"
        + table(["work", "median (µs per notice)"], rows)
        + f"\nFloor: **{number(f.rate)} notices/s** on this machine."
    )
    if e2e is not None:
        text += (
            f" deskbridge does {number(e2e.completed.median)} notices/s end to end: "
            f"**{e2e.completed.median / f.rate:.2f} x** the floor."
        )
    if f.rate < E2E_TARGET:
        text += (
            f" The floor itself is below the {E2E_TARGET:,} notices/s target: on "
            f"{results.machine.cores} cores, checking the outer signature {OUTER_CHECKS_PER_NOTICE} times "
            f"({number(results.crypto[OUTER_CHECK].median)} µs each, of which Ed25519 itself is "
            f"{number(results.crypto['Ed25519 verify 4 KB'].median)} µs) leaves too little time for the rest."
        )
    return text + "\n"


def _profiles(results: Results) -> str:
    if not results.profiles:
        return ""
    parts = [
        "\n## Where the time goes\n\npy-spy samples (200/s) of each service during an extra 3-recipient "
        "closed-loop run. Samples of a thread waiting (in the event loop's `select`, or a parked thread) are "
        "left out; `busy` is how much of one core the rest amount to. Shares are of those working samples; "
        "inclusive shares count a function with everything it called. Time in "
        "`_SelectorSocketTransport.write` is spent in the `send` system call, which on loopback also does "
        "the kernel's TCP work for the receiving side.\n"
    ]
    for p in results.profiles:
        busy = 100 * p.busy / p.possible if p.possible else 0.0
        parts.append(f"\n### {p.name} (busy {busy:.0f} % of a core)\n\n")
        parts.append(
            table(
                ["our function (inclusive)", "share of busy samples (%)"],
                [[f"`{n}`", f"{s:.1f}"] for n, s in p.inclusive],
            )
        )
        parts.append("\n")
        parts.append(
            table(
                ["leaf frame (self time)", "share of busy samples (%)"],
                [[f"`{n}`", f"{s:.1f}"] for n, s in p.leaves],
            )
        )
    return "".join(parts)


def plot(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (left, right) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    offered = [lat.offered for lat in results.latency]
    left.plot(offered, [_ms(lat.inbox).median for lat in results.latency], "o-", label="POST-to-inbox p50")
    left.plot(offered, [_ms(lat.inbox).p99 for lat in results.latency], "o--", label="POST-to-inbox p99")
    left.plot(offered, [_ms(lat.post).p99 for lat in results.latency], "s:", label="POST-to-202 p99")
    left.axhline(50, color="grey", linewidth=0.8, label="target p99 at 200/s: 50 ms")
    left.set(xscale="log", yscale="log", xlabel="offered load (notices/s)", ylabel="latency (ms)")
    left.set_title("latency against offered load (3 recipients)")
    left.legend(fontsize=8)
    right.plot(offered, [lat.achieved for lat in results.latency], "o-", label="achieved (open loop)")
    right.plot(offered, offered, ":", color="grey", label="achieved = offered")
    if 3 in results.e2e:
        right.axhline(results.e2e[3].completed.median, color="C1", label="closed loop, 3 recipients")
    if results.kafka:
        right.axhline(results.kafka[PRODUCE].median, color="C2", label="raw aiokafka produce")
    if results.row_writes is not None and results.kafka:
        right.axhline(floor(results).rate, color="C3", linestyle="--", label="the floor (3 recipients)")
    right.set(xscale="log", yscale="log", xlabel="offered load (notices/s)", ylabel="notices/s")
    right.set_title("throughput against offered load")
    right.legend(fontsize=8)
    figure.suptitle(f"deskbridge {results.machine.commit} on {results.machine.cores} cores")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
