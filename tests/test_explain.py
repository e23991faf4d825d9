"""EXPLAIN for agents: a plan, never an execution.

The default profile lets an ai_agent EXPLAIN a query but not EXPLAIN ANALYZE it: ANALYZE runs
the statement and reports what happened (actual row counts, loops, rows removed), a channel
that carries values (``generate_series(1, ascii(ssn))`` reports ``rows=48`` for '0'). Every
spelling of the option is the kind ``EXPLAIN ANALYZE``; a policy may allow it by that name.
"""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import errors
from governed_db.policy import parse_policy

from .conftest import AGENT

ANALYZE = [
    "EXPLAIN ANALYZE SELECT 1",
    "EXPLAIN ANALYSE SELECT 1",
    "explain analyze verbose select id from users",
    "EXPLAIN (ANALYZE) SELECT 1",
    "EXPLAIN (analyse) SELECT 1",
    "EXPLAIN (ANALYZE on) SELECT 1",
    "EXPLAIN (ANALYZE true, FORMAT JSON) SELECT 1",
    "EXPLAIN (ANALYZE 1) SELECT 1",
    "EXPLAIN (BUFFERS, ANALYZE, TIMING off) SELECT 1",
    "EXPLAIN (ANALYZE off, ANALYZE on) SELECT 1",  # (the last one wins, as in the server)
    "EXPLAIN ANALYZE SELECT * FROM users u, generate_series(1, ascii(u.ssn)) g WHERE u.id = 1001",
    "SELECT 1; EXPLAIN ANALYZE SELECT 2",
]
PLAN_ONLY = [
    "EXPLAIN SELECT 1",
    "EXPLAIN VERBOSE SELECT id FROM users",
    "EXPLAIN (ANALYZE off) SELECT 1",
    "EXPLAIN (ANALYZE false, COSTS off) SELECT 1",
    "EXPLAIN (ANALYZE on, ANALYZE off) SELECT 1",
    "EXPLAIN (FORMAT JSON) SELECT * FROM users",
]


async def _run(mode: str, dsn: str, audit, sql: str, policy=None):
    kw = {"identity": AGENT, "audit": audit, "autocommit": True}
    if policy is not None:
        kw["policy"] = policy
    if mode == "sync":
        with governed_db.connect(dsn, **kw) as conn:
            return conn.execute(sql).fetchall()
    async with await governed_db.AsyncConnection.connect(dsn, **kw) as conn:
        return await (await conn.execute(sql)).fetchall()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", ANALYZE)
async def test_agents_may_not_explain_analyze(dsn, audit, mode, sql):
    with pytest.raises(errors.StatementDenied) as exc:
        await _run(mode, dsn, audit, sql)
    assert exc.value.rule_ids == ("statement.allowlist",)
    assert "EXPLAIN ANALYZE is not allowed for ai_agent identities" in str(exc.value)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", PLAN_ONLY)
async def test_agents_may_explain(dsn, audit, mode, sql):
    rows = await _run(mode, dsn, audit, sql)
    assert rows and "actual time" not in str(rows)  # a plan, nothing was run


def test_the_server_agrees_which_spellings_analyze(dsn):
    """Each ANALYZE spelling runs the statement on the server; each plan-only one does not."""
    with psycopg.connect(dsn, autocommit=True) as raw:
        for sql in ANALYZE[:-2] + PLAN_ONLY:
            text = str(raw.execute(sql).fetchall())
            assert ("actual" in text or "Actual" in text) == (sql in ANALYZE), sql


async def test_a_policy_can_allow_it_by_name(dsn, audit):
    policy = parse_policy("""
[[rules]]
id = "statement.allowlist"
allow = ["SELECT", "EXPLAIN", "EXPLAIN ANALYZE"]
""")
    rows = await _run("sync", dsn, audit, "EXPLAIN ANALYZE SELECT 1", policy=policy)
    assert "actual time" in str(rows)
