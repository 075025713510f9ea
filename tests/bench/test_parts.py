"""The bench's bare HTTP part: a real uvicorn serving the bare route, POSTed to for real."""

from __future__ import annotations

import os
from pathlib import Path

from bench.parts import bare_http


async def test_a_bare_http_post_is_metered_for_the_machine_and_for_its_server_alone(tmp_path: Path) -> None:
    before = set(os.listdir("/proc"))
    part = await bare_http(
        b'{"payload": "' + b"A" * 12_000 + b'"}',
        requests=1000,
        connections=8,
        repeats=2,
        log=tmp_path / "bare.log",
    )
    assert part.rate.runs == 2 and part.rate.median > 0
    assert part.server_cpu_ms is not None and part.server_cpu_ms.runs == 2
    # The server did work for each request, and the machine's CPU holds the server's (and the client's).
    assert 0 < part.server_cpu_ms.median < part.cpu_ms.median
    # The server is gone once measured: no process of the bare route is left behind.
    left = [
        pid for pid in set(os.listdir("/proc")) - before if pid.isdigit() and b"bench.bare" in _cmdline(pid)
    ]
    assert left == []


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
