"""How a service process runs: its event loop, and the signals that stop it."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


# The cyclic garbage collector's young generation, in container objects allocated and not yet freed
# (Python's default: 700). A request or a batch leaves few reference cycles, but at 700 the collector ran
# dozens of times a second under load, and every few seconds a full pass over the 150,000-180,000 objects
# of startup: 11 % of the gateway's CPU, 6 % of audit's and 3 % of ingest's (gc.callbacks in the running
# services). At 20,000 it ran about never under the same load, for a few MB of cycles waiting at most.
YOUNG_OBJECTS = 20_000


def settle_memory() -> None:
    """For a service process about to serve: what startup made (modules, models, schemas, routes) lives
    as long as the process, so it is frozen out of the collector's passes, and the young generation is
    widened to YOUNG_OBJECTS."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, 10, 10)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Runs on uvloop where it is installed (uvicorn[standard] brings it on Linux and macOS), plain asyncio
    elsewhere. The consumers spend much of their time in the loop's socket I/O to Kafka and PostgreSQL,
    which uvloop does in C. Memory is settled first (settle_memory)."""
    settle_memory()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so a service finishes its batch and exits cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
