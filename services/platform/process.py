"""How a service process runs: its event loop, and the signals that stop it."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Runs on uvloop where it is installed (uvicorn[standard] brings it on Linux and macOS), plain asyncio
    elsewhere. The consumers spend much of their time in the loop's socket I/O to Kafka and PostgreSQL,
    which uvloop does in C."""
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
