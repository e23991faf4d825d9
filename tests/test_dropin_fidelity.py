"""Drop-in fidelity: what psycopg returns, governed_db returns, where nothing sensitive is reachable.

Each test is a root cause found by running psycopg's own suite governed (issue 14), checked
through the public API against a real PostgreSQL, sync and async (one scenario, run by a
driver that awaits where the async API returns awaitables). Where a fix touches masking, the
sensitive column next to it is checked to stay masked (fail closed), and effects on the server
are read back from a separate raw superuser connection.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import time
from typing import Any

import psycopg
import pytest
from psycopg.types.range import Range

import governed_db
from governed_db import Identity, acting_as
from governed_db.masking import REDACTED
from governed_db.policy import parse_policy

from .conftest import AGENT, MARKERS

# A service identity, the default profile in observe mode (the suite's own DDL runs), as the
# compatibility job runs psycopg's tests.
OBSERVE = parse_policy('version = 1\nname = "fidelity"\nmode = "observe"\n')
SERVICE = Identity("app", "service")
EMAIL_MASKED = "****@example.com"


class Driver:
    """Runs one scenario on the sync or the async API."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "async" else None

    def run(self, value: Any) -> Any:
        if self.loop is not None and inspect.isawaitable(value):
            return self.loop.run_until_complete(value)
        return value

    def connect(self, dsn: str, **kwargs: Any) -> Any:
        kwargs.setdefault("identity", SERVICE)
        kwargs.setdefault("policy", OBSERVE)
        cls = governed_db.AsyncConnection if self.kind == "async" else governed_db.Connection
        return self.run(cls.connect(dsn, **kwargs))

    def rows(self, conn: Any, query: Any, params: Any = None) -> list[Any]:
        cur = self.run(conn.execute(query, params))
        return list(self.run(cur.fetchall()))

    def one(self, conn: Any, query: Any, params: Any = None) -> Any:
        cur = self.run(conn.execute(query, params))
        return self.run(cur.fetchone())

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def drv(request: pytest.FixtureRequest):
    d = Driver(request.param)
    yield d
    d.close()


@pytest.fixture
def conn(drv: Driver, dsn: str, audit: Any):
    c = drv.connect(dsn, audit=audit, autocommit=True)
    yield c
    drv.run(c.close())


@pytest.fixture
def raw(dsn: str):
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


def _statements(audit: Any) -> list[dict[str, Any]]:
    audit.flush()
    return [r for r in audit.records if r["type"] == "statement"]


# -- 1. SELECT * on a relation the catalog snapshot does not know --------------------------------


def _create_temp(drv: Driver, conn: Any, raw: Any, name: str) -> None:
    drv.run(conn.execute(f"CREATE TEMP TABLE {name} (id int, note text, email text)"))
    drv.run(conn.execute(f"INSERT INTO {name} VALUES (1, 'hello', 'qem.x@example.com')"))


def _create_by_other(drv: Driver, conn: Any, raw: Any, name: str) -> None:
    raw.execute(f"CREATE TABLE {name} (id int, note text, email text)")
    raw.execute(f"INSERT INTO {name} VALUES (1, 'hello', 'qem.x@example.com')")


CREATORS = {"temp": _create_temp, "other-connection": _create_by_other}


@pytest.mark.parametrize("how", sorted(CREATORS))
@pytest.mark.parametrize("query", ["SELECT * FROM {t}", "SELECT id, note, email FROM {t}",
                                   "SELECT t.* FROM {t} t WHERE id = 1"])
def test_new_relation_after_snapshot_returns_its_values(drv, conn, raw, audit, how, query):
    """A table created after the connection took its snapshot (a TEMP table of this session,
    a table another connection created): the snapshot is reloaded before the rows are handed
    out, so plain columns come back as stored and a sensitive one masked by its name."""
    assert drv.one(conn, "SELECT 1") == (1,)  # the snapshot is taken
    CREATORS[how](drv, conn, raw, "fresh_tbl")
    rows = drv.rows(conn, query.format(t="fresh_tbl"))
    assert rows == [(1, "hello", EMAIL_MASKED)]
    rec = _statements(audit)[-1]
    assert rec["masked"] == {"email": "email:name:email"}
    # and again (from the reloaded snapshot, no further reload)
    assert drv.rows(conn, query.format(t="fresh_tbl")) == [(1, "hello", EMAIL_MASKED)]


def test_temp_table_shadowing_a_table_is_judged_as_itself(drv, conn, raw):
    """A TEMP table named like a public one is what the session's names resolve to; its
    snapshot is the session's own (another connection's `users` stays public.users)."""
    assert drv.one(conn, "SELECT count(*) FROM users") == (2,)
    drv.run(conn.execute("CREATE TEMP TABLE users (id int, email text, note text)"))
    drv.run(conn.execute("INSERT INTO users VALUES (7, 'qem.t@example.com', 'plain')"))
    assert drv.rows(conn, "SELECT * FROM users") == [(7, EMAIL_MASKED, "plain")]
    assert drv.rows(conn, "SELECT * FROM pg_temp.users") == [(7, EMAIL_MASKED, "plain")]
    other = drv.connect(conn.info.dsn)
    try:
        got = drv.rows(other, "SELECT id, email FROM users ORDER BY id")
        assert got == [(1001, "****@example.com"), (1002, "****@example.com")]
    finally:
        drv.run(other.close())


def test_unknown_relation_in_a_pipeline_runs_read_back_and_replanned(drv, conn, raw):
    """Inside a pipeline the snapshot cannot be reloaded between statements: a relation it
    does not know may run unseen code, so the identity settings are read back right behind
    the statement (mid-pipeline) and the statement runs; its rows are planned again once
    the pipeline ends: plain values as stored, the sensitive column masked by its name."""
    assert drv.one(conn, "SELECT 1") == (1,)
    _create_by_other(drv, conn, raw, "piped_tbl")
    if drv.kind == "sync":
        with conn.pipeline():
            cur = conn.execute("SELECT * FROM piped_tbl")
        rows = cur.fetchall()
    else:
        async def go():
            async with conn.pipeline():
                cur = await conn.execute("SELECT * FROM piped_tbl")
            return await cur.fetchall()
        rows = drv.run(go())
    assert rows == [(1, "hello", EMAIL_MASKED)]
    assert not conn.closed


@pytest.mark.parametrize("ends", ["sync", "commit", "fetch", "exit"])
def test_pipeline_error_is_raised_where_psycopg_raises_it(drv, dsn, audit, ends):
    """psycopg's pipeline tests: a statement on a relation that does not exist is read back
    behind (the snapshot does not know it), yet its error is raised where psycopg raises it
    (the next sync(), commit(), fetch or the pipeline's end), not by execute(); the
    statements after it are aborted as psycopg aborts them, and the connection goes on."""
    conn = drv.connect(dsn, audit=audit, autocommit=ends != "commit")

    async def scenario() -> list[str]:
        seen: list[str] = []

        async def step(value: Any) -> Any:
            return await value if inspect.isawaitable(value) else value

        pipeline = conn.pipeline()
        p = await step(pipeline.__aenter__() if drv.kind == "async" else pipeline.__enter__())
        try:
            cur = await step(conn.execute("SELECT 1 FROM nosuchtable"))
            seen.append("executed")
            try:
                if ends == "sync":
                    await step(p.sync())
                elif ends == "commit":
                    await step(conn.commit())
                elif ends == "fetch":
                    await step(cur.fetchone())
            except psycopg.errors.UndefinedTable:
                seen.append("raised")
        except BaseException as exc:
            if drv.kind == "async":
                await pipeline.__aexit__(type(exc), exc, None)
            else:
                pipeline.__exit__(type(exc), exc, None)
            raise
        try:
            if drv.kind == "async":
                await pipeline.__aexit__(None, None, None)
            else:
                pipeline.__exit__(None, None, None)
        except psycopg.errors.UndefinedTable:
            seen.append("raised at exit")
        if ends == "commit":
            await step(conn.rollback())
        return seen

    try:
        if drv.kind == "async":
            seen = drv.run(scenario())
        else:
            coro = scenario()
            try:
                coro.send(None)
            except StopIteration as stop:
                seen = stop.value
        assert seen == ["executed", "raised at exit" if ends == "exit" else "raised"]
        assert drv.one(conn, "SELECT 1") == (1,)
    finally:
        drv.run(conn.close())


def test_an_object_still_unknown_after_a_reload_is_not_reloaded_for_again(drv, conn, raw):
    """A result naming something the snapshot never holds (a sequence) asks for one reload,
    not one per statement (the hot path stays a cache hit)."""
    assert drv.one(conn, "SELECT 1") == (1,)
    gov = conn.governor
    drv.run(conn.execute("SELECT * FROM order_seq"))
    version = gov.catalog.version
    for _ in range(3):
        drv.run(conn.execute("SELECT * FROM order_seq"))
    assert gov.catalog.version == version


# -- 2. executemany(..., returning=True): every result set is planned as its statement ---------


def _em_table(drv: Driver, conn: Any) -> None:
    drv.run(conn.execute("CREATE TABLE em (id int PRIMARY KEY, email text)"))
    drv.run(conn.execute("SELECT 1"))  # (the snapshot now knows it: pipelines cannot reload)


EM_QUERY = "INSERT INTO em VALUES (%s, %s) RETURNING id, id * 10 AS x, email, lower(email) AS l"
EM_PARAMS = [(1, "qem.a@example.com"), (2, "qem.b@example.com"), (3, "qem.c@example.com")]
EM_EXPECTED = [[(i, i * 10, EMAIL_MASKED, REDACTED)] for i in (1, 2, 3)]


@pytest.mark.parametrize("via", ["results", "nextset", "pipeline"])
def test_executemany_returning_every_result_set(drv, conn, raw, via):
    _em_table(drv, conn)
    cur = conn.cursor()
    if via == "pipeline":
        if drv.kind == "sync":
            with conn.pipeline():
                cur.executemany(EM_QUERY, EM_PARAMS, returning=True)
        else:
            async def go():
                async with conn.pipeline():
                    await cur.executemany(EM_QUERY, EM_PARAMS, returning=True)
            drv.run(go())
    else:
        drv.run(cur.executemany(EM_QUERY, EM_PARAMS, returning=True))
    got = []
    if via in ("results", "pipeline"):
        if drv.kind == "sync":
            for c in cur.results():
                got.append(c.fetchall())
        else:
            async def collect():
                return [await c.fetchall() async for c in cur.results()]
            got = drv.run(collect())
    else:
        while True:
            got.append(drv.run(cur.fetchall()))
            if not cur.nextset():
                break
    assert got == EM_EXPECTED
    assert raw.execute("SELECT count(*) FROM em").fetchone() == (3,)


# -- 3. governance sets only what the identity's policy requires --------------------------------


def _settings(drv: Driver, conn: Any) -> tuple[str, str]:
    (ro,) = drv.one(conn, "SHOW default_transaction_read_only")
    (timeout,) = drv.one(conn, "SHOW statement_timeout")
    return ro, timeout


ROLLBACKS = ["method", "sql", "transaction-block"]


def _rollback(drv: Driver, conn: Any, how: str) -> None:
    if how == "method":
        drv.run(conn.execute("SELECT 1"))
        drv.run(conn.rollback())
    elif how == "sql":
        drv.run(conn.execute("SELECT 1"))
        drv.run(conn.execute("ROLLBACK"))
    else:
        class Boom(Exception):
            pass

        if drv.kind == "sync":
            with pytest.raises(Boom), conn.transaction():
                conn.execute("SELECT 1")
                raise Boom
        else:
            async def go():
                async with conn.transaction():
                    await conn.execute("SELECT 1")
                    raise Boom
            with pytest.raises(Boom):
                drv.run(go())


@pytest.mark.parametrize("how", ROLLBACKS)
def test_rollback_keeps_the_applications_own_settings(drv, dsn, audit, how):
    """A service identity requires neither READ ONLY nor a timeout: the application's own
    values survive rollbacks (they were re-sent as `off` / `'0'` after every rollback)."""
    conn = drv.connect(dsn, audit=audit)
    try:
        drv.run(conn.execute("SET statement_timeout = '7s'"))
        drv.run(conn.execute("SET default_transaction_read_only = on"))
        drv.run(conn.commit())
        for _ in range(2):
            _rollback(drv, conn, how)
            assert _settings(drv, conn) == ("on", "7s")
        drv.run(conn.rollback())
    finally:
        drv.run(conn.close())


def test_a_service_never_sends_settings_it_does_not_require(drv, dsn, audit, raw):
    """Nothing but the identity labels: a role whose default is READ ONLY stays READ ONLY
    under a service identity (it used to be switched off at the first statement)."""
    role = f"fidelity_ro_{drv.kind}"
    raw.execute(f"DROP ROLE IF EXISTS {role}")
    raw.execute(f"CREATE ROLE {role} LOGIN")
    raw.execute(f"GRANT SELECT ON orgs TO {role}")
    raw.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
    conn = drv.connect(dsn + f" user={role}", audit=audit, autocommit=True)
    try:
        assert drv.one(conn, "SELECT count(*) FROM orgs") == (2,)
        assert _settings(drv, conn) == ("on", "0")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            drv.run(conn.execute("CREATE TEMP TABLE x (a int)"))
    finally:
        drv.run(conn.close())


@pytest.mark.parametrize("how", ROLLBACKS)
def test_switching_identity_puts_the_sessions_own_values_back(drv, dsn, audit, raw, how):
    """An agent acting on the connection requires READ ONLY and its timeout (still applied
    after rollbacks, verified at the server); when the service acts again, the session's own
    values are back."""
    conn = drv.connect(dsn, audit=audit)
    try:
        drv.run(conn.execute("SET statement_timeout = '7s'"))
        drv.run(conn.commit())
        with acting_as(AGENT):
            drv.run(conn.execute("SELECT 1"))
            drv.run(conn.commit())
            _rollback(drv, conn, how)
            assert _settings(drv, conn) == ("on", "30s")
            drv.run(conn.commit())
        drv.run(conn.commit())
        assert _settings(drv, conn) == ("off", "7s")
        drv.run(conn.commit())
    finally:
        drv.run(conn.close())


def test_agent_stays_read_only_after_rollback_at_the_server(drv, dsn, audit, raw):
    conn = drv.connect(dsn, audit=audit, identity=AGENT, policy=None)
    try:
        for _ in range(2):
            drv.run(conn.execute("SELECT 1"))
            drv.run(conn.rollback())
            assert _settings(drv, conn) == ("on", "30s")
        # the server refuses a write the analyzer would not see (a function's body)
        raw.execute("CREATE FUNCTION fid_write() RETURNS int LANGUAGE plpgsql AS"
                    " $$BEGIN INSERT INTO t VALUES (99); RETURN 1; END$$")
        with pytest.raises(psycopg.Error):
            drv.run(conn.execute("SELECT fid_write()"))
        drv.run(conn.rollback())
    finally:
        drv.run(conn.close())
    assert raw.execute("SELECT count(*) FROM t WHERE a = 99").fetchone() == (0,)


# -- 4. server-side cursors: pgresult.get_value() ---------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_server_cursor_get_value(drv, conn, binary):
    drv.run(conn.set_autocommit(False)) if drv.kind == "async" else setattr(conn, "autocommit", False)
    cur = conn.cursor("fid_sc", binary=binary)
    drv.run(cur.execute("SELECT 42::int4 AS n, 'abc'::text AS s, email, ssn FROM users"
                        " WHERE id = 1001"))
    row = drv.run(cur.fetchone())
    assert row[:3] == (42, "abc", EMAIL_MASKED)
    assert "qsn" not in row[3]
    res = cur.pgresult
    assert res.get_value(0, 0) == (b"\x00\x00\x00*" if binary else b"42")
    assert res.get_value(0, 1) == b"abc"
    assert res.get_value(0, 2) == EMAIL_MASKED.encode()  # text type: masked, binary or not
    assert b"qsn" not in (res.get_value(0, 3) or b"")
    drv.run(cur.close())
    drv.run(conn.rollback())


# -- 5. no over-masking where nothing sensitive is reachable ----------------------------------


def test_range_constructor_of_a_user_range_type(drv, conn, raw):
    raw.execute("CREATE TYPE floatrange AS RANGE (subtype = float8, subtype_diff = float8mi)")
    drv.run(conn.execute("SELECT 1"))  # (a new snapshot: the type came after the connect)
    drv.run(conn.execute("CREATE TEMP TABLE fid_r (a int)"))  # DDL: reloads the snapshot
    for query in ("SELECT floatrange(1.0, 2.0)", "SELECT floatrange(1, 2, '[]') AS r",
                  "SELECT floatmultirange(floatrange(1, 2), floatrange(3, 4))",
                  "SELECT int4range(1, 5), numrange(1.5, 2.5)"):
        # exactly what psycopg returns (no adapter for the new type: its text)
        assert drv.rows(conn, query) == raw.execute(query).fetchall(), query
    assert drv.rows(conn, "SELECT int4range(1, 5)") == [(Range(1, 5),)]
    # what it builds from a sensitive column is masked (lineage goes through its arguments)
    (got,) = drv.one(conn, "SELECT int4range(length(ssn), 20) FROM users WHERE id = 1001")
    assert got is None or "qsn" not in str(got)


def test_function_named_like_a_constructor_is_still_user_code(drv, conn, raw):
    """By effect, not by name: an overload that is not the server's constructor makes the
    name user code again, and what it returns is masked."""
    raw.execute("CREATE TYPE floatrange AS RANGE (subtype = float8, subtype_diff = float8mi)")
    raw.execute("CREATE FUNCTION floatrange(text) RETURNS text LANGUAGE sql"
                " AS $$SELECT email FROM users WHERE id = 1001$$")
    drv.run(conn.execute("CREATE TEMP TABLE fid_r (a int)"))
    (got,) = drv.one(conn, "SELECT floatrange('x'::text)")
    assert got == REDACTED
    (got,) = drv.one(conn, "SELECT floatrange(1.0, 2.0)")
    assert got == REDACTED  # the name is user code: fail closed


@pytest.mark.parametrize("query,expected", [
    ("SELECT 1 AS a, 'x'::text AS b", [(1, "x")]),
    ("SELECT id, email FROM users WHERE id = 1001", [(1001, EMAIL_MASKED)]),
    ("SELECT id, note FROM orders ORDER BY id", [(1, "qnt gift"), (2, "qnt rush")]),
])
def test_sql_declared_cursor_read_through_a_named_cursor(drv, conn, query, expected):
    drv.run(conn.set_autocommit(False)) if drv.kind == "async" else setattr(conn, "autocommit", False)
    drv.run(conn.execute(f"DECLARE fid_c CURSOR FOR {query}"))
    cur = conn.cursor("fid_c")
    assert drv.run(cur.fetchall()) == expected
    drv.run(cur.close())
    drv.run(conn.rollback())


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_undeclared_cursor_name_is_refused_or_observed(drv, dsn, audit, mode):
    """A name the session never saw declared (or a cursor gone with its transaction, as in
    psycopg's test_no_hold): its query's effect is unknown, so reading it through a named
    cursor is refused when enforced (statement.affected-row-limit), nothing fetched; in
    observe mode the would-deny is recorded and the FETCH runs: the server's own answer
    (InvalidCursorName) comes back, as from psycopg."""
    policy = parse_policy(f'version = 1\nname = "fidelity"\nmode = "{mode}"\n')
    conn = drv.connect(dsn, audit=audit, policy=policy)
    try:
        cur = conn.cursor("fid_nope")
        if mode == "enforce":
            with pytest.raises(governed_db.errors.StatementDenied) as info:
                drv.run(cur.fetchall())
            assert info.value.rule_ids == ("statement.affected-row-limit",)
        else:
            with pytest.raises(psycopg.errors.InvalidCursorName):
                drv.run(cur.fetchall())
        drv.run(conn.rollback())
        drv.run(cur.close())
    finally:
        drv.run(conn.close())
    audit.flush()
    events = [r for r in audit.records if r["type"] == "denied_fetch"]
    assert len(events) == 1
    assert events[0]["rule"] == "statement.affected-row-limit"
    assert events[0].get("observe") is (True if mode == "observe" else None)


def test_cursor_gone_with_its_transaction_observed(drv, conn):
    """psycopg's test_no_hold: a cursor WITHOUT HOLD is gone after commit; observe mode
    lets the FETCH reach the server, which says so."""
    drv.run(conn.set_autocommit(False)) if drv.kind == "async" else setattr(conn, "autocommit", False)
    cur = conn.cursor("fid_gone")
    drv.run(cur.execute("SELECT generate_series(0, 2)"))
    assert drv.run(cur.fetchone()) == (0,)
    drv.run(conn.commit())
    with pytest.raises(psycopg.errors.InvalidCursorName):
        drv.run(cur.fetchone())
    drv.run(conn.rollback())
    drv.run(cur.close())


def test_markers_never_leave(drv, conn):
    """Guard for the class: a plain read of the sensitive table through the same paths."""
    rows = drv.rows(conn, "SELECT * FROM users")
    assert not any(m in repr(rows).lower() for m in MARKERS), rows


# -- 6. DO blocks judged by what their PL/pgSQL body does (an allow-list) -----------------------


def test_notice_of_a_do_block_that_reads_nothing_is_psycopgs(drv, conn):
    """psycopg's test_notice_handlers: the DO body is understood (RAISE of a literal), reads
    nothing, so its notice is the caller's own text and passes as sent."""
    got = []
    conn.add_notice_handler(lambda diag: got.append(diag.message_primary))
    drv.run(conn.execute("DO $$BEGIN RAISE NOTICE 'hello notice'; END$$ LANGUAGE plpgsql"))
    # a message the server built from the statement's own constants (psycopg's
    # test_diag_encoding): no relation, no user code, nothing opaque: passes as built
    drv.run(conn.execute("DO $$BEGIN RAISE NOTICE 'n=%', 41 + 1; END$$"))
    drv.run(conn.execute("DO $$BEGIN RAISE NOTICE 'hello %', chr(8364); END$$"))
    # ... with the value detectors applied, as to a result row of the same value
    drv.run(conn.execute("DO $$BEGIN RAISE NOTICE 'to %', 'qem.n' || chr(64) || 'example.com';"
                         " END$$"))
    assert got == ["hello notice", "n=42", "hello \u20ac", "to [email redacted]"]


@pytest.mark.parametrize("body", [
    # a relation read: judged by the allow-list as before (a computed line is redacted)
    "RAISE NOTICE 'n=%', (SELECT count(*) FROM orders)",
    # dynamic SQL, a user function: the values may come from anywhere
    "RAISE NOTICE 'n=%', 41 + 1; EXECUTE 'SELECT 1'",
    "RAISE NOTICE 'n=%', lower(archive_note())",
])
def test_notice_built_from_more_than_constants_is_judged_by_the_allow_list(drv, conn, raw,
                                                                            body):
    raw.execute("CREATE FUNCTION archive_note() RETURNS text LANGUAGE sql"
                " AS $$ SELECT 'N=' || count(*) FROM users $$")
    got = []
    conn.add_notice_handler(lambda diag: got.append(diag.message_primary))
    drv.run(conn.execute(f"DO $$BEGIN {body}; END$$"))
    assert got == ["<redacted>"]


def test_error_text_keeps_the_query_excerpt_of_the_callers_statement(drv, conn, raw):
    """psycopg's test_query_context: str(exc) carries libpq's LINE excerpt of the statement
    the caller sent (its own text), not of a query a function built."""
    query = "SELECT *\n  FROM wat"
    with pytest.raises(psycopg.errors.UndefinedTable) as info:
        drv.run(conn.execute(query))
    with pytest.raises(psycopg.errors.UndefinedTable) as expected:
        raw.execute(query)
    assert str(info.value) == str(expected.value)
    assert str(info.value).splitlines()[1] == "LINE 2:   FROM wat"
    assert info.value.diag.message_primary == 'relation "wat" does not exist'
    # a position in a function-built query: no excerpt (it is not the caller's statement)
    with pytest.raises(psycopg.errors.UndefinedTable) as info:
        drv.run(conn.execute("SELECT query_to_xml('SELECT * FROM wat2', true, true, '')"))
    assert str(info.value) == 'relation "<redacted>" does not exist'


@pytest.mark.parametrize("body", [
    "RAISE NOTICE '%', (SELECT email FROM users WHERE id = 1001)",
    "RAISE NOTICE 'x %', (SELECT ssn FROM users WHERE id = 1001)",
    "PERFORM 1; RAISE NOTICE '%', (SELECT string_agg(email, ',') FROM users)",
    "EXECUTE 'SELECT 1'; RAISE NOTICE '%', (SELECT email FROM users WHERE id = 1001)",
])
def test_notice_of_a_do_block_reading_sensitive_data_is_redacted(drv, conn, body):
    got = []
    conn.add_notice_handler(lambda diag: got.append(diag.message_primary))
    drv.run(conn.execute(f"DO $$BEGIN {body}; END$$"))
    assert len(got) == 1 and not any(m in got[0].lower() for m in MARKERS), got


@pytest.mark.parametrize("body,kinds,writes,reads,opaque", [
    ("BEGIN INSERT INTO t VALUES (1); END", {"DO", "INSERT"}, {"t"}, set(), False),
    ("DECLARE n int; BEGIN SELECT count(*) INTO n FROM users; IF n > 1 THEN"
     " UPDATE orders SET note = 'x' WHERE id = 1; END IF; END",
     {"DO", "UPDATE"}, {"orders"}, {"users"}, False),
    ("BEGIN FOR i IN 1..3 LOOP DELETE FROM t WHERE a = i; END LOOP; END",
     {"DO", "DELETE"}, {"t"}, set(), False),
    # not on the allow-list: opaque, as before
    ("BEGIN EXECUTE 'DELETE FROM t'; END", {"DO"}, set(), set(), True),
    ("DECLARE c refcursor; BEGIN OPEN c FOR SELECT 1; END", {"DO"}, set(), set(), True),
    ("BEGIN COMMIT; END", {"DO"}, set(), set(), True),
    ("BEGIN CALL archive_orders(); END", {"DO"}, set(), set(), True),
    ("BEGIN not plpgsql at all", {"DO"}, set(), set(), True),
])
def test_do_block_facts_are_what_its_body_does(body, kinds, writes, reads, opaque):
    from governed_db.analysis import analyze

    (st,) = analyze(f"DO $gdb$ {body} $gdb$").statements
    assert set(st.kinds) >= kinds and set(st.writes) == writes
    assert set(st.reads) >= reads
    assert st.opaque == opaque
    (other,) = analyze("DO LANGUAGE plperl 'print 1'").statements
    assert other.opaque


@pytest.mark.parametrize("body", ["BEGIN RAISE NOTICE 'hi'; END",
                                  "BEGIN EXECUTE 'DELETE FROM t'; END"])
def test_do_blocks_stay_denied_by_the_default_profile(drv, dsn, audit, raw, body):
    """Contract: the default profile denies DO blocks for every kind, understood or not."""
    conn = drv.connect(dsn, audit=audit, policy=None, autocommit=True)
    try:
        with pytest.raises(governed_db.errors.StatementDenied) as info:
            drv.run(conn.execute(f"DO $$ {body} $$"))
        assert "statement.disallow-do" in info.value.rule_ids
    finally:
        drv.run(conn.close())
    assert raw.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_table_created_just_before_a_pipeline(drv, conn):
    """psycopg's pipeline tests: DDL, then a pipeline using the new table. The snapshot is
    reloaded before the pipeline starts, so its statements are judged against it."""
    drv.run(conn.execute("CREATE TABLE before_pipe (id int, email text)"))
    if drv.kind == "sync":
        with conn.pipeline():
            conn.execute("INSERT INTO before_pipe VALUES (1, 'qem.p@example.com')")
            cur = conn.execute("SELECT * FROM before_pipe")
        rows = cur.fetchall()
    else:
        async def go():
            async with conn.pipeline():
                await conn.execute("INSERT INTO before_pipe VALUES (1, 'qem.p@example.com')")
                cur = await conn.execute("SELECT * FROM before_pipe")
            return await cur.fetchall()
        rows = drv.run(go())
    assert rows == [(1, EMAIL_MASKED)]


# -- set_config($1, $2, ...): judged by the values bound to it ------------------------------------

SETTINGS_CASES = [
    ("client_encoding", "utf8", None),
    ("client_encoding", "euc-jp", None),
    ("client_encoding", "latin9", None),
    ("client_encoding", "sjis", "session.client-encoding"),
    ("client_encoding", "SQL_ASCII", None),  # governed (test_sql_ascii)
    ("client_encoding", "utf8'); select ('x", "session.client-encoding"),
    ("default_transaction_isolation", "serializable", None),
    ("governed_db.identity.id", "someone-else", "session.disallow-security-settings"),
    ("GOVERNED_DB.identity.tenant", "other", "session.disallow-security-settings"),
]


def _outcome(drv: Driver, conn: Any, query: str, params: Any) -> Any:
    try:
        drv.run(conn.execute(query, params))
    except governed_db.errors.StatementDenied as exc:
        return exc.rule_ids
    return "ran"


@pytest.mark.parametrize("mode", ["observe", "enforce"])
@pytest.mark.parametrize("name, value, hard", SETTINGS_CASES)
def test_set_config_with_bound_parameters_is_judged_by_their_values(drv, dsn, audit, mode,
                                                                    name, value, hard):
    """psycopg's tests: ``set_config(%s, %s, false)``. The server reads ``$n`` as the bound
    value, so the statement is judged as if the value were written in: the same outcome as
    the constant form, in either mode; an encoding off the allow-list and the identity
    hand-off stay refused in observe mode too, and the setting keeps its value."""
    policy = parse_policy(f'version = 1\nname = "fidelity"\nmode = "{mode}"\n')
    conn = drv.connect(dsn, audit=audit, autocommit=True, policy=policy)
    try:
        show = "SELECT pg_catalog.current_setting(%s, true)"
        before = drv.one(conn, show, [name.lower()])
        bound = _outcome(drv, conn, "SELECT pg_catalog.set_config(%s, %s, false)",
                         [name, value])
        if hard is not None:
            assert bound[0] == hard  # (first: no policy lifts it; liftable rules follow)
            assert drv.one(conn, show, [name.lower()]) == before  # not sent
        if bound == "ran":
            assert hard is None
            drv.run(conn.execute(f"SELECT pg_catalog.set_config(%s, {_lit(before[0])}, false)",
                                 [name]))
        # the constant form, the value written in by the caller, decides the same way
        literal = _outcome(drv, conn, f"SELECT pg_catalog.set_config({_lit(name)},"
                                      f" {_lit(value)}, false)", None)
        assert literal == bound
        if name == "client_encoding" and bound == "ran":
            assert conn.info.parameter_status("client_encoding") == {
                "utf8": "UTF8", "euc-jp": "EUC_JP", "latin9": "LATIN9",
                "SQL_ASCII": "SQL_ASCII"}[value]
    finally:
        drv.run(conn.close())


def _lit(value: Any) -> str:
    return "NULL" if value is None else "'" + str(value).replace("'", "''") + "'"


@pytest.mark.parametrize("query, params", [
    ("SELECT set_config(%s, 'utf8', false)", ["client_encoding"]),          # name bound
    ("SELECT set_config(%s::text, %s, false)", ["client_encoding", "utf8"]),  # cast: not plain
    ("SELECT set_config(%s, %s, false)", ["client_encoding", None]),          # NULL
    ("SELECT set_config(%s, %s, false)", ["client_encoding", 8]),             # not text
    # PREPARE's $n are EXECUTE's parameters, not the bound ones (the server refuses the
    # bind): never judged as the bound values, so the prepared facts stay unknown
    ("PREPARE fid_p AS SELECT set_config(%s, %s, false)", ["client_encoding", "utf8"]),
])
def test_set_config_parameters_that_cannot_be_written_in_stay_refused(drv, conn, query, params):
    """Only a text parameter passed straight to set_config is written in; a cast, a NULL or
    a value of another type leaves the setting unknown: refused (fail closed)."""
    outcome = _outcome(drv, conn, query, params)
    if params[0] == "client_encoding" and len(params) == 1:
        assert outcome == "ran"  # the name is bound, the value a constant: judged, allowed
    else:
        assert outcome[0] == "session.client-encoding"


# -- 7. RESET ALL / DISCARD ALL alone (psycopg_pool reset functions) ----------------------------

_HAND_OFF = ("SELECT current_setting('governed_db.identity.id', true),"
             " current_setting('application_name')")


@pytest.mark.parametrize("stmt", ["RESET ALL", "DISCARD ALL"])
@pytest.mark.parametrize("autocommit", [True, False])
def test_reset_all_alone_is_followed_by_the_identity_again(drv, dsn, audit, raw, stmt,
                                                           autocommit):
    """psycopg_pool's test_reset_badstate: a reset function sending RESET ALL. Its effect is
    known (every setting to its default, the identity hand-off included): the session is
    synced again before the next statement, not closed."""
    if stmt == "DISCARD ALL" and not autocommit:
        pytest.skip("DISCARD ALL cannot run inside a transaction block")
    conn = drv.connect(dsn, audit=audit, autocommit=autocommit)
    try:
        drv.run(conn.execute("SET application_name = 'mine'"))
        drv.run(conn.execute(stmt))
        pid = conn.info.backend_pid
        assert drv.one(conn, _HAND_OFF) == ("app", "governed_db service:app")
        assert not conn.closed
        got = raw.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s",
                          [pid]).fetchone()
        assert got == ("governed_db service:app",)
    finally:
        drv.run(conn.close())


@pytest.mark.parametrize("text", ["RESET ALL; SELECT 1", "SELECT 1; RESET ALL"])
def test_reset_all_among_other_statements_still_closes_the_session(drv, dsn, audit, text):
    """Fail closed: statements sent with it ran without (or before the loss of) the hand-off
    unseen; the read-back finds the identity settings gone and closes the session."""
    conn = drv.connect(dsn, audit=audit, autocommit=True)
    try:
        with pytest.raises(governed_db.errors.StatementDenied) as info:
            drv.run(conn.execute(text))
            drv.run(conn.execute("SELECT 1"))
        assert info.value.rule_ids == ("session.verify-server-state",)
        assert conn.closed
    finally:
        drv.run(conn.close())


def test_same_set_config_text_is_judged_again_for_each_bound_value(drv, conn):
    """The answer for ``set_config(%s, %s, false)`` depends on the values: an allowed pair
    does not make the next, forbidden pair on the same text pass (no answer is reused by
    text alone); the setting keeps its value."""
    query = "SELECT pg_catalog.set_config(%s, %s, false)"
    for value in ("fid-a", "fid-b"):
        assert _outcome(drv, conn, query, ["application_name", value]) == "ran"
    assert _outcome(drv, conn, query, ["governed_db.identity.id", "root"])[0] == \
        "session.disallow-security-settings"
    assert _outcome(drv, conn, query, ["client_encoding", "sjis"])[0] == "session.client-encoding"
    assert drv.one(conn, "SELECT current_setting('governed_db.identity.id'),"
                         " current_setting('client_encoding')") == ("app", "UTF8")


def test_close_returns_with_the_connections_records_written(drv, dsn, audit):
    """close() returns once the connection's audit records, its close included, are written:
    nothing of the closed connection is still on its way through the writer thread
    (psycopg's test_leak counts objects right after close())."""
    for _ in range(3):
        conn = drv.connect(dsn, audit=audit, autocommit=True)
        drv.one(conn, "SELECT 1")
        drv.run(conn.close())
        kinds = [r["type"] for r in audit.records]  # what is written, not flushed here
        assert kinds[-3:] == ["statement", "close", "checkpoint"], kinds[-4:]
    written = len(audit.records)
    drv.run(conn.close())  # closing again writes nothing more
    assert len(audit.records) == written


def test_close_leaves_the_audit_writer_idle_and_holding_nothing(drv, dsn, tmp_path):
    """After close() the writer thread keeps nothing of the connection alive (its batch, last
    item and checkpoint are dropped before the flush is answered) and has nothing left to
    write: a checkpoint signing the flushed records goes out in the same write, so no timer
    checkpoint follows behind the caller's back (psycopg's test_leak / test_copy_*_leaks count
    every object right after close())."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from governed_db.audit import AuditLog

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, settings={"checkpoint_ms": 100},
                   signing_key=Ed25519PrivateKey.generate())
    try:
        for _ in range(3):
            conn = drv.connect(dsn, audit=log, autocommit=True)
            drv.one(conn, "SELECT 1")
            drv.run(conn.close())
            size = path.stat().st_size
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            assert [r["type"] for r in lines[-3:]] == ["statement", "close", "checkpoint"]
            assert lines[-1]["sig"] and lines[-1]["seq"] == len(lines)
            del lines
            gc.collect()
            held = [type(o).__name__ for o in gc.get_objects()
                    if type(o).__module__ == "governed_db.audit._log" and type(o) is not AuditLog
                    or type(o) is dict and o.get("chain") == log.chain and o is not vars(log)]
            assert held == []
            time.sleep(0.35)  # over three checkpoint periods: nothing is due, nothing is written
            assert path.stat().st_size == size
    finally:
        log.close()


def test_the_idle_audit_writer_holds_no_object_of_its_own(drv, dsn, tmp_path):
    """Waiting for the next record, the writer thread's frame holds no collectable object
    but the log itself (no batch list made ahead of the next get()): the object count after
    close() does not depend on whether the writer has got back to waiting yet."""
    import sys

    from governed_db.audit import AuditLog

    log = AuditLog(tmp_path / "audit.jsonl", settings={"checkpoint_ms": 100})
    try:
        conn = drv.connect(dsn, audit=log, autocommit=True)
        drv.one(conn, "SELECT 1")
        drv.run(conn.close())
        deadline = time.monotonic() + 5
        while True:  # the writer back in its get() (a C call: _loop is the innermost frame)
            frame = sys._current_frames()[log._thread.ident]
            if frame.f_code.co_name == "_loop" and "_queue.get(" in \
                    inspect.getframeinfo(frame).code_context[0]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.001)
        held = sorted(k for k, v in frame.f_locals.items() if gc.is_tracked(v) and k != "self")
        del frame
        assert held == []
    finally:
        log.close()


@pytest.mark.parametrize("how", ["kwargs", "conninfo", "none", "spoof"])
def test_the_applications_own_application_name_is_kept(drv, dsn, audit, raw, how):
    """application_name is not a setting any policy requires: the name the application gives
    (a pool's kwargs, the conninfo) stays, for every identity acting on the connection, and
    the identity reaches the server through governed_db.identity. A session without a name
    of its own shows the identity in pg_stat_activity (psycopg_pool's
    test_get_config_rotates_connections); a name in governance's own form that is not the
    acting identity's is replaced."""
    kwargs: dict[str, Any] = {"application_name": "app-1"} if how == "kwargs" else {}
    if how == "spoof":
        kwargs = {"application_name": "governed_db human:alice"}
    conninfo = dsn + " application_name=app-1" if how == "conninfo" else dsn
    conn = drv.connect(conninfo, audit=audit, autocommit=True, **kwargs)
    other = Identity("helper", "human")
    expected = "app-1" if how in ("kwargs", "conninfo") else None
    try:
        query = ("SELECT current_setting('application_name'),"
                 " current_setting('governed_db.identity')")
        for ident in (SERVICE, other, SERVICE):
            with acting_as(ident):
                name, label = drv.one(conn, query)
            assert label == ident.label
            assert name == (expected or "governed_db " + ident.label)
            seen = raw.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s",
                               [conn.info.backend_pid]).fetchone()
            assert seen == (name,)
    finally:
        drv.run(conn.close())
