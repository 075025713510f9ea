"""One settings class, read once at start from DESKBRIDGE_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DESKBRIDGE_", extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///var/deskbridge.db",
        description="SQLAlchemy async URL; SQLite locally, PostgreSQL (postgresql+asyncpg://) in production.",
    )
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL"] = Field(
        default="PLAINTEXT",
        description="SSL: TLS to the brokers, checked against kafka_ca_file, the service known to them by "
        "its client certificate (mutual TLS; `make run` and the tests make one per service).",
    )
    kafka_ca_file: Path | None = Field(
        default=None, description="PEM: the CA the brokers' certificates chain to."
    )
    kafka_cert_file: Path | None = Field(default=None, description="PEM: this service's client certificate.")
    kafka_key_file: Path | None = Field(default=None, description="PEM: the private key of kafka_cert_file.")
    topic_prefix: str = Field(default="", description="Prepended to every topic name; isolates tests.")
    topic_partitions: int = 3
    desk_agency: str = "kr-desk"
    desk_keys_dir: Path = Field(
        default=Path("var/keys/kr-desk"), description="The desk's private keys; the gateway seals with them."
    )
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    audit_host: str = "127.0.0.1"
    audit_port: int = 8081
    audit_public_url: str | None = Field(
        default=None,
        description="The audit service's base URL as browsers reach it (the console's config.json and its "
        "Content-Security-Policy); default: http://{audit_host}:{audit_port}.",
    )
    console_dir: Path | None = Field(
        default=None,
        description="The built browser console the gateway serves at /console (`make setup` builds it); "
        "default: console/dist in the checkout.",
    )
    console_origins: list[str] | None = Field(
        default=None,
        description="Origins whose pages (the console) may call the audit API from a browser (CORS); "
        "a JSON list in the environment; default: http://{gateway_host}:{gateway_port} and "
        "http://localhost:{gateway_port}.",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        description="Largest request body, except POST /v1/envelopes (twice the 2 MiB envelope cap). "
        "1 MiB holds the compact JSON draft of any notice whose envelope fits (docs/envelope.md 4.4).",
    )
    freshness_s: int = Field(
        default=300, description="Envelopes and signed requests older than this are refused as stale."
    )
    inbox_recheck_s: float = Field(
        default=1.0, description="A waiting long-poll or stream looks again this often, woken or not."
    )
    rate_limit_per_s: float = Field(default=500, description="Submissions per second per agency and gateway.")
    rate_limit_burst: float = 1000
    inbox_page_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1,
        description="An inbox page or stream batch stops before its envelopes pass this many bytes (at least "
        "one notice per page).",
    )
    inbox_max_pending: int = Field(default=10_000, description="Unacknowledged notices one inbox may hold.")
    inbox_count_s: float = Field(
        default=1.0, description="How often a gateway re-counts an inbox's pending notices for the cap."
    )
    sla_flash_s: float = Field(default=900, description="A flash notice unacknowledged this long escalates.")
    sla_immediate_s: float = 4 * 3600
    sla_routine_s: float = 3 * 86400
    expiry_sweep_s: float = Field(default=30, description="How often ingest marks expired notices.")
    clock_skew_s: int = Field(default=30, description="How far in the future a sender's clock may be.")
    directory_key_file: Path | None = Field(
        default=None,
        description="The directory signing key (private JWK); default: directory.jwk.json in desk_keys_dir.",
    )
    kafka_send_timeout_s: float = 10.0
    log_level: str = "info"
    log_json: bool = False
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="Sends traces over OTLP/HTTP to this base URL (/v1/traces is appended), like the "
        "standard OTEL_EXPORTER_OTLP_ENDPOINT, which is read too; unset: traces are not exported.",
    )
    webhook_dispatch: bool = Field(default=True, description="Ingest drives the agencies' webhooks.")
    webhook_poll_s: float = Field(default=0.5, description="How often each webhook looks for new deliveries.")
    webhook_timeout_s: float = Field(
        default=10, description="A webhook POST not answered in this is a failure."
    )
    webhook_backoff_base_s: float = Field(
        default=2, description="First retry waits up to this; each further one up to twice the last."
    )
    webhook_backoff_cap_s: float = Field(default=300, description="No retry waits longer than this.")
    webhook_max_attempts: int = Field(default=8, ge=1, description="Attempts before a delivery is parked.")
    webhook_allow_http: bool = Field(
        default=False, description="Accept http:// webhook URLs (loopback tests); https:// only otherwise."
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhooks reach loopback, private, link-local and other non-public addresses "
        "(loopback tests); otherwise refused at registration and before every POST.",
    )
    audit_log_key_file: Path | None = Field(
        default=None,
        description="The audit log's checkpoint signing key (private JWK); default: audit-log.jwk.json in "
        "desk_keys_dir.",
    )
    audit_log_origin: str = Field(
        default="deskbridge.kr-desk/audit-log",
        description="The checkpoints' origin line, also the log key's name in signed notes.",
    )
    checkpoint_interval_s: float = Field(
        default=10, description="How often the audit service signs a checkpoint when the log has grown."
    )
    audit_lease_s: float = Field(
        default=15,
        description="The checkpoint lease's term: a standby audit replica takes over signing at most this "
        "long after the active one died (docs/audit.md).",
    )
    audit_linger_s: float = Field(
        default=0.025,
        ge=0,
        le=1,
        description="The audit consumer waits this long after a batch's first records for more, so that "
        "each transaction appends more entries (no one waits on an entry's first milliseconds).",
    )
    audit_query_window_s: float = Field(
        default=60,
        description="Auditor queries are logged as one auditor.query entry per caller per window of this.",
    )
    metrics_token: str | None = Field(
        default=None,
        description="When set, scraping /metrics (gateway, audit, ingest's metrics port) needs "
        "`Authorization: Bearer <this>`; unset, they are open: set it where a port is reachable from "
        "outside.",
    )
    ingest_metrics_host: str = "127.0.0.1"
    ingest_metrics_port: int = Field(
        default=9464, description="Ingest serves GET /metrics on this port of its own; 0 turns it off."
    )
    outage_probe_s: float = Field(
        default=5, description="How often each service probes the database and Kafka for deskbridge_outage."
    )
