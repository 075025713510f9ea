"""Which failures mean "a part is out of reach, try again later", never "this request or record is bad".

The APIs answer them with 503 and `Retry-After` (services/platform/views.py); the consumers retry the batch
rather than dead-letter its records (services/platform/consumer.py). One list for both, so a new kind of
outage cannot be a 503 at the edge and a dead letter behind it."""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.platform.errors import BrokerUnavailable, DatabaseUnavailable

# What a lost database raises, as found by stopping and killing PostgreSQL under a running engine:
# - a connection that breaks mid-use: DBAPIError (asyncpg's ConnectionDoesNotExistError inside, with
#   AdminShutdownError or ConnectionResetError under it), and SQLAlchemy then discards the pool;
# - every connect while it is down: ConnectionRefusedError from asyncpg, which SQLAlchemy does not wrap,
#   so database.make_engine names it (and any OSError of connecting) DatabaseUnavailable right there;
# - while it starts up or recovers: asyncpg's CannotConnectNowError (an OperatorInterventionError), which
#   SQLAlchemy 2.1 wraps in DBAPIError (earlier versions let it through);
# - no connection free in time: the pool's TimeoutError.
# Never OSError as such: a receipt's iat beyond time_t raises one too, and that is a bad request.
DATABASE_UNREACHABLE: tuple[type[Exception], ...] = (
    DBAPIError,
    PoolTimeout,
    DatabaseUnavailable,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.InterfaceError,
)
KAFKA_UNREACHABLE: tuple[type[Exception], ...] = (BrokerUnavailable, KafkaError)
TRANSIENT: tuple[type[Exception], ...] = DATABASE_UNREACHABLE + KAFKA_UNREACHABLE
