"""Exact blast radius (statement.affected-row-limit) and statement.max-rows-returned."""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.policy import PolicyWarning, parse_policy

SERVICE = Identity("billing-job", "service")
APPROVER = Identity("carol", "human")


def _policy(level: str = "error", max_rows: int = 3, tables: str = "") -> governed_db.Policy:
    scope = f"tables = [{tables}]\n" if tables else ""
    return parse_policy(f"""
[[rules]]
id = "statement.affected-row-limit"
level = "{level}"
max_rows = {max_rows}
{scope}""")


@pytest.fixture
def fanout(dsn):
    """parents(1) with 5 children ON DELETE CASCADE, and a trigger that logs each delete."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("""
            CREATE TABLE parents (id int PRIMARY KEY);
            CREATE TABLE children (id int PRIMARY KEY,
                                   parent_id int REFERENCES parents ON DELETE CASCADE);
            CREATE TABLE deleted_log (id int);
            CREATE FUNCTION log_del() RETURNS trigger LANGUAGE plpgsql AS
              $$BEGIN INSERT INTO deleted_log VALUES (OLD.id); RETURN OLD; END$$;
            CREATE TRIGGER log_del AFTER DELETE ON parents FOR EACH ROW EXECUTE FUNCTION log_del();
            INSERT INTO parents VALUES (1), (2);
            INSERT INTO children SELECT g, 1 FROM generate_series(1, 5) g;
            INSERT INTO children VALUES (6, 2);
        """)
    return dsn


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "in-transaction"])
def test_over_limit_rolled_back_exact_count_with_cascades(fanout, audit, autocommit):
    conn = governed_db.connect(fanout, identity=SERVICE, policy=_policy(max_rows=3),
                               audit=audit, autocommit=autocommit)
    # One parent row, but 5 cascaded children and 1 trigger insert: 7 rows touched.
    with pytest.raises(errors.StatementDenied) as ei:
        conn.execute("DELETE FROM parents WHERE id = 1 RETURNING id")
    assert ei.value.rule_ids == ("statement.affected-row-limit",)
    assert "touched 7 rows" in str(ei.value) and "limit 3" in str(ei.value)
    if not autocommit:
        # The caller's transaction is still usable and the change is gone.
        assert conn.execute("SELECT count(*) FROM children").fetchone() == (6,)
        conn.execute("DELETE FROM parents WHERE id = 2")  # 1 + 1 child + 1 log = 3: allowed
        conn.commit()
    else:
        conn.execute("DELETE FROM parents WHERE id = 2")
    conn.close()
    assert (_count(fanout, "parents"), _count(fanout, "children"),
            _count(fanout, "deleted_log")) == (1, 5, 1)
    audit.flush()
    recs = [r for r in audit.records if r["type"] == "statement"]
    denied = [r for r in recs if r["outcome"].get("outcome") == "rolled_back"]
    assert len(denied) == 1 and denied[0]["outcome"]["affected_rows"] == 7
    assert recs[-1]["outcome"]["affected_rows"] == 3


async def test_async_over_limit_rolled_back(fanout, audit):
    conn = await governed_db.AsyncConnection.connect(
        fanout, identity=SERVICE, policy=_policy(max_rows=3), audit=audit)
    async with conn:
        with pytest.raises(errors.StatementDenied):
            await conn.execute("DELETE FROM children WHERE id < 5")
        cur = await conn.execute("SELECT count(*) FROM children")
        assert await cur.fetchone() == (6,)
        await conn.execute("DELETE FROM children WHERE id < 3")
    assert _count(fanout, "children") == 4


def test_table_scoped_limit_counts_only_those_tables(fanout, audit):
    conn = governed_db.connect(fanout, identity=SERVICE, autocommit=True, audit=audit,
                               policy=_policy(max_rows=4, tables='"children"'))
    conn.execute("DELETE FROM parents WHERE id = 2")  # 1 child: under the children limit
    with pytest.raises(errors.StatementDenied, match="touched 5 rows"):
        conn.execute("DELETE FROM parents WHERE id = 1")  # 5 children
    conn.close()
    assert _count(fanout, "children") == 5


def test_warning_level_allows_and_records(fanout, audit):
    with governed_db.connect(fanout, identity=SERVICE, autocommit=True, audit=audit,
                             policy=_policy(level="warning", max_rows=1)) as conn:
        conn.execute("DELETE FROM children WHERE id > 3")
    assert _count(fanout, "children") == 3
    audit.flush()
    rec = [r for r in audit.records if r["type"] == "statement"][-1]
    assert rec["outcome"]["affected_rows"] == 3
    assert rec["outcome"]["warnings"][0].startswith("statement.affected-row-limit")


def test_approval_bound_to_exact_row_count(fanout, audit):
    conn = governed_db.connect(fanout, identity=SERVICE, autocommit=True, audit=audit,
                               policy=_policy(level="approval", max_rows=2))
    sql = "DELETE FROM children WHERE parent_id = 1"
    with pytest.raises(errors.ApprovalRequired) as ei:
        conn.execute(sql)
    assert _count(fanout, "children") == 6  # rolled back while waiting
    store = governed_db._config.approvals()
    req = store.get(ei.value.request_id)
    assert req["affected_rows"] == 5 and req["status"] == "pending"
    with pytest.raises(errors.StatementDenied, match="own request"):
        store.decide(req["id"], Identity("billing-job", "human"), approve=True)
    store.decide(req["id"], APPROVER, approve=True)
    # The effect changed since the approval (one more matching row): a new approval is needed.
    with psycopg.connect(fanout, autocommit=True) as raw:
        raw.execute("INSERT INTO children VALUES (7, 1)")
    with pytest.raises(errors.ApprovalRequired) as again:
        conn.execute(sql)
    assert again.value.request_id != req["id"]
    with psycopg.connect(fanout, autocommit=True) as raw:
        raw.execute("DELETE FROM children WHERE id = 7")
    conn.execute(sql)  # exactly the approved 5 rows: runs once
    assert _count(fanout, "children") == 1
    assert store.get(req["id"])["status"] == "used"
    conn.close()


def test_executemany_checked_per_execution(fanout, audit):
    with governed_db.connect(fanout, identity=SERVICE, autocommit=True, audit=audit,
                             policy=_policy(max_rows=2)) as conn:
        cur = conn.cursor()
        cur.executemany("DELETE FROM children WHERE id = %s", [(1,), (2,)])
        with pytest.raises(errors.StatementDenied):
            cur.executemany("DELETE FROM children WHERE id > %s", [(5,), (2,)])
    # 1 and 2 deleted; then "id > 5" deleted 6 (1 row, kept) and "id > 2" (3 rows) rolled back.
    assert _count(fanout, "children") == 3


@pytest.mark.parametrize("sql, params, serial", [
    ("INSERT INTO deleted_log VALUES (%s)", [(10,), (11,)], False),  # bounded: 1 row each
    ("DELETE FROM children WHERE id > %s", [(5,), (4,)], True),   # not bounded in advance
])
def test_executemany_pipelined_only_when_every_execution_is_bounded(fanout, audit, monkeypatch,
                                                                   sql, params, serial):
    calls = []
    original = governed_db.Cursor._executemany_gen_no_pipeline

    def spy(self, *args, **kwargs):
        calls.append(sql)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(governed_db.Cursor, "_executemany_gen_no_pipeline", spy)
    with governed_db.connect(fanout, identity=SERVICE, autocommit=True, audit=audit,
                             policy=_policy(max_rows=2)) as conn:
        conn.cursor().executemany(sql, params)  # (a new cursor: nothing executed on it yet)
    assert bool(calls) == serial


def test_reads_do_not_pay_for_savepoints(fanout, audit):
    with governed_db.connect(fanout, identity=SERVICE, policy=_policy(), audit=audit) as conn:
        assert conn.execute("SELECT count(*) FROM children").fetchone() == (6,)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        # No savepoint was opened for the read: releasing one now fails.
        with pytest.raises(psycopg.errors.InvalidSavepointSpecification):
            conn.execute("RELEASE SAVEPOINT governed_db_blast_radius")


def test_pipeline_refuses_limited_writes(fanout, audit):
    with governed_db.connect(fanout, identity=SERVICE, policy=_policy(), audit=audit) as conn:
        with pytest.raises(errors.StatementDenied, match="pipeline mode"), conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("DELETE FROM children WHERE id < 3")
    assert _count(fanout, "children") == 6


def test_pipeline_runs_writes_bounded_in_advance(fanout, audit):
    # A delete pinned to one row by the primary key (no trigger, rule or cascade on the table)
    # cannot exceed a limit of 3: it needs no savepoint, so the pipeline runs it.
    with governed_db.connect(fanout, identity=SERVICE, policy=_policy(), audit=audit) as conn:
        with conn.pipeline():
            conn.execute("DELETE FROM children WHERE id = %s", (1,))
        conn.commit()
    assert _count(fanout, "children") == 5


def test_missing_max_rows_is_a_policy_error():
    # Layered on the default profile the rule inherits max_rows_by_kind; alone it needs one.
    with pytest.raises(errors.PolicyError, match="needs max_rows"), \
            pytest.warns(PolicyWarning):
        parse_policy('extends = "none"\n[[rules]]\nid = "statement.affected-row-limit"\n')
    layered = parse_policy('[[rules]]\nid = "statement.affected-row-limit"\nmax_rows = 3\n')
    (rule,) = [r for r in layered.rules if r.id == "statement.affected-row-limit"]
    assert rule.params["max_rows"] == 3 and "max_rows_by_kind" in rule.params


@pytest.mark.parametrize("how", ["fetchall", "iterate", "server-cursor", "stream"])
def test_max_rows_returned(dsn, audit, how):
    policy = parse_policy('[[rules]]\nid = "statement.max-rows-returned"\nmax_rows = 2\n')
    conn = governed_db.connect(dsn, identity=SERVICE, policy=policy, audit=audit)
    conn.execute("SELECT id FROM users")  # 2 rows: fine
    q = "SELECT g FROM generate_series(1, 5) g"
    with pytest.raises(errors.StatementDenied) as ei:
        if how == "fetchall":
            conn.execute(q).fetchall()
        elif how == "iterate":
            list(conn.cursor().execute(q))
        elif how == "server-cursor":
            with conn.cursor(name="big") as cur:
                cur.execute(q)
                while cur.fetchmany(1):
                    pass
        else:
            list(conn.cursor().stream(q))
    assert ei.value.rule_ids == ("statement.max-rows-returned",)
    assert "LIMIT 2" in str(ei.value)
    conn.close()
