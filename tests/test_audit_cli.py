"""The audit CLI answers daily questions, in the README's own words: every identity at once,
relative times, observe-mode and failed statements, validated decisions, tool-call ids, and
output that fits 80 columns."""

from __future__ import annotations

import json

import psycopg
import pytest
from click.testing import CliRunner

import governed_db
from governed_db import Identity, errors
from governed_db.audit import AuditLog
from governed_db.cli import main

AGENT = Identity("recs-bot", "ai_agent", purpose="weekly recommendations", model="test-llm",
                 attributes={"tool_call_id": "call_7Qx2"})
HUMAN = Identity("alice", "human", purpose="support")


@pytest.fixture
def log(dsn, tmp_path):
    path = tmp_path / "audit.jsonl"
    audit = AuditLog.open(path)
    with governed_db.connect(dsn, identity=AGENT, audit=audit) as conn:
        conn.execute("SELECT email FROM users").fetchall()
        with pytest.raises(errors.StatementDenied):
            conn.execute("DROP TABLE users")
    with governed_db.connect(dsn, identity=HUMAN, audit=audit, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table")
    observe = tmp_path / "observe.toml"
    observe.write_text('mode = "observe"\n')
    with governed_db.connect(dsn, identity=Identity("shadow", "ai_agent"), audit=audit,
                             policy=str(observe)) as conn:
        conn.execute("SELECT pg_catalog.pg_sleep(0)").fetchall()  # a dangerous function
    audit.close()
    return str(path)


def _run(*args: str, columns: int = 80):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": str(columns)})


def test_report_without_a_filter_summarizes_every_identity(log):
    result = _run("audit", "report", log)
    assert result.exit_code == 0, result.output
    for who in ("ai_agent:recs-bot", "human:alice", "ai_agent:shadow"):
        assert who in result.output
    rows = json.loads(_run("audit", "report", log, "--json").output)
    agent = next(r for r in rows if r["identity"] == "ai_agent:recs-bot")
    assert agent["statements"] == 2 and agent["ok"] == 1 and agent["denied"] == 1
    assert agent["tool_calls"] == ["call_7Qx2"] and "email" in agent["masked"]
    assert next(r for r in rows if r["identity"] == "human:alice")["errors"] == 1
    assert next(r for r in rows if r["identity"] == "ai_agent:shadow")["would_deny"] == 1


@pytest.mark.parametrize("since", ["today", "1h", "30m", "7d", "yesterday"])
def test_relative_times(log, since):
    result = _run("audit", "query", log, "--since", since, "--json")
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 4  # every statement is from just now
    assert _run("audit", "report", log, "--since", since).exit_code == 0


def test_future_and_bad_times(log):
    assert _run("audit", "query", log, "--until", "1h", "--json").output == ""
    bad = _run("audit", "query", log, "--since", "last tuesday")
    assert bad.exit_code == 2 and "not a time" in bad.output


def test_decision_is_validated_and_selects_observe_and_failures(log):
    bad = _run("audit", "query", log, "--decision", "maybe")
    assert bad.exit_code == 2 and "would_deny" in bad.output  # the choices are listed
    would = [json.loads(x) for x in _run("audit", "query", log, "--decision", "would_deny",
                                         "--json").output.splitlines()]
    assert [r["identity"]["id"] for r in would] == ["shadow"]
    failed = _run("audit", "query", log, "--decision", "error", "--wide", columns=200)
    assert "human:alice" in failed.output and "42P01" in failed.output
    denied = [json.loads(x) for x in _run("audit", "query", log, "--decision", "denied",
                                          "--json").output.splitlines()]
    assert [r["statement"]["kinds"] for r in denied] == [["DROP"]]


def test_tool_call_ids_shown_and_output_fits_80_columns(log):
    wide = _run("audit", "query", log, "--identity", "recs-bot", "--wide", columns=220)
    assert "call_7Qx2" in wide.output
    for args in (("audit", "query", log), ("audit", "report", log),
                 ("audit", "report", log, "--identity", "recs-bot")):
        out = _run(*args).output
        assert out and max(len(line) for line in out.splitlines()) <= 80, out
