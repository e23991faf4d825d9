"""``statement.require-approval`` judges by effect (attack3 A6): its ``kinds`` are the row
operations a statement performs, not only its syntactic kind.

With ``kinds = ["DELETE", "UPDATE", "INSERT"]`` on ``orders``: a MERGE counts as each of
INSERT/UPDATE/DELETE its WHEN actions perform, COPY FROM as INSERT, ``INSERT ... ON CONFLICT
DO UPDATE`` as INSERT and UPDATE, a writable CTE by its inner statement. Each needs approval
(nothing written, read from a raw superuser connection); approved, it runs once.
Left open: writes inside functions with dynamic SQL and triggers (measured, not analysed).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from governed_db.policy import parse_policy

from .test_approval_binding import Driver, _approve, _request

MERGE_INSERT = ("MERGE INTO orders t USING (SELECT 101 AS id) s ON t.id = s.id"
                " WHEN NOT MATCHED THEN INSERT (id, user_id, amount) VALUES (s.id, 1001, 1)")
MERGE_ACTIONS = ("MERGE INTO orders t USING (SELECT 1 AS id) s ON t.id = s.id"
                 " WHEN MATCHED THEN {action}")
ON_CONFLICT = ("INSERT INTO orders (id, user_id, amount) VALUES (1, 1001, 1)"
               " ON CONFLICT (id) DO UPDATE SET amount = 99")
CTE_UPSERT = f"WITH m AS ({ON_CONFLICT} RETURNING id) SELECT id FROM m"
CTE_DELETE = "WITH m AS (DELETE FROM orders WHERE id = 2 RETURNING id) SELECT id FROM m"
COPY = "COPY orders (id, user_id, amount) FROM STDIN"


def _policy(kind: str) -> Any:
    return parse_policy(f"""
[[rules]]
id = "statement.require-approval"
level = "approval"
kinds = ["{kind}"]
tables = ["orders"]
""")


def _rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT id, amount FROM orders ORDER BY id").fetchall()


@pytest.fixture(params=["sync", "async"])
def drv(request: pytest.FixtureRequest):
    d = Driver(request.param)
    yield d
    d.close()


def _copy(drv: Driver, conn: Any) -> Any:
    async def acopy() -> None:
        async with conn.cursor().copy(COPY) as copy:
            await copy.write_row((100, 1001, 7))

    if drv.kind == "async":
        return acopy()
    with conn.cursor().copy(COPY) as copy:
        copy.write_row((100, 1001, 7))
    return None


# (kind named by the rule, the statement, rows after it ran)
SHAPES = [
    ("INSERT", MERGE_INSERT, [(1, 10.5), (2, 20), (101, 1)]),
    ("UPDATE", MERGE_ACTIONS.format(action="UPDATE SET amount = 5"), [(1, 5), (2, 20)]),
    ("DELETE", MERGE_ACTIONS.format(action="DELETE"), [(2, 20)]),
    ("INSERT", ON_CONFLICT, [(1, 99), (2, 20)]),
    ("UPDATE", ON_CONFLICT, [(1, 99), (2, 20)]),
    ("UPDATE", CTE_UPSERT, [(1, 99), (2, 20)]),
    ("DELETE", CTE_DELETE, [(1, 10.5)]),
    ("INSERT", COPY, [(1, 10.5), (2, 20), (100, 7)]),
]


@pytest.mark.parametrize("kind, sql, after", SHAPES, ids=[
    "merge-insert", "merge-update", "merge-delete", "on-conflict-insert",
    "on-conflict-update", "cte-upsert-update", "cte-delete", "copy-from"])
def test_write_by_effect_needs_approval_then_runs_once(drv, dsn, audit, kind, sql, after):
    policy = _policy(kind)
    conn = drv.connect(dsn, policy, audit)

    def run() -> Any:
        return _copy(drv, conn) if sql == COPY else conn.execute(sql)

    before = _rows(dsn)
    first = _request(drv, run)
    assert _rows(dsn) == before == [(1, 10.5), (2, 20)]
    _approve(policy, first.request_id)
    drv.run(run())
    assert _rows(dsn) == after
    again = _request(drv, run)  # used up: the identical statement asks again
    assert again.request_id != first.request_id
    assert _rows(dsn) == after


@pytest.mark.parametrize("kind, sql", [
    ("INSERT", MERGE_ACTIONS.format(action="DELETE")),
    ("UPDATE", "INSERT INTO orders (id, user_id, amount) VALUES (1, 1001, 1)"
               " ON CONFLICT DO NOTHING"),
    ("INSERT", "COPY orders TO STDOUT"),
], ids=["merge-delete-vs-insert", "on-conflict-nothing-vs-update", "copy-to-vs-insert"])
def test_other_effects_do_not_need_that_approval(drv, dsn, audit, kind, sql):
    """The kinds are an allow-list of effects to hold, not a net over every write."""
    conn = drv.connect(dsn, _policy(kind), audit)
    if sql.startswith("COPY"):
        async def acopy() -> bytes:
            async with conn.cursor().copy(sql) as copy:
                return b"".join([bytes(b) async for b in copy])

        def scopy() -> bytes:
            with conn.cursor().copy(sql) as copy:
                return b"".join(bytes(b) for b in copy)

        data = drv.run(acopy()) if drv.kind == "async" else scopy()
        assert data.startswith(b"1\t1001\t10.5")
        return
    drv.run(conn.execute(sql))
    expected = [(2, 20)] if "DELETE" in sql else [(1, 10.5), (2, 20)]
    assert _rows(dsn) == expected


def test_execute_of_a_session_prepared_merge_counts_its_actions(drv, dsn, audit):
    """EXECUTE of a MERGE prepared in an earlier string: the body's actions count."""
    policy = _policy("INSERT")
    conn = drv.connect(dsn, policy, audit)
    drv.run(conn.execute(f"PREPARE m AS {MERGE_INSERT}"))
    first = _request(drv, lambda: conn.execute("EXECUTE m"))
    assert _rows(dsn) == [(1, 10.5), (2, 20)]
    _approve(policy, first.request_id)
    drv.run(conn.execute("EXECUTE m"))
    assert _rows(dsn) == [(1, 10.5), (2, 20), (101, 1)]


BODY_SHAPES = [("DELETE", MERGE_ACTIONS.format(action="DELETE")), ("INSERT", MERGE_INSERT),
               ("UPDATE", ON_CONFLICT)]


@pytest.mark.parametrize("lang", ["sql", "plpgsql"])
@pytest.mark.parametrize("kind, body", BODY_SHAPES, ids=["merge-delete", "merge-insert",
                                                         "on-conflict-update"])
def test_function_body_row_kinds_count(drv, dsn, audit, kind, body, lang):
    """attack4 F1: a MERGE / upsert inside a function body (called directly or through
    another function) performs its row operations; the rule sees them."""
    src = (f"{body}; SELECT 1" if lang == "sql"
           else f"BEGIN {body}; RETURN 1; END")
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute(f"CREATE FUNCTION f_body() RETURNS int LANGUAGE {lang} AS $f${src}$f$")
        raw.execute("CREATE FUNCTION f_outer() RETURNS int LANGUAGE sql"
                    " AS $f$SELECT f_body()$f$")
    conn = drv.connect(dsn, _policy(kind), audit)
    for call in ("SELECT f_body()", "SELECT f_outer()"):
        _request(drv, lambda: conn.execute(call))
        assert _rows(dsn) == [(1, 10.5), (2, 20)]


# attack5 F5: the SQL of a PL/pgSQL assignment's *target* runs too (a subscript, a field).
TARGET_SHAPES = [
    "DECLARE a int[] := '{1}'; BEGIN a[(SELECT f_wipe())] := 1; RETURN 1; END",
    "DECLARE a int[] := '{1}'; BEGIN a[1] := 1; a[(SELECT f_wipe()) + 1] = 2; RETURN 1; END",
    "DECLARE a int[][] := '{{1}}'; BEGIN a[1][(SELECT f_wipe())] := 1; RETURN 1; END",
]


@pytest.mark.parametrize("src", TARGET_SHAPES, ids=["subscript", "second-assign", "2d"])
def test_function_body_assignment_target_counts(drv, dsn, audit, src):
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("CREATE FUNCTION f_wipe() RETURNS int LANGUAGE plpgsql AS"
                    " $f$BEGIN DELETE FROM orders WHERE id > 0; RETURN 1; END$f$")
        raw.execute(f"CREATE FUNCTION f_sub() RETURNS int LANGUAGE plpgsql AS $f${src}$f$")
    conn = drv.connect(dsn, _policy("DELETE"), audit)
    _request(drv, lambda: conn.execute("SELECT f_sub()"))
    assert _rows(dsn) == [(1, 10.5), (2, 20)]
