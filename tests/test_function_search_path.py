"""A function created with ``SET search_path = ...`` resolves its body's names with that path.

The server runs the body with the function's own search_path (pg_proc.proconfig), not the
caller's: ``INSERT INTO ledger`` in a function ``SET search_path = hidden`` writes
``hidden.ledger`` even when the session's path finds ``public.ledger``. The body analysis adds
the relations that path finds to what the body reads and writes, so rules naming them
(require-approval on ``hidden.ledger``), approval binding and masking see them; a name the path
cannot settle (``$user``) makes the body's effect unknown.

Shapes: SQL and PL/pgSQL bodies, a quoted schema, a path listing several schemas, a call
through another function, UPDATE as well as INSERT, ``$user``; a control whose path finds the
table the rule does not name. Masking: a body reading a masked column of a table that exists
only in the function's schema. Sync and async; effects read from a raw superuser connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.policy import parse_policy

SERVICE = Identity("etl", "service")
SECRET = "acct-secret-7"

SETUP = r"""
CREATE SCHEMA hidden;
CREATE TABLE hidden.ledger (id int, amount int);
INSERT INTO hidden.ledger VALUES (1, 10);
CREATE TABLE public.ledger (id int, amount int);
CREATE TABLE hidden.accounts (id int, code text);
INSERT INTO hidden.accounts VALUES (1, 'acct-secret-7');
CREATE FUNCTION led_sql() RETURNS int LANGUAGE sql SET search_path = hidden
  AS 'INSERT INTO ledger VALUES (2, 2) RETURNING id';
CREATE FUNCTION led_pl() RETURNS int LANGUAGE plpgsql SET search_path = hidden, public
  AS $f$ BEGIN INSERT INTO ledger VALUES (3, 3); RETURN 1; END $f$;
CREATE FUNCTION led_quoted() RETURNS int LANGUAGE sql SET search_path = "hidden"
  AS 'INSERT INTO ledger VALUES (4, 4) RETURNING id';
CREATE FUNCTION led_upd() RETURNS int LANGUAGE sql SET search_path = hidden
  AS 'UPDATE ledger SET amount = 0 WHERE id = 1 RETURNING id';
CREATE FUNCTION led_outer() RETURNS int LANGUAGE sql AS 'SELECT led_sql()';
-- "$user": the role's schema, if it has a ledger (public has one: it might be that one)
CREATE FUNCTION led_user() RETURNS int LANGUAGE sql SET search_path = "$user", hidden
  AS 'INSERT INTO ledger VALUES (5, 5) RETURNING id';
CREATE FUNCTION led_public() RETURNS int LANGUAGE sql SET search_path = public
  AS 'INSERT INTO ledger VALUES (6, 6) RETURNING id';
CREATE TABLE public.accounts (id int, code text);
INSERT INTO public.accounts VALUES (1, 'public-code');
CREATE FUNCTION acct_sql(i int) RETURNS text LANGUAGE sql STABLE SET search_path = hidden
  AS 'SELECT code FROM accounts WHERE id = i';
CREATE FUNCTION acct_pl(i int) RETURNS text LANGUAGE plpgsql STABLE SET search_path = hidden
  AS $f$ DECLARE c text; BEGIN SELECT code INTO c FROM accounts WHERE id = i; RETURN c; END $f$;
CREATE FUNCTION acct_rows() RETURNS TABLE (id int, code text) LANGUAGE sql STABLE
  SET search_path = hidden AS 'SELECT id, code FROM accounts';
"""

APPROVAL = parse_policy("""
version = 1
[[rules]]
id = "statement.require-approval"
level = "approval"
kinds = ["INSERT", "UPDATE"]
tables = ["hidden.ledger"]
""")
MASKED = parse_policy("""
version = 1
[[masking.columns]]
columns = ["hidden.accounts.code"]
strategy = "redact"
""")


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest):
    """``run(dsn, policy, sql)``: the rows, through a governed connection of that kind."""
    loop = asyncio.new_event_loop() if request.param == "async" else None

    def go(dsn: str, policy: Any, sql: str) -> list[Any]:
        if loop is None:
            with governed_db.connect(dsn, identity=SERVICE, policy=policy, audit=False,
                                     autocommit=True) as conn:
                return conn.execute(sql).fetchall()

        async def ago() -> list[Any]:
            async with await governed_db.AsyncConnection.connect(
                    dsn, identity=SERVICE, policy=policy, audit=False, autocommit=True) as conn:
                return await (await conn.execute(sql)).fetchall()

        return loop.run_until_complete(ago())

    yield go
    if loop is not None:
        loop.close()


@pytest.fixture
def db(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute(SETUP)
    return dsn


def _rows(dsn: str, table: str) -> list[Any]:
    with psycopg.connect(dsn, autocommit=True) as raw:
        return raw.execute(f"SELECT id, amount FROM {table} ORDER BY id").fetchall()


@pytest.mark.parametrize("fn", ["led_sql", "led_pl", "led_quoted", "led_upd", "led_outer",
                                "led_user"])
def test_body_writing_through_its_own_search_path_needs_the_approval(db, run, fn):
    with pytest.raises(errors.ApprovalRequired) as ei:
        run(db, APPROVAL, f"SELECT {fn}()")
    assert ei.value.rule_ids == ("statement.require-approval",)
    assert _rows(db, "hidden.ledger") == [(1, 10)]  # nothing written, nothing changed
    assert _rows(db, "public.ledger") == []


def test_body_whose_path_finds_another_table_is_not_asked_about(db, run):
    """Control: the path of led_public finds public.ledger, which the rule does not name."""
    assert len(run(db, APPROVAL, "SELECT led_public()")) == 1  # (its output: masked)
    assert _rows(db, "public.ledger") == [(6, 6)]
    assert _rows(db, "hidden.ledger") == [(1, 10)]


@pytest.mark.parametrize("sql", ["SELECT acct_sql(1) AS c", "SELECT acct_pl(1) AS c",
                                 "SELECT lower(acct_sql(1)) AS c",
                                 "SELECT code AS c FROM acct_rows()"])
def test_body_reading_a_masked_column_of_its_own_schema_is_masked(db, run, sql):
    got = run(db, MASKED, sql)
    assert len(got) == 1 and got[0][0] != SECRET and SECRET not in str(got)
    with psycopg.connect(db) as raw:  # the value is there: the function does return it
        assert raw.execute(sql).fetchall() == [(SECRET,)] or "lower" in sql
