"""A throwaway PostgreSQL cluster for the test session, built from Debian's server binaries.

Why not pytest-postgresql's ``postgresql_proc``/``PostgreSQLExecutor``: it runs ``pg_ctl initdb`` and
``pg_ctl start`` as the *current* user and has no hook to switch users, while ``initdb`` and
``postgres`` refuse to run as root -- and the tests (and CI) run as root. Wrapping ``pg_ctl`` in a
shell script would work but hides the trick inside a fake executable. So this module runs the
server tools itself: as root, as the ``postgres`` OS user (the Debian ``postgresql`` package creates
it) on a temp directory chowned to that user; as any other user, directly. ``initdb`` goes through
``runuser -u postgres --``; the server is the ``postgres`` binary itself, a child of this process that
:func:`spawn_child` switches to that user, so that it dies with this process even when that is killed
with SIGKILL. Started by ``pg_ctl start`` (which daemonizes it) or by ``runuser`` (which forks it), the
server would outlive a killed test run.

Client-side tools (``createdb``, ``pg_isready``) and client connections are fine as root: the
cluster uses ``trust`` auth on loopback TCP, so every test connects as the ``postgres`` role.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from devstack.kafka import free_port
from devstack.processes import Started, spawn_child

_PG_ROOT = Path("/usr/lib/postgresql")
_OS_USER = "postgres"
_SUPERUSER = "postgres"

# fsync/full_page_writes only protect against an OS crash, irrelevant for a cluster deleted after
# the run. synchronous_commit stays on: without it a *process* crash (kill()) can lose commits.
_SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "'32MB'",
    "max_connections": "200",
    "log_min_messages": "warning",
}


def find_bin_dir(root: Path = _PG_ROOT) -> Path:
    """Newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb``."""
    candidates = [
        d for d in root.glob("*") if re.fullmatch(r"\d+", d.name) and (d / "bin" / "initdb").exists()
    ]
    if not candidates:
        raise RuntimeError(
            f"No PostgreSQL server binaries under {root}/<version>/bin (apt install postgresql)"
        )
    return max(candidates, key=lambda d: int(d.name)) / "bin"


class PostgresCluster(Started):
    """initdb + the postgres server on a private temp directory and a free loopback port.

    ``start()`` initialises the cluster on first use; after ``kill()`` it restarts the existing data
    (with crash recovery). ``stop()`` shuts down and deletes everything.
    """

    def __init__(
        self, bin_dir: Path | None = None, port: int | None = None, settings: Mapping[str, str] | None = None
    ) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.settings = {**_SERVER_SETTINGS, **(settings or {})}  # postgresql.conf values, quoted as there
        self.port = port or free_port()
        self._as_root = os.geteuid() == 0
        self._proc: subprocess.Popen[bytes] | None = None
        if self._as_root:
            try:
                pw = pwd.getpwnam(_OS_USER)
            except KeyError:
                raise RuntimeError(
                    f"Running as root, but OS user {_OS_USER!r} does not exist; PostgreSQL refuses to "
                    "run as root. Install Debian's postgresql package (it creates the user) or run "
                    "the tests as a non-root user."
                ) from None
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
        # Not under pytest's tmp_path: that lives in 0700 root-owned dirs the postgres user can't enter.
        self.base_dir = Path(tempfile.mkdtemp(prefix="deskbridge-pg-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "postgres.log"
        self.socket_dir.mkdir()
        if self._as_root:
            for p in (self.base_dir, self.socket_dir):
                os.chown(p, self._uid, self._gid)

    # -- helpers ---------------------------------------------------------------------------------

    def _server_cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", _OS_USER, "--", *cmd] if self._as_root else cmd

    def _run(self, cmd: list[str], what: str, timeout: float = 60.0) -> None:
        # cwd inside base_dir: the postgres user may not be allowed to enter the caller's cwd.
        proc = subprocess.run(
            cmd, cwd=self.base_dir, capture_output=True, text=True, check=False, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL {what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                f"{proc.stdout}{proc.stderr}\n--- {self.log_file} ---\n{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log file)"

    def _initdb(self) -> None:
        self._run(
            self._server_cmd(
                "initdb",
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                _SUPERUSER,
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # nothing to gain from fsyncing a throwaway cluster
            ),
            "initdb",
        )
        # Settings go into postgresql.conf (not the command line) so a restart after kill() reuses them.
        settings = {
            **self.settings,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        with (self.data_dir / "postgresql.conf").open("a") as fh:
            fh.write("\n# deskbridge test cluster\n")
            fh.writelines(f"{k} = {v}\n" for k, v in settings.items())

    # -- public API ------------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy async URL for ``dbname``."""
        return f"postgresql+asyncpg://{_SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """Plain libpq-style DSN, for asyncpg.connect / psycopg."""
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id, once started."""
        return None if self._proc is None else self._proc.pid

    def is_running(self) -> bool:
        return (
            subprocess.run(
                ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", _SUPERUSER],
                check=False,
            ).returncode
            == 0
        )

    def start(self, timeout: float = 60.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        with self.log_file.open("ab") as log:
            self._proc = spawn_child(
                [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
                cwd=self.base_dir,  # the postgres user may not be allowed to enter the caller's cwd
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self._uid if self._as_root else None,
                group=self._gid if self._as_root else None,
            )
        deadline = time.monotonic() + timeout
        while not self.is_running():
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise RuntimeError(f"PostgreSQL exited with {code} during startup:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"PostgreSQL not ready on port {self.port}:\n{self._log_tail()}")
            time.sleep(0.1)

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL."""
        subprocess.run(
            ["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", _SUPERUSER, name],
            check=True,
            capture_output=True,
        )
        return self.url(name)

    def kill(self) -> None:
        """Crash the server (SIGKILL) for fault tests; ``start()`` brings it back with the same data."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        pid = proc.pid
        with contextlib.suppress(ProcessLookupError):
            # The postmaster leads its own process group, which holds every backend too;
            # killing only the postmaster would leave backends pinning the shared memory.
            os.killpg(pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then delete the cluster directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc = None
        shutil.rmtree(self.base_dir, ignore_errors=True)
