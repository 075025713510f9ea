"""One settings class, read once at start from DESKBRIDGE_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DESKBRIDGE_", extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///var/deskbridge.db",
        description="SQLAlchemy async URL; SQLite locally, PostgreSQL (postgresql+asyncpg://) in production.",
    )
    kafka_bootstrap: str = "127.0.0.1:9092"
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
    max_body_bytes: int = 1_048_576
    freshness_s: int = Field(
        default=300, description="Envelopes and signed requests older than this are refused as stale."
    )
    expiry_sweep_s: float = Field(default=30, description="How often ingest marks expired notices.")
    clock_skew_s: int = Field(default=30, description="How far in the future a sender's clock may be.")
    directory_key_file: Path | None = Field(
        default=None,
        description="The directory signing key (private JWK); default: directory.jwk.json in desk_keys_dir.",
    )
    kafka_send_timeout_s: float = 10.0
    log_level: str = "info"
    log_json: bool = False
