"""Every metric deskbridge exports (docs/operations.md lists them), in a registry of the process's own.

A process builds one `Metrics` at start and hands it to what counts, like its settings; nothing is kept in
prometheus-client's global registry, so several apps in one process (the tests) never share a number.
No metric is labelled by agency, case or notice: who talks to whom, and how much, is the liaison
network's business, not its monitoring's; the labels are route templates, reason codes, priorities,
topics and partitions, all drawn from small fixed sets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds from the broker's append of a notice to its inbox rows committed: tens of milliseconds when
# ingest keeps up, minutes in a backlog after an outage.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class Metrics:
    """One process's metrics; the methods are what the services call where things happen."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.http_requests = Counter(
            "deskbridge_http_requests",
            "HTTP answers by method, route template and status (route 'other': no route matched).",
            ["method", "route", "status"],
            registry=registry,
        )
        self.notices_accepted = Counter(
            "deskbridge_notices_accepted",
            "Notices taken on: stage 'gateway' answered a submission 202 (Kafka holds it), stage 'ingest' "
            "wrote its inbox rows (first delivery of the record only).",
            ["stage"],
            registry=registry,
        )
        self.notices_refused = Counter(
            "deskbridge_notices_refused",
            "Notices refused by reason code (docs/errors.md): stage 'gateway' at submission, stage "
            "'ingest' dead-lettered.",
            ["stage", "reason"],
            registry=registry,
        )
        self.post_to_inbox = Histogram(
            "deskbridge_post_to_inbox_seconds",
            "From the broker's append of a notice (during its POST, before the 202) to its inbox rows "
            "committed by ingest, by priority.",
            ["priority"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "deskbridge_consumer_lag",
            "Records on a partition not yet consumed: its end offset minus the consumer's position.",
            ["consumer", "topic", "partition"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "deskbridge_dead_letters",
            "Records ingest wrote to the dead-letter topic, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.webhook_attempts = Counter(
            "deskbridge_webhook_attempts",
            "Webhook POSTs by kind (delivery, escalation) and outcome (delivered; failed: retried later, "
            "or never for an escalation; parked: failed and out of attempts).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.sla_escalations = Counter(
            "deskbridge_sla_escalations",
            "Delivered copies that passed their priority's acknowledgement deadline unacknowledged.",
            ["priority"],
            registry=registry,
        )
        self.outage = Gauge(
            "deskbridge_outage",
            "1 while the last probe of a dependency (database, kafka) from this process failed, else 0; "
            "absent until the first probe.",
            ["dependency"],
            registry=registry,
        )

    # ---- the gateway ----------------------------------------------------------------------------------

    def submission_accepted(self) -> None:
        self.notices_accepted.labels("gateway").inc()

    def submission_refused(self, reason: str) -> None:
        self.notices_refused.labels("gateway", reason).inc()

    # ---- ingest ---------------------------------------------------------------------------------------

    def reached_inbox(self, priority: str, appended_ms: int) -> None:
        """A notice's inbox rows are committed; `appended_ms` is its record's broker timestamp. Clocks of
        different machines may disagree by a little: a negative latency counts as 0."""
        self.notices_accepted.labels("ingest").inc()
        self.post_to_inbox.labels(priority).observe(max(0.0, time.time() - appended_ms / 1000))

    def dead_lettered(self, reason: str, notice: bool) -> None:
        """A record went to the dead-letter topic; `notice`: it was a notice (not a recall)."""
        self.dead_letters.labels(reason).inc()
        if notice:
            self.notices_refused.labels("ingest", reason).inc()

    def escalated(self, priority: str) -> None:
        self.sla_escalations.labels(priority).inc()

    def webhook_attempt(self, kind: str, outcome: str) -> None:
        self.webhook_attempts.labels(kind, outcome).inc()

    # ---- audit ----------------------------------------------------------------------------------------

    def audit_log(self, seen: Callable[[], AuditLogSeen | None]) -> None:
        """The log's gauges, read at each scrape from what the audit service last saw of its log (nothing
        before its checkpoint publisher has started: size 0, no checkpoint)."""

        def size() -> float:
            log = seen()
            return float(log.size) if log is not None else 0.0

        def age() -> float:
            log = seen()
            newest = log.newest_checkpoint_at if log is not None else None
            return math.nan if newest is None else max(0.0, time.time() - newest.timestamp())

        Gauge(
            "deskbridge_audit_tree_size",
            "Entries in the audit log (leaves of its Merkle tree).",
            registry=self.registry,
        ).set_function(size)
        Gauge(
            "deskbridge_audit_checkpoint_age_seconds",
            "Seconds since the newest signed checkpoint was made (NaN before the first).",
            registry=self.registry,
        ).set_function(age)


class AuditLogSeen(Protocol):
    """What the audit service last saw of its log (services/transparency/checkpoints.py's Publisher)."""

    size: int
    newest_checkpoint_at: datetime | None
