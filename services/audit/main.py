"""`python -m services.audit`: the audit consumer and the auditors' API in one process."""

from __future__ import annotations

import asyncio

import structlog
import uvicorn

from services.audit.app import create_app
from services.audit.handler import AuditHandler
from services.envelope.service import Freshness
from services.metrics.registry import Metrics
from services.metrics.watch import lag_follower
from services.platform import process, tracing
from services.platform.consumer import consume, ready_topics
from services.platform.database import make_engine, make_sessionmaker
from services.platform.kafka import KafkaAccess
from services.platform.logs import configure
from services.platform.process import stop_on_signals
from services.platform.settings import Settings
from services.transparency.storage import TreeMemory

log = structlog.get_logger("audit")


async def run_consumer(settings: Settings, stop: asyncio.Event, metrics: Metrics, tree: TreeMemory) -> None:
    """`metrics`: the process's, which its app serves (its lag per partition); `tree`: what the process
    knows of the log's tree, which its appends teach and its app's proofs read."""
    topics = await ready_topics(settings, stop, "audit")
    engine = make_engine(settings.database_url)
    handler = AuditHandler(
        make_sessionmaker(engine), topics, Freshness.of(settings.freshness_s, settings.clock_skew_s), tree
    )
    log.info("audit consuming", topics=topics.all())
    try:
        await consume(
            KafkaAccess.of(settings),
            topics.all(),
            f"{settings.topic_prefix}deskbridge-audit",
            handler,
            stop,
            watch=lag_follower(metrics, "audit"),
            linger_s=settings.audit_linger_s,
        )
    finally:
        await engine.dispose()


async def serve(settings: Settings) -> None:
    stop = stop_on_signals()
    metrics = Metrics()
    tree = TreeMemory()  # one database, one memory of its tree for the consumer and the app
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, metrics, tree),
            host=settings.audit_host,
            port=settings.audit_port,
            log_level="warning",
            lifespan="on",
        )
    )
    consumer = asyncio.create_task(run_consumer(settings, stop, metrics, tree))
    api = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await asyncio.gather(consumer, api)


def main() -> None:
    settings = Settings()
    configure(settings.log_level, settings.log_json)
    tracing.configure(settings, "audit")
    process.run(serve(settings))


if __name__ == "__main__":
    main()
