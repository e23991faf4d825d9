"""A throwaway PostgreSQL cluster for tests and the demo, started from the server binaries.

``initdb`` refuses to run as root, so as root the cluster is created and run as the
``postgres`` OS user (``runuser -u postgres --``) in a temporary directory it owns, listening
on a unix socket in that directory and a free loopback port. :meth:`stop` removes everything.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["Cluster", "ClusterError", "find_bindir"]


class ClusterError(RuntimeError):
    """The throwaway cluster could not be started; the message says what to install or set."""


def find_bindir() -> Path:
    for candidate in (os.environ.get("GOVERNED_DB_PG_BINDIR"),):
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        path = Path(out.stdout.strip())
        if (path / "initdb").exists():
            return path
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    for path in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (path / "initdb").exists():
            return path
    raise ClusterError("PostgreSQL server binaries (initdb, pg_ctl) not found: install"
                       " postgresql (apt-get install postgresql) or set GOVERNED_DB_PG_BINDIR,"
                       " or point GOVERNED_DB_TEST_DSN / --dsn at an existing server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """``with Cluster() as c: psycopg.connect(c.dsn)``."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="governed_db_pg_"))
        self.datadir = self.base / "data"
        self.port = _free_port()
        self.started = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise ClusterError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
        return proc

    def start(self) -> Cluster:
        if self.as_root:
            shutil.chown(self.base, "postgres", "postgres")
        os.chmod(self.base, 0o700)
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port}"
                f" -c unix_socket_directories={self.base} -c fsync=off"
                " -c synchronous_commit=off -c full_page_writes=off -c max_connections=60")
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.base / "log"), "-o", opts,
                  "-w", "-t", "60", "start")
        self.started = True
        return self

    @property
    def dsn(self) -> str:
        return f"host={self.base} port={self.port} user=postgres dbname=postgres"

    def dsn_for(self, dbname: str) -> str:
        return f"host={self.base} port={self.port} user=postgres dbname={dbname}"

    def restart(self) -> None:
        """Restart the server (fast shutdown: open sessions are terminated)."""
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.base / "log"), "-m", "fast",
                  "-w", "-t", "60", "restart")

    def stop(self) -> None:
        if self.started:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop",
                      check=False)
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_ready(dsn: str, timeout: float = 30) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
