"""Which failures mean "a part is out of reach, try again later", never "this request or record is bad".

The APIs answer them with 503 and `Retry-After` (services/platform/views.py); the consumers retry the batch
rather than dead-letter its records (services/platform/consumer.py). One list for both, so a new kind of
outage cannot be a 503 at the edge and a dead letter behind it."""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.platform.errors import BrokerUnavailable

# DBAPIError covers OperationalError and InterfaceError (a dropped connection); asyncpg's own errors
# escape SQLAlchemy while a connection is being opened, e.g. "the database system is starting up".
# OSError covers a refused or reset connection and TimeoutError (one of its subclasses since 3.10).
DATABASE_UNREACHABLE: tuple[type[Exception], ...] = (
    DBAPIError,
    PoolTimeout,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.InterfaceError,
    OSError,
)
KAFKA_UNREACHABLE: tuple[type[Exception], ...] = (BrokerUnavailable, KafkaError)
TRANSIENT: tuple[type[Exception], ...] = DATABASE_UNREACHABLE + KAFKA_UNREACHABLE
