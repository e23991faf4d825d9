"""Audit sinks: a PostgreSQL store shared by many writers (down and back), OTLP log export."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import psycopg
import pytest
from click.testing import CliRunner

import governed_db
from governed_db import Identity, errors
from governed_db.audit import AuditLog, record_hash, verify
from governed_db.cli import main

from .conftest import scratch_database

SVC = Identity("sink-svc", "service")


def _url(dsn: str) -> str:
    parts = dict(p.split("=", 1) for p in dsn.split())
    db = parts.pop("dbname")
    return f"postgresql:///{db}?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in parts.items())


@pytest.fixture
def store(server_dsn, monkeypatch):
    with scratch_database(server_dsn, prefix="gdb_audit") as dsn:
        monkeypatch.setenv("GOVERNED_DB_AUDIT_DSN", dsn)
        yield dsn.split("dbname=")[1].split()[0], dsn
        with psycopg.connect(server_dsn, autocommit=True) as c:
            c.execute(f"ALTER DATABASE {dsn.split('dbname=')[1].split()[0]}"
                      " ALLOW_CONNECTIONS true")


def _rows(dsn: str) -> list[tuple[str, int]]:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT chain, seq FROM governed_db.audit_log ORDER BY chain, seq"
                         ).fetchall()


def test_postgres_store_from_two_writers_verifies(dsn, store, tmp_path):
    _, store_dsn = store
    logs = [AuditLog.open(tmp_path / f"w{i}.jsonl") for i in range(2)]
    for log in logs:
        with governed_db.connect(dsn, identity=SVC, audit=log, autocommit=True) as c:
            c.execute("SELECT id FROM users").fetchall()
        log.close()
    rows = _rows(store_dsn)
    assert len({chain for chain, _ in rows}) == 2
    result = CliRunner().invoke(main, ["audit", "verify", _url(store_dsn)])
    assert result.exit_code == 0, result.output
    assert "2 chain(s)" in result.output
    report = CliRunner().invoke(main, ["audit", "query", _url(store_dsn), "--identity",
                                       "sink-svc", "--json"])
    assert len(report.output.strip().splitlines()) == 2


def test_postgres_store_down_and_back_loses_and_duplicates_nothing(dsn, store, tmp_path,
                                                                    server_dsn):
    name, store_dsn = store
    log = AuditLog.open(tmp_path / "audit.jsonl", settings={"batch_ms": 0})
    with governed_db.connect(dsn, identity=SVC, audit=log, autocommit=True) as conn:
        conn.execute("SELECT 1")
        log.flush()
        with psycopg.connect(server_dsn, autocommit=True) as admin:  # the store goes away
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE datname = %s", (name,))
        conn.execute("SELECT 2")
        with pytest.raises(errors.AuditUnavailable):
            log.flush(timeout=5)
        with pytest.raises(errors.AuditUnavailable, match="cannot be written"):
            conn.execute("SELECT 3")  # fail closed
        with psycopg.connect(server_dsn, autocommit=True) as admin:  # and comes back
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        deadline = time.monotonic() + 10
        while log.error is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        conn.execute("SELECT 4")
    log.close()
    rows = _rows(store_dsn)
    assert len(rows) == len(set(rows))
    file_recs = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(r["chain"], r["seq"]) for r in file_recs] == rows  # same records, once each
    assert sum(1 for r in file_recs if r["type"] == "statement") == 3
    verify(_url(store_dsn), log.key.public_key())


def test_otlp_log_export(tmp_path):
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    log = AuditLog.open(tmp_path / "audit.jsonl",
                        settings={"otlp": True, "otlp_logger_provider": provider})
    log.event("connect", SVC, {"dbname": "x"})
    log.close()
    exported = [json.loads(r.log_record.body) for r in exporter.get_finished_logs()]
    assert [r["type"] for r in exported] == ["connect", "checkpoint"]
    assert all(record_hash(r) == r["hash"] for r in exported)
