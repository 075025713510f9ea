"""The bench's CPU clocks on real processes: the broker's JIT compiler is counted apart, within the
broker's own CPU, and a process without compiler threads has none."""

from __future__ import annotations

import os

from bench.profile import jit_cpu_seconds, tree_cpu_seconds
from bench.stack import pid_running
from devstack.kafka import KafkaBroker


def test_the_broker_s_jit_compiler_is_a_part_of_its_cpu(kafka_broker: KafkaBroker) -> None:
    jvm = pid_running(str(kafka_broker.data_dir / "server.properties"))
    jit = jit_cpu_seconds(jvm)
    # A broker that has started has compiled its hot paths, and that CPU is the broker's own.
    assert 0 < jit <= tree_cpu_seconds(jvm)
    assert jit_cpu_seconds(os.getpid()) == 0.0
