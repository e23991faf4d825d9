"""The catalog snapshot is the catalog the server resolves names with (attack2 G3, G3b, G9).

A snapshot read inside a transaction that wrote (DDL that may be rolled back) or under
REPEATABLE READ / SERIALIZABLE (the catalog as of the transaction's snapshot) is that
transaction's own: never shared with other connections, discarded when the transaction ends
or rolls back to a savepoint; DISCARD TEMP drops the temporary tables a snapshot holds. Each
test checks what reached the agent against the raw values read over a superuser connection.
"""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity, acting_as, errors
from governed_db.policy import parse_policy

from .conftest import AGENT

SVC = Identity("billing-svc", "service")
MODES = ["sync", "async"]
PREDICATE = "column.disallow-predicate-on-masked"
# The default profile, with the service's migrations run without an approval.
# public.orders.amount is masked by its qualified name: a temporary or new table of the same
# name, with the same column, is not (the snapshot must say which one a name means).
DDL_OK = parse_policy('[[masking.columns]]\ncolumns = ["public.orders.amount"]\n'
                      'strategy = "redact"\n'
                      '[[rules]]\nid = "statement.disallow-ddl"\nlevel = "warning"\n')
SHADOW = "CREATE TEMP TABLE orders (id int, amount numeric)"


async def _connect(mode, dsn, audit, identity, **kw):
    kw.setdefault("policy", DDL_OK)
    if mode == "sync":
        return governed_db.connect(dsn, identity=identity, audit=audit, **kw)
    return await governed_db.AsyncConnection.connect(dsn, identity=identity, audit=audit, **kw)


async def _run(mode, conn, sql):
    if mode == "sync":
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None
    cur = await conn.execute(sql)
    return await cur.fetchall() if cur.description else None


async def _call(mode, result):
    return result if mode == "sync" else await result


def raw_ssns(dsn):
    with psycopg.connect(dsn) as raw:
        return {r[0] for r in raw.execute("SELECT ssn FROM users")}


def raw_amounts(dsn):
    with psycopg.connect(dsn) as raw:
        return {r[0] for r in raw.execute("SELECT amount::text FROM orders")}


async def assert_masked_for_agent(mode, conn, secrets):
    """A derived output of public.orders.amount is masked and a predicate on it refused."""
    rows = await _run(mode, conn, "SELECT amount::text AS x FROM orders ORDER BY id")
    assert rows and not {r[0] for r in rows} & secrets, rows
    with pytest.raises(errors.StatementDenied) as info:
        await _run(mode, conn, "SELECT id FROM orders WHERE amount > 0")
    assert PREDICATE in info.value.rule_ids
    await _call(mode, conn.rollback())


# -- G3: DDL undone on this connection -------------------------------------------------------

UNDO = {
    "rollback": (False, [SHADOW], "rollback"),
    "rollback_sql": (False, [SHADOW, "ROLLBACK"], None),
    "rollback_to": (False, ["SAVEPOINT s", SHADOW,
                            "ROLLBACK TO SAVEPOINT s"], "commit"),
    "failed_statement": (False, [SHADOW,
                                 "SELECT 1/0"], "rollback"),
    "discard_temp": (True, [SHADOW, "DISCARD TEMP"], None),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("undo", sorted(UNDO))
async def test_undone_temp_table_leaves_the_snapshot(dsn, audit, mode, undo):
    autocommit, statements, end = UNDO[undo]
    secrets = raw_amounts(dsn)
    conn = await _connect(mode, dsn, audit, SVC, autocommit=autocommit)
    try:
        for sql in statements:
            try:
                await _run(mode, conn, sql)
            except psycopg.errors.DivisionByZero:
                pass
        if end is not None:
            await _call(mode, getattr(conn, end)())
        with psycopg.connect(dsn) as raw:  # ground truth: no temporary table is left
            assert raw.execute("SELECT count(*) FROM pg_class WHERE relname = 'orders'"
                               " AND relpersistence = 't'").fetchone() == (0,)
        with acting_as(AGENT):
            await assert_masked_for_agent(mode, conn, secrets)
    finally:
        await _call(mode, conn.close())


# -- G3b: rolled-back DDL never reaches the shared snapshot ----------------------------------

@pytest.mark.parametrize("mode", MODES)
async def test_rolled_back_ddl_is_not_shared(dsn, audit, mode):
    secrets = raw_amounts(dsn)
    with psycopg.connect(dsn) as raw:
        user = raw.execute("SELECT current_user").fetchone()[0]
    svc = await _connect(mode, dsn, audit, SVC)
    try:
        # "$user" comes first on the search path: orders now means the new, unmasked table
        await _run(mode, svc, f'CREATE SCHEMA "{user}"')
        await _run(mode, svc, f'CREATE TABLE "{user}".orders (id int, amount numeric)')
        await _call(mode, svc.rollback())
        with psycopg.connect(dsn) as raw:
            assert raw.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                               (user,)).fetchone() == (0,)
        agent = await _connect(mode, dsn, audit, AGENT)
        try:
            await assert_masked_for_agent(mode, agent, secrets)
        finally:
            await _call(mode, agent.close())
        with acting_as(AGENT):
            await assert_masked_for_agent(mode, svc, secrets)
    finally:
        await _call(mode, svc.close())


# -- G9: a REPEATABLE READ transaction's view of the catalog is its own ----------------------

MIGRATION = ("ALTER TABLE ps RENAME TO ps_old;"
             " CREATE VIEW ps AS SELECT id, ssn AS v FROM users")


def _age(conn):
    """Every snapshot the process holds for this database is past its refresh window (the
    60 s wait, without waiting)."""
    conn.governor.catalog.loaded_at -= 3600


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("isolation", ["REPEATABLE_READ", "SERIALIZABLE"])
async def test_old_transaction_snapshot_is_not_shared(dsn, audit, mode, isolation):
    secrets = raw_ssns(dsn)
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("CREATE TABLE ps (id int, v text)")
        raw.execute("INSERT INTO ps SELECT id, 'plain' FROM users")
    a1 = await _connect(mode, dsn, audit, AGENT)
    try:
        await _call(mode, a1.set_isolation_level(getattr(psycopg.IsolationLevel, isolation)))
        await _run(mode, a1, "SELECT 1 AS one")  # the transaction's snapshot is taken
        with psycopg.connect(dsn, autocommit=True) as raw:
            raw.execute(MIGRATION)
        _age(a1)
        # due by age: read inside the transaction (the old schema: ps is still the table)
        assert await _run(mode, a1, "SELECT 1 AS one") == [(1,)]
        # forced: a name the snapshot does not know
        await _run(mode, a1, "SELECT 1 AS one FROM ps_old LIMIT 0")
        a2 = await _connect(mode, dsn, audit, AGENT)
        try:
            rows = await _run(mode, a2, "SELECT v || '' AS x FROM ps ORDER BY id")
            assert rows and not {r[0] for r in rows} & secrets, rows
            with pytest.raises(errors.StatementDenied) as info:
                await _run(mode, a2, "SELECT id FROM ps WHERE v LIKE '1%'")
            assert PREDICATE in info.value.rule_ids
        finally:
            await _call(mode, a2.close())
        await _call(mode, a1.rollback())
        rows = await _run(mode, a1, "SELECT v || '' AS x FROM ps ORDER BY id")
        assert rows and not {r[0] for r in rows} & secrets, rows
    finally:
        await _call(mode, a1.close())
    with psycopg.connect(dsn) as raw:  # ground truth: ps.v is the SSN now
        assert {r[0] for r in raw.execute("SELECT v FROM ps")} == secrets


@pytest.mark.parametrize("mode", MODES)
async def test_old_transaction_refuses_a_reload_past_the_window(dsn, audit, mode):
    a1 = await _connect(mode, dsn, audit, AGENT)
    try:
        await _call(mode, a1.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ))
        await _run(mode, a1, "SELECT 1 AS one")
        a1.governor.tx_since -= 3600  # the transaction began an hour ago
        _age(a1)
        with pytest.raises(errors.StatementDenied) as info:
            await _run(mode, a1, "SELECT 1 AS one")
        assert info.value.rule_ids == ("session.catalog-snapshot",)
        await _call(mode, a1.rollback())
        assert await _run(mode, a1, "SELECT 1 AS one") == [(1,)]  # a new transaction
    finally:
        await _call(mode, a1.close())
