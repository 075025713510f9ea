"""The bench's CPU clocks on real processes: the broker's JIT compiler is counted apart, within the
broker's own CPU, and a process without compiler threads has none; PostgreSQL's backends are counted
by the client they serve."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg

from bench.profile import DatabaseClients, jit_cpu_seconds, tree_cpu_seconds
from bench.stack import pid_running
from devstack.kafka import KafkaBroker
from tests.support.postgres import PostgresCluster


def test_the_broker_s_jit_compiler_is_a_part_of_its_cpu(kafka_broker: KafkaBroker) -> None:
    jvm = pid_running(str(kafka_broker.data_dir / "server.properties"))
    jit = jit_cpu_seconds(jvm)
    # A broker that has started has compiled its hot paths, and that CPU is the broker's own.
    assert 0 < jit <= tree_cpu_seconds(jvm)
    assert jit_cpu_seconds(os.getpid()) == 0.0


async def test_postgresql_s_cpu_is_told_apart_by_the_client_its_backends_serve(
    pg_cluster: PostgresCluster,
) -> None:
    url = pg_cluster.create_database("clients").replace("postgresql+asyncpg", "postgresql")
    postmaster = pg_cluster.pid
    assert postmaster is not None
    # A client with no connection at all.
    idle = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    try:
        clients = DatabaseClients(postmaster, {"tests": os.getpid, "idle": lambda: idle.pid})
        before = clients.read()
        connection = await asyncpg.connect(url)
        try:
            await connection.fetchval("SELECT count(*) FROM generate_series(1, 3000000)")
            await asyncio.sleep(0.1)  # past the reading kept for a meter's clocks
            after = clients.read()
        finally:
            await connection.close()
    finally:
        idle.kill()
        await idle.wait()
    # The backend's work is this process's; the other client has no backend, so nothing.
    assert after["tests"] - before["tests"] >= 0.1
    assert after["idle"] == before["idle"] == 0.0
    # A backend once seen is remembered: its client's figure does not fall when it has gone.
    await asyncio.sleep(0.1)
    assert clients.read()["tests"] >= after["tests"]
