"""A service process settles its memory before it serves: startup's objects frozen out of the cyclic
collector's passes, a wider young generation, and garbage cycles made afterwards still collected. Run in a
child interpreter, since it changes the collector of the process that calls it."""

from __future__ import annotations

import json
import subprocess
import sys

from services.platform.process import YOUNG_OBJECTS

CHILD = """
import gc, json, weakref
import services.gateway.app  # what a service imports before it serves
before = gc.get_freeze_count()
from services.platform.process import settle_memory
settle_memory()

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a cycle that reference counting alone never frees
gone = weakref.ref(a)
del a, b
gc.collect()
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "threshold": gc.get_threshold(),
                  "cycle_collected": gone() is None}))
"""


def test_settling_freezes_what_startup_made_and_still_collects_later_cycles() -> None:
    command = [sys.executable, "-c", CHILD]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)  # noqa: S603
    found = json.loads(done.stdout)
    assert found["before"] == 0
    assert found["frozen"] > 50_000  # the modules, models and schemas of the gateway's app
    assert found["threshold"] == [YOUNG_OBJECTS, 10, 10]
    assert found["cycle_collected"]
