"""Child processes that die with the process that started them, however it dies.

The tests, ``deskbridge up``, the bench and the fault runs start long-lived children: Kafka's JVM, the
PostgreSQL server, the services. A ``finally`` stops them, but a parent killed with SIGKILL (or by a
CI timeout) runs no ``finally``. :func:`spawn_child` starts each child

- in a session (so a process group) of its own: ``os.killpg(child.pid, sig)`` reaches it and anything
  it forks, and a Ctrl-C in the terminal reaches only the parent, which stops its children in order;
- with a parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, set between fork and exec):
  when the parent dies, for whatever reason, the kernel kills the child.

Pitfalls of the parent-death signal, and how they are met here:

- It fires when the *thread* that forked the child ends, not the process. So children are forked on the
  main thread (which runs until the interpreter exits), or, when :func:`spawn_child` is called from any
  other thread (``asyncio.to_thread``, an executor, whose threads end with ``asyncio.run``), on one
  spawner thread that lives as long as the process.
- It is cleared when the child changes its user or group after setting it. Popen's ``user``/``group``
  switch before ``preexec_fn`` sets it, so :func:`spawn_child` takes those instead of ``runuser`` or
  ``su`` in front of the command.
- It goes to the child only, not to the child's own children. ``runuser`` and ``su`` fork the real
  program and ``pg_ctl start`` daemonizes it, so spawn the long-lived program itself. A JVM is one
  process, and a postmaster's backends exit when it dies.
- If the parent died between fork and ``prctl``, no signal comes: the child then kills itself.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from queue import SimpleQueue
from types import TracebackType
from typing import IO, Any, Self

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Loaded here, not in the child: between fork and exec the child should do as little as it can.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None

File = int | IO[Any] | None  # what Popen takes for stdin, stdout and stderr
_Job = tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]


def _die_with(parent: int) -> None:
    """``preexec_fn``: SIGKILL this child when the thread of ``parent`` that forked it ends."""
    if _LIBC is None:  # no parent-death signal off Linux: the process group is all there is
        return
    if _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # orphaned before prctl ran: the signal will never come
        os.kill(os.getpid(), signal.SIGKILL)


_spawner: tuple[threading.Thread, SimpleQueue[_Job]] | None = None
_spawner_lock = threading.Lock()


def _serve(jobs: SimpleQueue[_Job]) -> None:
    while True:
        start, result = jobs.get()
        try:
            result.set_result(start())
        except Exception as exc:
            result.set_exception(exc)


def _on_lasting_thread(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """``start()`` on the main thread, or else on the spawner thread (a daemon, so it ends with the
    process, and only then)."""
    if threading.current_thread() is threading.main_thread():
        return start()
    global _spawner
    result: Future[subprocess.Popen[bytes]] = Future()
    with _spawner_lock:
        if _spawner is None or not _spawner[0].is_alive():  # not alive: in a fork() of this process
            jobs: SimpleQueue[_Job] = SimpleQueue()
            thread = threading.Thread(target=_serve, args=(jobs,), name="child-spawner", daemon=True)
            thread.start()
            _spawner = (thread, jobs)
        _spawner[1].put((start, result))
    return result.result()


def spawn_child(
    args: Sequence[str],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: File = None,
    stdout: File = None,
    stderr: File = None,
    user: str | int | None = None,
    group: str | int | None = None,
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, ...)`` for a child that is killed when this process dies, in a session of
    its own so that ``os.killpg(child.pid, sig)`` signals it together with its own children.

    ``user`` and ``group`` run it as that user and group, with no supplementary groups (as root).
    """
    parent = os.getpid()

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            user=user,
            group=group,
            extra_groups=None if user is None else [],
            start_new_session=True,
            preexec_fn=functools.partial(_die_with, parent),
        )

    return _on_lasting_thread(start)


class Started:
    """Something `with` starts and stops however the block ends (a broker, a cluster, a database)."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
