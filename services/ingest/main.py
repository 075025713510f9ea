"""`python -m services.ingest`: the notice consumer, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import random

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from services.delivery.deadlines import Sla, escalate_due, expire_due
from services.delivery.webhook_dispatch import Dispatcher
from services.delivery.webhooks import RetryPolicy
from services.envelope.errors import KeyFileError
from services.envelope.service import Freshness
from services.ingest.handler import NoticeHandler
from services.metrics import exposition
from services.metrics.registry import Metrics
from services.metrics.watch import lag_follower, outages_watched
from services.platform import process, tracing
from services.platform.consumer import consume, ready_topics
from services.platform.database import make_engine, make_sessionmaker
from services.platform.kafka import EventPublisher, KafkaAccess, Topics
from services.platform.logs import configure
from services.platform.outage import TRANSIENT
from services.platform.process import stop_on_signals
from services.platform.settings import Settings
from services.trust.signed_directory import DIRECTORY_KEY_FILE, load_directory_key

log = structlog.get_logger("ingest")


async def run(settings: Settings, stop: asyncio.Event) -> None:
    # The metrics port and the outage probe come first, so an ingest waiting for Kafka shows it.
    metrics = Metrics()
    server = await _serve_metrics(metrics, settings)
    engine = make_engine(settings.database_url)
    kafka = KafkaAccess.of(settings)
    try:
        async with outages_watched(metrics, engine, kafka, settings.outage_probe_s):
            await _consume(settings, kafka, stop, metrics, engine)
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
        await engine.dispose()


async def _serve_metrics(metrics: Metrics, settings: Settings) -> asyncio.Server | None:
    """Ingest's metrics port. A port taken by another process is logged, not fatal: notices matter more
    than their numbers."""
    if not settings.ingest_metrics_port:
        return None
    host, port = settings.ingest_metrics_host, settings.ingest_metrics_port
    try:
        return await exposition.serve(metrics, host, port, settings.metrics_token)
    except OSError as exc:
        log.error("metrics port not opened", host=host, port=port, error=str(exc))
        return None


async def _consume(
    settings: Settings, kafka: KafkaAccess, stop: asyncio.Event, metrics: Metrics, engine: AsyncEngine
) -> None:
    topics = await ready_topics(settings, stop, "ingest")
    publisher = EventPublisher(kafka, "deskbridge-ingest", topics, settings.kafka_send_timeout_s)
    handler = NoticeHandler(
        make_sessionmaker(engine),
        publisher,
        Freshness.of(settings.freshness_s, settings.clock_skew_s),
        Sla.of(settings),
        one_transaction_per_batch=settings.database_url.startswith("postgresql"),
        metrics=metrics,
    )
    log.info("ingest consuming", topic=topics.notices)
    sweeper = asyncio.create_task(sweep_expired(handler, settings.expiry_sweep_s, stop))
    # Webhooks are pushed from here: a slow receiver holds only its own task, never the consumer.
    pusher = (
        asyncio.create_task(run_webhooks(settings, stop, metrics=metrics))
        if settings.webhook_dispatch
        else None
    )
    try:
        await consume(
            kafka,
            [topics.notices],
            f"{settings.topic_prefix}deskbridge-ingest",
            handler,
            stop,
            watch=lag_follower(metrics, "ingest"),
        )
    finally:
        for task in (sweeper, pusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await publisher.close()


async def sweep_expired(handler: NoticeHandler, every_s: float, stop: asyncio.Event) -> None:
    """Marks expired and overdue (escalated) copies and audits each; a failed sweep is retried next tick."""
    while not stop.is_set():
        try:
            async with handler.sessions() as session:
                expired = await expire_due(session)  # first: an expired copy does not escalate
                escalated = await escalate_due(session)
                events = expired + escalated
                # Audited before committed: a crash between re-sweeps and re-sends the same event ids.
                await handler.publisher.publish_many(events, "deskbridge/ingest")
                await session.commit()
            for event in escalated:
                handler.metrics.escalated(str(event.details["priority"]))
        except TRANSIENT as exc:
            log.warning("expiry sweep failed; retrying", error=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


async def run_webhooks(
    settings: Settings, stop: asyncio.Event, rng: random.Random | None = None, metrics: Metrics | None = None
) -> None:
    """Drives every active webhook until `stop`. `rng` draws the retry jitter (tests pin it); `metrics`
    counts the attempts (ingest's, or a registry of their own)."""
    key_file = settings.directory_key_file or settings.desk_keys_dir / DIRECTORY_KEY_FILE
    try:
        key = load_directory_key(key_file)
    except KeyFileError as exc:
        log.error("webhooks are not dispatched: no directory key to sign them with", reason=str(exc))
        return
    engine = make_engine(settings.database_url)
    publisher = EventPublisher(
        KafkaAccess.of(settings),
        "deskbridge-webhooks",
        Topics(settings.topic_prefix),
        settings.kafka_send_timeout_s,
    )
    policy = RetryPolicy(
        settings.webhook_max_attempts,
        settings.webhook_backoff_base_s,
        settings.webhook_backoff_cap_s,
        rng or random.SystemRandom(),
    )
    dispatcher = Dispatcher(make_sessionmaker(engine), publisher, key, settings, policy, metrics or Metrics())
    try:
        await dispatcher.run(stop)
    finally:
        await publisher.close()
        await engine.dispose()


def main() -> None:
    settings = Settings()
    configure(settings.log_level, settings.log_json)
    tracing.configure(settings, "ingest")

    async def serve() -> None:
        await run(settings, stop_on_signals())

    process.run(serve())


if __name__ == "__main__":
    main()
