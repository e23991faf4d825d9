"""Unbounded writes judged by their effect (issue 12 item 4), under the default profile.

Every shape here has a WHERE (or none is needed) that the syntactic rule cannot tell from a
real condition: the exact blast radius counts what the statement really touched and rolls
back a change of every live row of a table, or more rows than the identity kind's default
limit. Each test asserts the rule id, the audit record and, from a raw superuser connection,
that nothing changed.
"""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.policy import default_policy

HUMAN = Identity("alice", "human", purpose="support")
SERVICE = Identity("billing-job", "service")
AGENT = Identity("recs-bot", "ai_agent")
FULL = "statement.disallow-full-table-write"
LIMIT = "statement.affected-row-limit"

SETUP = """
CREATE FUNCTION purge_orders_where() RETURNS void LANGUAGE plpgsql AS
  $$BEGIN DELETE FROM orders WHERE amount > 0; END$$;
CREATE FUNCTION purge_dynamic() RETURNS void LANGUAGE plpgsql AS
  $$BEGIN EXECUTE 'DELETE FROM ' || 'orders'; END$$;
CREATE FUNCTION drop_it() RETURNS void LANGUAGE sql AS 'DROP TABLE products';
CREATE FUNCTION touch_one(i int) RETURNS void LANGUAGE sql AS
  'UPDATE orders SET note = note WHERE id = i';
CREATE FUNCTION wipe_orders_trg() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN DELETE FROM orders WHERE id > 0; RETURN NEW; END$$;
CREATE TRIGGER wipe AFTER UPDATE ON orgs FOR EACH ROW EXECUTE FUNCTION wipe_orders_trg();
CREATE TABLE r_src (a int);
CREATE RULE r_cascade AS ON INSERT TO r_src DO ALSO DELETE FROM orders WHERE id > 0;
CREATE TABLE big (id int PRIMARY KEY, v int);
INSERT INTO big SELECT g, 0 FROM generate_series(1, 1500) g;
"""


@pytest.fixture
def effects_db(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(SETUP)
    return dsn


def _snapshot(dsn: str) -> tuple:
    with psycopg.connect(dsn) as c:
        return tuple(c.execute(q).fetchall() for q in (
            "SELECT id, email, ssn, name FROM users ORDER BY id",
            "SELECT id, amount, note FROM orders ORDER BY id",
            "SELECT id, plan FROM orgs ORDER BY id",
            "SELECT count(*), sum(v) FROM big",
            "SELECT to_regclass('products') IS NOT NULL"))


# (statements, params) — every one changes every row of some table.
FULL_TABLE_SHAPES = {
    "in-list-tautology": (["UPDATE users SET name = 'x' WHERE 1 IN (1)"], None),
    "between-itself": (["UPDATE users SET name = 'x' WHERE id BETWEEN id AND id"], None),
    "param-true": (["DELETE FROM users WHERE %s"], (True,)),
    "param-greater": (["DELETE FROM orders WHERE id > %s"], (-1,)),
    "or-tautology": (["DELETE FROM orders WHERE id = 1 OR note IS NOT NULL"], None),
    "prepare-execute": (["PREPARE p AS DELETE FROM orders WHERE amount > $1",
                         "EXECUTE p(-1)"], None),
    "merge-on-constant": (["MERGE INTO users u USING orgs o ON o.id = 1"
                           " WHEN MATCHED THEN UPDATE SET name = 'x'"], None),
    "where-not-target": (["DELETE FROM orders WHERE EXISTS (SELECT 1 FROM orgs)"], None),
    "using-cross-join": (["DELETE FROM orders USING orgs a, orgs b WHERE a.id = b.id"], None),
    "function-body": (["SELECT purge_orders_where()"], None),
    "dynamic-function": (["SELECT purge_dynamic()"], None),
    "trigger-cascade": (["UPDATE orgs SET plan = plan WHERE id = 1"], None),
    "rule-cascade": (["INSERT INTO r_src VALUES (1)"], None),
    "writable-cte": (["WITH d AS (DELETE FROM orders WHERE amount > 0 RETURNING id)"
                      " SELECT count(*) FROM d"], None),
    "subquery-in-list": (["UPDATE users SET name = 'x' WHERE org_id IN (SELECT id FROM orgs)"],
                         None),
}


def _run(conn, stmts, params):
    for i, sql in enumerate(stmts):
        conn.execute(sql, params if i == len(stmts) - 1 else None)


async def _arun(conn, stmts, params):
    for i, sql in enumerate(stmts):
        await conn.execute(sql, params if i == len(stmts) - 1 else None)


@pytest.mark.parametrize("ident", [HUMAN, SERVICE], ids=["human", "service"])
@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "in-transaction"])
@pytest.mark.parametrize("shape", sorted(FULL_TABLE_SHAPES))
def test_full_table_writes_rolled_back(effects_db, audit, shape, ident, autocommit):
    stmts, params = FULL_TABLE_SHAPES[shape]
    before = _snapshot(effects_db)
    conn = governed_db.connect(effects_db, identity=ident, policy=default_policy(),
                               audit=audit, autocommit=autocommit)
    with pytest.raises(errors.StatementDenied) as ei:
        _run(conn, stmts, params)
    assert ei.value.rule_ids == (FULL,), str(ei.value)
    assert "rolled back and nothing changed" in str(ei.value)
    if not autocommit:
        # The caller's transaction is still usable: a bounded write commits.
        conn.execute("UPDATE orders SET note = 'kept' WHERE id = %s", (1,))
        conn.commit()
    conn.close()
    after = _snapshot(effects_db)
    if not autocommit:
        assert after[1][0] == (1, before[1][0][1], "kept")
        after = (after[0], before[1], *after[2:])
    assert after == before
    audit.flush()
    rec = [r for r in audit.records if r["type"] == "statement"
           and r["outcome"].get("outcome") == "rolled_back"]
    assert len(rec) == 1 and rec[0]["decision"]["rules"] == [] \
        and rec[0]["outcome"]["rules"] == [FULL]


@pytest.mark.parametrize("shape", ["param-greater", "function-body", "writable-cte",
                                   "trigger-cascade"])
async def test_full_table_writes_rolled_back_async(effects_db, audit, shape):
    stmts, params = FULL_TABLE_SHAPES[shape]
    before = _snapshot(effects_db)
    conn = await governed_db.AsyncConnection.connect(
        effects_db, identity=HUMAN, policy=default_policy(), audit=audit)
    async with conn:
        with pytest.raises(errors.StatementDenied) as ei:
            await _arun(conn, stmts, params)
        assert ei.value.rule_ids == (FULL,)
        cur = await conn.execute("SELECT count(*) FROM orders")
        assert (await cur.fetchone())[0] == 2  # in the same, still usable transaction
    assert _snapshot(effects_db) == before


@pytest.mark.parametrize("ident,allowed", [(HUMAN, False), (SERVICE, True)],
                         ids=["human-limit-1000", "service-limit-10000"])
def test_default_row_limit_per_kind(effects_db, audit, ident, allowed):
    before = _snapshot(effects_db)
    with governed_db.connect(effects_db, identity=ident, policy=default_policy(), audit=audit,
                             autocommit=True) as conn:
        sql = "UPDATE big SET v = 1 WHERE id <= %s"
        if allowed:
            conn.execute(sql, (1200,))
        else:
            with pytest.raises(errors.StatementDenied) as ei:
                conn.execute(sql, (1200,))
            assert ei.value.rule_ids == (LIMIT,)
            assert "touched 1200 rows" in str(ei.value) and "limit 1000" in str(ei.value)
    after = _snapshot(effects_db)
    assert after[3] == [(1500, 1200)] if allowed else after == before


def test_partial_and_point_writes_run(effects_db, audit):
    with governed_db.connect(effects_db, identity=HUMAN, policy=default_policy(), audit=audit,
                             autocommit=True) as conn:
        conn.execute("UPDATE users SET name = 'y' WHERE org_id = %s", (1,))  # 1 of 2: measured
        conn.execute("DELETE FROM orders WHERE id = %s", (2,))  # by key: bounded in advance
        conn.execute("SELECT touch_one(1)")  # a function that writes one row
        conn.execute("INSERT INTO big VALUES (%s, %s)", (2000, 1))
    with psycopg.connect(effects_db) as c:
        assert c.execute("SELECT name FROM users ORDER BY id").fetchall() == [("y",), ("qnm Bob",)]
        assert c.execute("SELECT id FROM orders").fetchall() == [(1,)]
    audit.flush()
    outs = [r["outcome"] for r in audit.records if r["type"] == "statement"]
    assert [o.get("outcome") for o in outs[-4:]] == ["ok"] * 4
    assert outs[-4]["affected_rows"] == 1  # measured (no key): exact count recorded
    assert "affected_rows" not in outs[-3]  # pinned by the primary key: no savepoint at all


def test_function_bodies_count_as_the_callers_statement(effects_db, audit):
    """A function body that DROPs is judged as a DROP; one that deletes every row without a
    WHERE as that DELETE; an agent may not call a body the analyzer cannot see."""
    before = _snapshot(effects_db)
    with governed_db.connect(effects_db, identity=HUMAN, policy=default_policy(), audit=audit,
                             autocommit=True) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute("SELECT drop_it()")
        # Exactly what `DROP TABLE products` itself gets: denied (not sent for approval).
        assert ei.value.rule_ids == ("statement.disallow-drop", "statement.disallow-ddl")
        assert not isinstance(ei.value, errors.ApprovalRequired)
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute("SELECT 1 FROM users WHERE purge_users() IS NULL")
        assert ei.value.rule_ids == ("statement.where.require.update-delete",)
    with governed_db.connect(effects_db, identity=AGENT, policy=default_policy(),
                             audit=audit) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute("SELECT purge_users()")
        assert {"statement.allowlist", "statement.where.require.update-delete"} <= set(
            ei.value.rule_ids)  # the body's DELETE (function.allowlist refuses the call too)
        assert "DELETE is not allowed for ai_agent" in str(ei.value)
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute("SELECT purge_dynamic()")
        assert "statement.opaque" in ei.value.rule_ids
        assert "dynamic EXECUTE" in str(ei.value)
    assert _snapshot(effects_db) == before


def test_redefined_function_is_judged_by_its_new_body(effects_db, audit):
    """Body analyses are cached by (oid, xmin): CREATE OR REPLACE is seen at the next
    catalog snapshot."""
    with psycopg.connect(effects_db, autocommit=True) as raw, governed_db.connect(
            effects_db, identity=HUMAN, policy=default_policy(), audit=audit,
            autocommit=True) as conn:
        # Created after the snapshot: unknown, so measured (and the snapshot reloaded).
        raw.execute("CREATE FUNCTION later() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        conn.execute("SELECT later()")
        raw.execute("CREATE OR REPLACE FUNCTION later() RETURNS int LANGUAGE sql AS"
                    " 'DELETE FROM orders RETURNING 1'")
        conn.governor.mark_catalog_stale()  # as after DDL on this connection, or by age
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute("SELECT later()")
        assert ei.value.rule_ids == ("statement.where.require.update-delete",)
    assert len(_snapshot(effects_db)[1]) == 2


def test_exact_count_fails_closed_without_select_privilege(effects_db, audit):
    """A role that may update but not read a table cannot be counted: rolled back, denied."""
    with psycopg.connect(effects_db, autocommit=True) as c:
        c.execute("CREATE ROLE writer_only LOGIN; GRANT UPDATE ON big TO writer_only;"
                  " GRANT SELECT ON pg_catalog.pg_stat_xact_user_tables TO writer_only")
    dsn = effects_db.replace("user=postgres", "user=writer_only")
    with governed_db.connect(dsn, identity=SERVICE, policy=default_policy(), audit=audit,
                             autocommit=True) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute("UPDATE big SET v = 7 WHERE %s", (True,))  # no column read: allowed
        assert ei.value.rule_ids == (FULL,)
        assert "could not be verified" in str(ei.value)
    assert _snapshot(effects_db)[3] == [(1500, 0)]


VIEW_SETUP = """
CREATE FUNCTION wipe_orders_fn() RETURNS int LANGUAGE sql AS
  $$ DELETE FROM orders WHERE amount > 0; SELECT 1 $$;
CREATE VIEW v_wipe AS SELECT wipe_orders_fn() AS x;
CREATE VIEW v_wipe_nested AS SELECT * FROM v_wipe;
CREATE VIEW v_wipe_where AS SELECT id FROM orgs WHERE wipe_orders_fn() = 1;
"""


@pytest.mark.parametrize("ident", [HUMAN, SERVICE], ids=["human", "service"])
@pytest.mark.parametrize("view", ["v_wipe", "v_wipe_nested", "v_wipe_where"])
def test_a_read_through_a_view_that_writes_is_measured(dsn, audit, ident, view):
    # A view runs its body for the reader: SELECT * FROM v can delete every row. The read is
    # judged by its effect like the function call it hides.
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute(VIEW_SETUP)
        before = raw.execute("SELECT count(*) FROM orders").fetchone()[0]
    assert before >= 2
    with governed_db.connect(dsn, identity=ident, audit=audit, autocommit=True) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(f"SELECT * FROM {view}").fetchall()
    assert FULL in ei.value.rule_ids
    with psycopg.connect(dsn) as raw:
        assert raw.execute("SELECT count(*) FROM orders").fetchone()[0] == before


@pytest.mark.parametrize("body", [
    # a cursor opened, fetched and closed inside the body: not judged, so not seen
    "DECLARE c refcursor; r record; BEGIN OPEN c FOR SELECT id FROM users; FETCH c INTO r;"
    " CLOSE c; RETURN 1; END",
    # a cursor variable bound at declaration, looped over
    "DECLARE c CURSOR FOR SELECT id FROM users; BEGIN FOR r IN c LOOP NULL; END LOOP;"
    " RETURN 1; END",
])
def test_function_bodies_with_unjudged_constructs_are_opaque(effects_db, audit, body):
    """Function bodies are judged by an allow-list of PL/pgSQL constructs, as DO bodies are:
    anything else makes the body opaque (for an agent: refused), whatever it does."""
    with psycopg.connect(effects_db, autocommit=True) as raw:
        raw.execute(f"CREATE FUNCTION unjudged() RETURNS int LANGUAGE plpgsql AS $${body}$$")
    with governed_db.connect(effects_db, identity=AGENT, policy=default_policy(),
                             audit=audit) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute("SELECT unjudged()")
        assert "statement.opaque" in ei.value.rule_ids
        assert "PL/pgSQL construct the analyzer does not judge" in str(ei.value)
