"""Write-then-read leaks (attack F9): a masked value must not come back raw through what a
write returns, nor be laundered into a column that is not masked.

Class 1, RETURNING: a RETURNING column is the NEW row's value, so its lineage is the target
column's united with every expression that may be assigned to it (SET, the inserted
SELECT/VALUES, ON CONFLICT DO UPDATE, writable CTEs). Class 2, copy: a write that stores a value
of a masked column into a column not masked as strongly needs an approval
(``column.disallow-masked-copy``), judged for the most restricted reader. Effects are read on
a separate raw superuser connection. Sync and async."""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.policy import parse_policy

from .conftest import MARKERS

SERVICE = Identity("billing-job", "service")
HUMAN = Identity("dana", "human")
RULE = "column.disallow-masked-copy"

# Each writes a masked value (users.email/ssn/name) into orders.note (not masked).
COPIES = [
    "UPDATE orders SET note = (SELECT ssn FROM users WHERE id = 1001) WHERE id = 1 RETURNING note",
    "UPDATE orders o SET note = u.email FROM users u WHERE u.id = o.user_id AND o.id = 1"
    " RETURNING o.note",
    "INSERT INTO orders (id, user_id, amount, note) SELECT 50, id, 1, name FROM users"
    " WHERE id = 1001 RETURNING note",
    "INSERT INTO orders (id, note) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE"
    " SET note = (SELECT ssn FROM users WHERE id = 1001) RETURNING note",
    "INSERT INTO orders (id, amount, note) SELECT 1, 1, ssn FROM users WHERE id = 1001"
    " ON CONFLICT (id) DO UPDATE SET note = 'k' || excluded.note RETURNING note",
    "WITH w AS (UPDATE orders SET note = (SELECT email FROM users WHERE id = 1002)"
    " WHERE id = 2 RETURNING note) SELECT note FROM w",
    "UPDATE orders SET (note, amount) = (SELECT lower(ssn), 1 FROM users WHERE id = 1001)"
    " WHERE id = 1 RETURNING orders::text",
    "INSERT INTO orders VALUES (51, 1001, 1, (SELECT name FROM users WHERE id = 1001))"
    " RETURNING *",
    "WITH s AS (SELECT id, ssn FROM users) INSERT INTO orders (id, user_id, note)"
    " SELECT 52, id, ssn || '' FROM s WHERE id = 1002 RETURNING to_jsonb(orders)",
    "MERGE INTO orders o USING users u ON u.id = o.user_id AND o.id = 1"
    " WHEN MATCHED THEN UPDATE SET note = u.ssn",
]

# Ordinary writes (nothing masked copied, or copied into a column masked the same way).
ORDINARY_WRITES = [
    "UPDATE orders SET note = 'n-' || id WHERE id = 1 RETURNING note",
    "INSERT INTO orders (id, user_id, amount, note) SELECT 60, user_id, amount, note"
    " FROM orders WHERE id = 2 RETURNING id, note",
    "UPDATE users SET email = lower(email) WHERE id = 1001 RETURNING id",
    "INSERT INTO orders (id, user_id, amount) SELECT 61, id, 2 FROM users WHERE id = 1001",
]


def _raw(dsn: str, sql: str) -> list:
    with psycopg.connect(dsn) as raw:
        return raw.execute(sql).fetchall()


def _secrets(dsn: str) -> set[str]:
    return {v for row in _raw(dsn, "SELECT email, ssn, name FROM users") for v in row}


def _state(dsn: str) -> list:
    return _raw(dsn, "SELECT id, user_id, amount, note FROM orders ORDER BY id")


async def _run(mode: str, dsn: str, audit, ident: Identity, sql: str, policy=None) -> list:
    if mode == "sync":
        with governed_db.connect(dsn, identity=ident, audit=audit, policy=policy,
                                 autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []
    conn = await governed_db.AsyncConnection.connect(dsn, identity=ident, audit=audit,
                                                     policy=policy, autocommit=True)
    try:
        cur = await conn.execute(sql)
        return await cur.fetchall() if cur.description else []
    finally:
        await conn.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("ident", [SERVICE, HUMAN], ids=["service", "human"])
@pytest.mark.parametrize("sql", COPIES)
async def test_copying_a_masked_value_needs_an_approval(dsn, audit, mode, ident, sql):
    before = _state(dsn)
    with pytest.raises(errors.ApprovalRequired) as ei:
        await _run(mode, dsn, audit, ident, sql)
    assert RULE in ei.value.rule_ids
    message = str(ei.value)
    assert "users." in message, message
    assert not any(m in message.lower() for m in MARKERS), message
    assert _state(dsn) == before  # nothing was written


RETURNING = [s for s in COPIES if "RETURNING" in s or "WITH w" in s]
_NO_COPY_RULE = f'[[rules]]\nid = "{RULE}"\nlevel = "disabled"\n'


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", RETURNING)
async def test_returning_masks_what_was_assigned(dsn, audit, mode, sql):
    # With the copy rule off (a policy's choice), the write runs; what it returns is the
    # assigned (masked) value, masked as a whole.
    secrets = _secrets(dsn)
    rows = await _run(mode, dsn, audit, SERVICE, sql, parse_policy(_NO_COPY_RULE))
    assert rows
    text = repr(rows)
    assert not any(s in text or s.lower() in text.lower() for s in secrets), rows
    assert not any(m in text.lower() for m in MARKERS), rows
    # ... and the write really happened: the copy is on the server (raw superuser read).
    stored = repr(_state(dsn)).lower()
    assert any(m in stored for m in MARKERS), stored


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", ORDINARY_WRITES)
async def test_ordinary_writes_still_run(dsn, audit, mode, sql):
    before = _state(dsn)
    rows = await _run(mode, dsn, audit, SERVICE, sql)
    assert not any(m in repr(rows).lower() for m in MARKERS), rows
    if "orders" in sql.split()[2] or sql.startswith("INSERT"):
        assert _state(dsn) != before


def test_an_approved_copy_runs_and_returns_masked(dsn, audit):
    sql = COPIES[0]
    policy = parse_policy("")
    with governed_db.connect(dsn, identity=SERVICE, audit=audit, policy=policy,
                             autocommit=True) as conn:
        with pytest.raises(errors.ApprovalRequired) as ei:
            conn.execute(sql)
        governed_db._config.approvals(policy).decide(ei.value.request_id, HUMAN, approve=True)
        rows = conn.execute(sql).fetchall()
    assert len(rows) == 1 and "qsn" not in repr(rows).lower(), rows
    assert _raw(dsn, "SELECT note FROM orders WHERE id = 1") == [("qsn-111-22-3333",)]
