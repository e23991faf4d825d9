"""Fixtures: a throwaway PostgreSQL (or GOVERNED_DB_TEST_DSN), the corpus schema, governed connections."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

import governed_db
from governed_db import Identity
from governed_db._pgcluster import Cluster
from governed_db.audit import AuditLog

ROOT = Path(__file__).resolve().parents[1]
CORPUS = next((p for p in (ROOT.parent / "shared" / "corpus", ROOT / "tests" / "corpus")
               if (p / "statements.jsonl").exists()), None)


# Nothing the suite runs — in-process, in subprocesses, in pytester runs — may write to the
# real home directory: the whole session gets a home, a state directory and an XDG state
# directory of its own (each test then gets its own GOVERNED_DB_HOME on top).
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="governed_db_test_home_"))
os.environ["HOME"] = str(_SESSION_HOME)
os.environ["XDG_STATE_HOME"] = str(_SESSION_HOME / ".local" / "state")
os.environ["GOVERNED_DB_HOME"] = str(_SESSION_HOME / "governed_db")


def pytest_unconfigure(config: pytest.Config) -> None:
    # Close what the library opened under the session home (default audit log, approval
    # notifiers still finishing a retry) before the directory goes, so nothing is written
    # into a removed directory at interpreter exit.
    governed_db.reset_defaults()
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--test-dsn", default=None, help="use an existing PostgreSQL server")


@pytest.fixture(scope="session")
def server_dsn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    dsn = request.config.getoption("--test-dsn") or os.environ.get("GOVERNED_DB_TEST_DSN")
    if dsn:
        yield dsn
        return
    with Cluster() as cluster:
        yield cluster.dsn


def _schema_sql() -> str:
    text = (CORPUS / "schema.sql").read_text() if CORPUS else (ROOT / "tests" / "schema.sql").read_text()
    return text


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> str:
    """A database with the corpus schema, used as a template for per-test databases."""
    name = f"gdb_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    dsn = re.sub(r"dbname=\S+", f"dbname={name}", server_dsn)
    with psycopg.connect(dsn, autocommit=True) as c:
        has_dblink = c.execute("SELECT count(*) FROM pg_available_extensions"
                               " WHERE name = 'dblink'").fetchone()[0]
        sql = _schema_sql()
        if not has_dblink:
            sql = sql.replace("CREATE EXTENSION dblink;", "")
        c.execute(sql)
        c.execute("DO $$BEGIN CREATE ROLE app_ro; EXCEPTION WHEN duplicate_object THEN NULL; END$$")
    return name


@contextlib.contextmanager
def scratch_database(server_dsn: str, template: str | None = None, prefix: str = "gdb"):
    """A new database (empty, or a copy of ``template``) dropped afterwards; yields its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    try:
        yield re.sub(r"dbname=\S+", f"dbname={name}", server_dsn)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def dsn(server_dsn: str, template_db: str):
    """A fresh database per test (from the template): tests may change anything."""
    with scratch_database(server_dsn, template_db) as d:
        yield d


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    _audit_logs_agree_with_the_reference_verifier: None):
    monkeypatch.setenv("GOVERNED_DB_HOME", str(tmp_path / "state"))
    for var in ("GOVERNED_DB_POLICY", "GOVERNED_DB_AUDIT", "GOVERNED_DB_IDENTITY"):
        monkeypatch.delenv(var, raising=False)
    governed_db.reset_defaults()
    yield
    governed_db.reset_defaults()


@pytest.fixture(autouse=True)
def _audit_logs_agree_with_the_reference_verifier(tmp_path: Path):
    """Every audit log a test leaves behind verifies alike with docs/verify_audit_log.py
    (checked after the logs the test opened were closed: _isolated_state depends on it)."""
    yield
    from .fix_audit_reference import logs_in, verdicts

    for path in logs_in(tmp_path):
        ours, theirs = verdicts(path)
        assert ours == theirs, (
            f"{path}: governed-db audit verify says {ours or 'intact'}, the reference verifier"
            f" {theirs or 'intact'} (first bad line; None: intact)")


@pytest.fixture
def audit() -> AuditLog:
    log = AuditLog.in_memory()
    yield log
    log.close()


AGENT = Identity("recs-bot", "ai_agent", purpose="weekly recommendations", model="test-llm")
HUMAN = Identity("alice", "human", purpose="support")


@pytest.fixture
def agent_conn(dsn: str, audit: AuditLog):
    conn = governed_db.connect(dsn, identity=AGENT, audit=audit)
    yield conn
    conn.close()


@pytest.fixture
def human_conn(dsn: str, audit: AuditLog):
    conn = governed_db.connect(dsn, identity=HUMAN, audit=audit, autocommit=True)
    yield conn
    conn.close()


@pytest.fixture
async def async_agent_conn(dsn: str, audit: AuditLog):
    conn = await governed_db.AsyncConnection.connect(dsn, identity=AGENT, audit=audit)
    yield conn
    await conn.close()


def corpus_statements() -> list[dict]:
    if CORPUS is None:
        return []
    return [json.loads(line) for line in (CORPUS / "statements.jsonl").read_text().splitlines()]


# Sensitive by name/value under the default profile (qnm: users.name, a person's name by its
# table's context).
MARKERS = ("qem", "qsn", "qtk", "qxe", "qee", "qnm")
