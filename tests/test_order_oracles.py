"""Ranking oracles (attack F6): GROUP BY, DISTINCT, DISTINCT ON, PARTITION BY and equality joins
on a masked column reveal only equality classes in WHAT comes back, but PostgreSQL implements
them by sorting (or hashing) on the value, so rows come back in the hidden value's order while
``ORDER BY email`` itself is refused. Such a level is refused under
``column.disallow-predicate-on-masked`` unless its order provably does not follow the value: an
ORDER BY that identifies each row (a primary key; ``min(id)`` when grouped), a single aggregated
row, or a membership subquery (EXISTS / IN) without LIMIT. Window functions that read rows in
order and order-sensitive aggregates after an equality join see the hidden order whatever the
ORDER BY says. By class, several shapes each, sync and async, ai_agent, default profile."""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors

from .conftest import MARKERS

AGENT = Identity("rank-bot", "ai_agent")
RULE = "column.disallow-predicate-on-masked"

# the output order follows the hidden value
OUTPUT_ORDER = [
    "SELECT DISTINCT ON (email) id FROM users",
    "SELECT id, count(*) OVER (PARTITION BY ssn) FROM users",
    "SELECT min(id) FROM users GROUP BY email",
    "SELECT email, count(*) FROM users GROUP BY email ORDER BY count(*) DESC",
    "SELECT DISTINCT email, org_id FROM users",
    "SELECT DISTINCT * FROM users",
    "SELECT a.id FROM users a JOIN users b ON a.ssn = b.ssn",
    "SELECT min(id) FROM users GROUP BY ssn ORDER BY min(org_id)",
    "SELECT a.id FROM users a JOIN users b USING (ssn)",
    # a semi-join (merge) returns the outer rows in the order of the correlated value
    "SELECT id FROM users u WHERE EXISTS (SELECT 1 FROM users v WHERE v.email = u.email)",
    # through a subquery or CTE read as it is
    "SELECT x.id FROM (SELECT min(id) AS id FROM users GROUP BY email) x",
    "WITH t AS (SELECT min(id) AS id FROM users GROUP BY email) SELECT id FROM t",
]
# the hidden order decides which rows a LIMIT keeps, or reaches an order-reading function
CONSUMERS = [
    "SELECT id FROM users WHERE id IN (SELECT min(id) FROM users GROUP BY email LIMIT 1)",
    "SELECT id, count(*) OVER (PARTITION BY ssn), row_number() OVER () FROM users ORDER BY id",
    "SELECT string_agg(a.id::text, ',') FROM users a JOIN users b ON a.ssn = b.ssn",
    "SELECT array_agg(x.id) FROM (SELECT min(id) AS id FROM users GROUP BY email) x",
    "SELECT min(id), lag(min(id)) OVER () FROM users GROUP BY email ORDER BY 1",
]
ORDER_FIXED = [
    ("SELECT min(id), count(*) FROM users GROUP BY email ORDER BY 1", 2),
    ("SELECT id, count(*) OVER (PARTITION BY ssn) FROM users ORDER BY id", 2),
    ("SELECT a.id, b.id FROM users a JOIN users b ON a.ssn = b.ssn ORDER BY a.id, b.id", 2),
    ("SELECT o.id FROM orders o JOIN users u ON u.email = o.note ORDER BY o.id", 0),
    ("SELECT DISTINCT * FROM users ORDER BY id", 2),
    ("SELECT a.id FROM users a JOIN users b USING (ssn) ORDER BY a.id", 2),
    ("SELECT count(*) FROM (SELECT DISTINCT email FROM users) s", 1),
    ("SELECT count(*) FROM users a JOIN users b ON a.ssn = b.ssn", 1),
    ("SELECT id FROM users u WHERE EXISTS (SELECT 1 FROM users v WHERE v.email = u.email)"
     " ORDER BY id", 2),
]


async def _run(mode: str, dsn: str, audit, sql: str) -> list:
    if mode == "sync":
        with governed_db.connect(dsn, identity=AGENT, audit=audit) as conn:
            return conn.execute(sql).fetchall()
    conn = await governed_db.AsyncConnection.connect(dsn, identity=AGENT, audit=audit)
    try:
        return await (await conn.execute(sql)).fetchall()
    finally:
        await conn.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", OUTPUT_ORDER + CONSUMERS)
async def test_a_value_ordered_result_is_refused(dsn, audit, mode, sql):
    with pytest.raises(errors.StatementDenied) as ei:
        await _run(mode, dsn, audit, sql)
    assert ei.value.rule_ids == (RULE,)
    message = str(ei.value)
    assert "order rows come back in" in message, message
    assert "users.ssn" in message or "users.email" in message, message
    assert not any(m in message.lower() for m in MARKERS), message
    audit.flush()
    record = [r for r in audit.records if r["type"] == "statement"][-1]
    assert record["outcome"]["outcome"] == "denied"


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql,count", ORDER_FIXED)
async def test_a_fixed_order_runs(dsn, audit, mode, sql, count):
    rows = await _run(mode, dsn, audit, sql)
    assert len(rows) == count
    assert not any(m in repr(rows).lower() for m in MARKERS), rows


def test_the_refused_shape_really_follows_the_hidden_order(dsn):
    # Ground truth on a raw superuser connection: without an ORDER BY, the rows of the
    # allowed-before shape come back in ORDER BY email order (for every seeded ordering).
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("INSERT INTO users (id, email) SELECT 2000 + g, 'qem.' || md5(g::text)"
                    " FROM generate_series(1, 50) g")
        got = [r[0] for r in raw.execute("SELECT DISTINCT ON (email) id FROM users")]
        want = [r[0] for r in raw.execute("SELECT id FROM users ORDER BY email")]
    assert got == want


def test_the_same_shapes_run_for_a_human(human_conn):
    assert len(human_conn.execute(OUTPUT_ORDER[0]).fetchall()) == 2
