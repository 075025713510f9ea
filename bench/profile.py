"""Where the time goes: CPU seconds per notice for each process, and py-spy samples of a service."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from services.platform.database import ROOT


def _stat(pid: str) -> list[str]:
    """/proc/<pid>/stat fields after the command name (which may hold spaces), from the state on."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _processes() -> dict[int, list[str]]:
    """Every process's stat fields (as _stat gives them), by pid; one that ends meanwhile is left out."""
    found: dict[int, list[str]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                found[int(proc.name)] = _stat(proc.name)
    return found


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a process and all its descendants, living or reaped (PostgreSQL's backends)."""
    processes = _processes()
    parents = {pid: int(fields[1]) for pid, fields in processes.items()}
    tree, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grew = bool(found)
    ticks = 0
    for pid in tree & processes.keys():
        fields = processes[pid]
        ticks += int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if pid == root else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def jit_cpu_seconds(jvm: int) -> float:
    """CPU seconds of a JVM's JIT compiler threads ("C1 CompilerThread0", ... as /proc truncates them)."""
    ticks = 0
    for task in Path(f"/proc/{jvm}/task").iterdir():
        try:
            if "CompilerThre" in (task / "comm").read_text():
                fields = _stat(f"{jvm}/task/{task.name}")
                ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            continue  # a thread that ended meanwhile
    return ticks / os.sysconf("SC_CLK_TCK")


def _tcp_ports() -> dict[int, tuple[int, int]]:
    """Every TCP socket's (local port, remote port), by its inode."""
    ports: dict[int, tuple[int, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
                ports[int(fields[9])] = (local, remote)
    return ports


def _socket_inodes(pid: int) -> list[int]:
    """The inodes of the process's open sockets; none if it is gone."""
    inodes = []
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.append(int(link[8:-1]))
    return inodes


class DatabaseClients:
    """CPU seconds of the PostgreSQL backends (the postmaster's children) serving each client process: a
    backend serves the client one of whose TCP sockets is its peer. Clients are named, each by a function
    giving its pid now (a service may be restarted). A backend is remembered with its last reading, so a
    client's figure only grows; one that starts and ends between two readings is not seen. Readings
    within 50 ms of each other are one (a meter reads every clock at once)."""

    def __init__(self, postmaster: int, clients: Mapping[str, Callable[[], int]]) -> None:
        self._postmaster = postmaster
        self._clients = clients
        self._backends: dict[tuple[int, str], tuple[str, float]] = {}  # (pid, start time): client, CPU s
        self._read_at = -1.0
        self._totals: dict[str, float] = {}

    def clock(self, name: str) -> Callable[[], float]:
        return lambda: self.read()[name]

    def read(self) -> dict[str, float]:
        if time.monotonic() - self._read_at > 0.05:
            self._totals = self._read()
            self._read_at = time.monotonic()
        return self._totals

    def _read(self) -> dict[str, float]:
        ports = _tcp_ports()
        owners = {  # a client's local ports
            ports[inode][0]: name
            for name, pid in self._clients.items()
            for inode in _socket_inodes(pid())
            if inode in ports
        }
        for pid, fields in _processes().items():
            if int(fields[1]) != self._postmaster:
                continue
            key = (pid, fields[19])
            peers = (ports[inode][1] for inode in _socket_inodes(pid) if inode in ports)
            client = next((owners[port] for port in peers if port in owners), None)
            known = self._backends.get(key)
            if client is None and known is not None:
                client = known[0]  # its client may be between readings of its own sockets
            if client is not None:
                self._backends[key] = (client, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        totals = dict.fromkeys(self._clients, 0.0)
        for client, seconds in self._backends.values():
            totals[client] += seconds
        return totals


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle on all cores since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Profile:
    """py-spy's samples of one process: `busy` of `possible` (one thread's worth) found it working."""

    name: str
    busy: int
    possible: int
    inclusive: list[tuple[str, float]]  # our functions by share of busy samples, largest first
    leaves: list[tuple[str, float]]  # where the samples were when taken (self time)


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


def start_recording(pid: int, seconds: int, out: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed (pip install -e '.[bench]')")
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nolineno",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>.+)\)$")


# Where a thread waits rather than works; py-spy's own idle detection misses these here.
WAITING = (
    "selectors.py:EpollSelector.select",
    "threading.py:Condition.wait",
    "threading.py:Event.wait",
    "concurrent/futures/thread.py:_worker",
)


def _is_entry(frame: str) -> bool:
    """Frames every sample passes through: the module entry point and `main`."""
    return frame.endswith(":<module>") or ":main" in frame


def summarise(name: str, collapsed: Path, seconds: int, rate: int = 200, top: int = 12) -> Profile:
    """Reads py-spy's collapsed stacks ("frame;frame;... count" per line); samples waiting in the
    event loop's select or a parked thread are left out, so shares are of the time spent working."""
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    busy = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [label for label in (_label(f) for f in stack.split(";")) if label]
        if not frames or frames[-1] in WAITING:
            continue
        busy += count
        leaves[frames[-1]] += count
        for frame in set(frames):
            if frame.startswith(("services/", "schemas/")) and not _is_entry(frame):
                inclusive[frame] += count
    share = 100 / busy if busy else 0.0
    return Profile(
        name,
        busy,
        seconds * rate,
        [(f, n * share) for f, n in inclusive.most_common(top)],
        [(f, n * share) for f, n in leaves.most_common(top)],
    )


def _label(frame: str) -> str:
    """`function (path)` with the path cut to the repository or the installed package."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match.group("file")
    for marker in (f"{ROOT}/", "/site-packages/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{match.group('function')}"


OTHERS = "everything else on the machine"


class CpuMeter:
    """CPU seconds each process spends inside the metered windows, and the notices they carried."""

    def __init__(self, clocks: dict[str, Callable[[], float]]) -> None:
        self._clocks = clocks
        self._spent = dict.fromkeys(clocks, 0.0)
        self._started: dict[str, float] = {}
        self.notices = 0
        self.windows: list[dict[str, float]] = []  # CPU ms per notice of each clock, window by window

    def start(self) -> None:
        self._started = {name: clock() for name, clock in self._clocks.items()}

    def stop(self, notices: int) -> None:
        window = {name: clock() - self._started[name] for name, clock in self._clocks.items()}
        for name, seconds in window.items():
            self._spent[name] += seconds
        self.notices += notices
        self.windows.append({name: 1000 * seconds / notices for name, seconds in window.items()})

    def ms_per_notice(self, machine: str) -> dict[str, float]:
        """Per process; the `machine` clock's excess over the named processes is named "everything else"."""
        if not self.notices:
            return {}
        per = {name: 1000 * seconds / self.notices for name, seconds in self._spent.items()}
        total = per.pop(machine)
        per[OTHERS] = max(0.0, total - sum(per.values()))
        per["the whole machine"] = total
        return per
