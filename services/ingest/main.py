"""`python -m services.ingest`: the notice consumer, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio

import structlog

from services.common.consumer import consume
from services.common.db import make_engine, make_sessionmaker
from services.common.kafka import EventPublisher, Topics, create_topics
from services.common.logs import configure
from services.common.runtime import stop_on_signals
from services.common.settings import Settings
from services.ingest.handler import NoticeHandler

log = structlog.get_logger("ingest")


async def run(settings: Settings, stop: asyncio.Event) -> None:
    topics = Topics(settings.topic_prefix)
    await create_topics(settings.kafka_bootstrap, topics, settings.topic_partitions)
    engine = make_engine(settings.database_url)
    publisher = EventPublisher(
        settings.kafka_bootstrap, "deskbridge-ingest", topics, settings.kafka_send_timeout_s
    )
    handler = NoticeHandler(make_sessionmaker(engine), publisher)
    log.info("ingest consuming", topic=topics.notices)
    try:
        await consume(
            settings.kafka_bootstrap,
            [topics.notices],
            f"{settings.topic_prefix}deskbridge-ingest",
            handler,
            stop,
        )
    finally:
        await publisher.close()
        await engine.dispose()


def main() -> None:
    settings = Settings()
    configure(settings.log_level, settings.log_json)

    async def serve() -> None:
        await run(settings, stop_on_signals())

    asyncio.run(serve())


if __name__ == "__main__":
    main()
