"""How a service process runs its event loop: uvloop where it is installed (uvicorn[standard] brings it
on Linux and macOS), plain asyncio elsewhere. The consumers spend much of their time in the loop's
socket I/O to Kafka and PostgreSQL, which uvloop does in C."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
