"""executemany is judged once; what an execution changes in the session is read back before the
next one is sent (attack3 A1, A1b).

psycopg converts an executemany() query once and only dumps the later parameter sets, so the
gate judges the text for the session as it was before the first execution. When that text may
run code the analyzer does not see (a PL/pgSQL function with dynamic SQL, a trigger), an
execution can change how the server reads the next one:

* standard_conforming_strings turned off: ``'\\'`` no longer ends a string, and a masked column
  or a DELETE the analyzer read as a comment runs (``session.standard-conforming-strings``);
* search_path changed: the same names resolve to a shadow view over a masked column
  (``session.verify-server-state``);
* the row-level security hand-off changed: the session is closed.

Classes, several shapes each: a dynamic SET in a function, set_config with a computed name, the
change made by a trigger; cursor kinds that send the text again each time (prepare_threshold
None, ClientCursor) and pipeline mode; sync and async. Effects are read from a separate raw
superuser connection.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.policy import parse_policy

SERVICE = Identity("etl", "service")
SCS_RULE = ("session.standard-conforming-strings",)
STATE_RULE = ("session.verify-server-state",)
SSN = "qsn-111-22-3333"  # users.ssn of id 1001 (masked for every identity by default)
# Without a row limit executemany runs in psycopg's implicit pipeline (no savepoint per
# execution), and an explicit pipeline may call functions.
POLICIES = {"default": None, "nolimit": parse_policy(
    'version = 1\n[[rules]]\nid = "statement.affected-row-limit"\nlevel = "disabled"\n'
    '[[rules]]\nid = "statement.disallow-full-table-write"\nlevel = "disabled"\n')}

SETUP = r"""
CREATE TABLE hits (n serial PRIMARY KEY, what text);
CREATE FUNCTION scs_dyn() RETURNS int LANGUAGE plpgsql AS $f$
  BEGIN INSERT INTO hits (what) VALUES ('scs_dyn');
        EXECUTE 'SET standard_conforming_strings = ' || 'off'; RETURN 1; END $f$;
CREATE FUNCTION scs_cfg() RETURNS int LANGUAGE plpgsql AS $f$
  DECLARE k text := 'standard_conforming' || '_strings';
  BEGIN INSERT INTO hits (what) VALUES ('scs_cfg');
        EXECUTE format('SELECT pg_catalog.set_config(%L, %L, false)', k, 'off'); RETURN 1; END $f$;
CREATE SCHEMA shadow;
CREATE VIEW shadow.orders AS SELECT id - 1000 AS id, ssn AS note FROM public.users;
CREATE FUNCTION sp_dyn() RETURNS int LANGUAGE plpgsql AS $f$
  BEGIN INSERT INTO hits (what) VALUES ('sp_dyn');
        EXECUTE 'SET search_path = ' || 'shadow, public'; RETURN 1; END $f$;
CREATE FUNCTION sp_cfg() RETURNS int LANGUAGE plpgsql AS $f$
  DECLARE k text := 'search' || '_path';
  BEGIN INSERT INTO hits (what) VALUES ('sp_cfg');
        EXECUTE format('SELECT pg_catalog.set_config(%L, %L, false)', k, 'shadow, public');
        RETURN 1; END $f$;
CREATE TABLE sp_log (id int);
CREATE FUNCTION sp_trg() RETURNS trigger LANGUAGE plpgsql AS $f$
  BEGIN INSERT INTO hits (what) VALUES ('sp_trg');
        EXECUTE 'SET search_path = ' || 'shadow, public'; RETURN NEW; END $f$;
CREATE TRIGGER sp_trg BEFORE INSERT ON sp_log FOR EACH ROW EXECUTE FUNCTION sp_trg();
CREATE FUNCTION tenant_dyn() RETURNS int LANGUAGE plpgsql AS $f$
  BEGIN INSERT INTO hits (what) VALUES ('tenant_dyn');
        EXECUTE 'SET governed_db.identity.' || 'tenant = ' || quote_literal('other'); RETURN 1;
  END $f$;
"""

# A backslash in a plain string: with scs on, w is the literal 1 (the rest is a comment);
# with it off, the string runs to the next quote and w is the masked column.
READ = ("WITH s AS (SELECT {fn}() AS x) SELECT '\\' AS v, 1 -- ' AS v,"
        " (SELECT string_agg(ssn, ',') FROM users)\n AS w FROM s WHERE %s = 1")
# The same trick hiding a DELETE from the analyzer.
WRITE = ("WITH s AS (SELECT {fn}() AS x), a AS (SELECT '\\' AS v) -- ' AS v),"
         " b AS (DELETE FROM orders WHERE id <= 1 RETURNING 1)\nSELECT x FROM s WHERE %s = 1")


class Driver:
    """One scenario on the sync or the async API; ``how``: which cursor / mode sends it."""

    def __init__(self, kind: str, how: str, policy: str = "default") -> None:
        self.kind, self.how, self.policy = kind, how, POLICIES[policy]
        self.loop = asyncio.new_event_loop() if kind == "async" else None
        self.conns: list[Any] = []

    def run(self, value: Any) -> Any:
        if self.loop is not None and inspect.isawaitable(value):
            return self.loop.run_until_complete(value)
        return value

    def connect(self, dsn: str) -> Any:
        cls = governed_db.AsyncConnection if self.kind == "async" else governed_db.Connection
        conn = self.run(cls.connect(dsn, identity=SERVICE, policy=self.policy, audit=False,
                                    autocommit=True))
        conn.prepare_threshold = None  # the text is parsed again at every execution
        self.conns.append(conn)
        return conn

    def _cursor(self, conn: Any) -> Any:
        if self.how == "client":
            cls = governed_db.AsyncClientCursor if self.kind == "async" \
                else governed_db.ClientCursor
            return cls(conn)
        return conn.cursor()

    def executemany(self, conn: Any, query: str, seq: Any) -> list[Any]:
        cur = self._cursor(conn)

        async def amany() -> list[Any]:
            if self.how == "pipeline":
                async with conn.pipeline():
                    await cur.executemany(query, seq, returning=True)
            else:
                await cur.executemany(query, seq, returning=True)
            out = []
            while True:
                out.extend(await cur.fetchall())
                if not cur.nextset():
                    return out

        if self.kind == "async":
            return self.run(amany())
        if self.how == "pipeline":
            with conn.pipeline():
                cur.executemany(query, seq, returning=True)
        else:
            cur.executemany(query, seq, returning=True)
        out = []
        while True:
            out.extend(cur.fetchall())
            if not cur.nextset():
                return out

    def execute(self, conn: Any, query: str, params: Any = None) -> list[Any]:
        async def aexec() -> list[Any]:
            return await (await conn.execute(query, params)).fetchall()

        if self.kind == "async":
            return self.run(aexec())
        return conn.execute(query, params).fetchall()

    def close(self) -> None:
        for conn in self.conns:
            self.run(conn.close())
        if self.loop is not None:
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# (cursor kind, policy): a server-side-binding cursor and ClientCursor, each serial (row limit:
# a savepoint per execution) and in the implicit pipeline; an explicit pipeline.
HOWS = [("cursor", "default"), ("client", "default"), ("cursor", "nolimit"),
        ("client", "nolimit"), ("pipeline", "nolimit")]


@pytest.fixture(params=HOWS, ids=["-".join(h) for h in HOWS])
def drv(request: pytest.FixtureRequest, kind: str):
    d = Driver(kind, *request.param)
    yield d
    d.close()


@pytest.fixture
def db(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute(SETUP)
    return dsn


def _raw(dsn: str, query: str) -> list[Any]:
    with psycopg.connect(dsn, autocommit=True) as raw:
        return raw.execute(query).fetchall()


def _hits(dsn: str) -> list[str]:
    return [r[0] for r in _raw(dsn, "SELECT what FROM hits ORDER BY n")]


@pytest.mark.parametrize("fn", ["scs_dyn", "scs_cfg"])
def test_scs_turned_off_by_an_execution_stops_the_next_read(db, drv, fn):
    conn = drv.connect(db)
    with pytest.raises(errors.StatementDenied) as ei:
        drv.executemany(conn, READ.format(fn=fn), [(1,), (1,), (1,)])
    assert ei.value.rule_ids == SCS_RULE
    assert SSN not in str(ei.value)
    assert _hits(db) == [fn]  # execution 1 ran; the text was not sent again
    # What the server holds now was read back: the text is refused on its own too.
    with pytest.raises(errors.StatementDenied) as ei2:
        drv.execute(conn, READ.format(fn="pg_backend_pid").replace("%s", "1"))
    assert ei2.value.rule_ids == SCS_RULE


@pytest.mark.parametrize("fn", ["scs_dyn", "scs_cfg"])
def test_scs_turned_off_by_an_execution_stops_a_hidden_delete(db, drv, fn):
    conn = drv.connect(db)
    before = _raw(db, "SELECT id FROM orders ORDER BY id")
    with pytest.raises(errors.StatementDenied) as ei:
        drv.executemany(conn, WRITE.format(fn=fn), [(1,), (1,)])
    assert ei.value.rule_ids == SCS_RULE
    assert _raw(db, "SELECT id FROM orders ORDER BY id") == before == [(1,), (2,)]
    assert _hits(db) == [fn]


def test_scs_off_text_that_lexes_the_same_runs_every_execution(db, drv):
    """Only what may lex otherwise is refused: executions whose text has no backslash in a
    plain string keep running after the function turned the setting off."""
    conn = drv.connect(db)
    rows = drv.executemany(conn, "SELECT scs_dyn() AS x, %s::int AS n", [(1,), (2,), (3,)])
    assert [r[1] for r in rows] == [1, 2, 3]  # (a user function's output: masked)
    assert _hits(db) == ["scs_dyn"] * 3


SP_READS = {
    "sp_dyn": ("SELECT sp_dyn() AS f, id, note FROM orders WHERE id = %s", [(1,), (1,)]),
    "sp_cfg": ("SELECT sp_cfg() AS f, id, note FROM orders WHERE id = %s", [(1,), (1,)]),
    # the trigger of the written table changes it; RETURNING reads through the names
    "sp_trg": ("INSERT INTO sp_log VALUES (%s)"
               " RETURNING (SELECT lower(note) FROM orders WHERE id = 1)",
               [(1,), (2,)]),
}


@pytest.mark.parametrize("shape", list(SP_READS))
def test_search_path_changed_by_an_execution_stops_the_next(db, drv, shape):
    conn = drv.connect(db)
    query, seq = SP_READS[shape]
    with pytest.raises(errors.StatementDenied) as ei:
        drv.executemany(conn, query, seq)
    assert ei.value.rule_ids == STATE_RULE
    assert "search path" in str(ei.value) and SSN not in str(ei.value)
    assert _hits(db) == [shape]  # the second execution was not sent
    assert not conn.closed
    # The next statement is judged with the path the server has now: the shadow view's note
    # is users.ssn, masked (also where only the names say so: lower() has no provenance).
    got = drv.execute(conn, "SELECT lower(note) FROM orders WHERE id = %s", (1,))
    assert got and got[0][0] not in (SSN, SSN.lower())
    assert drv.execute(conn, "SHOW search_path") == [("shadow, public",)]


def test_search_path_changed_by_a_statement_resolves_the_next_through_it(db, kind):
    """Single statements: a function's dynamic SET search_path is read back after it, and the
    next statement's names resolve through the new path (lineage without provenance)."""
    d = Driver(kind, "cursor")
    try:
        conn = d.connect(db)
        d.execute(conn, "SELECT sp_dyn()")
        assert d.execute(conn, "SHOW search_path") == [("shadow, public",)]
        got = d.execute(conn, "SELECT lower(note) || '' FROM orders WHERE id = %s", (1,))
        assert got and got[0][0] not in (SSN, SSN.lower())
        assert _raw(db, "SELECT lower(ssn) FROM users WHERE id = 1001") == [(SSN.lower(),)]
    finally:
        d.close()


def test_identity_hand_off_changed_by_an_execution_closes_the_session(db, drv):
    conn = drv.connect(db)
    with pytest.raises(errors.StatementDenied) as ei:
        drv.executemany(conn, "SELECT tenant_dyn() AS t, %s::int AS n", [(1,), (2,)])
    assert ei.value.rule_ids == STATE_RULE
    assert conn.closed
    # Serial (row limit): execution 1 committed on its own. In a pipeline it was still in the
    # pipeline's implicit transaction, rolled back with the session. Execution 2 never ran.
    assert _hits(db) == (["tenant_dyn"] if drv.policy is None else [])
